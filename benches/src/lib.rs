//! Fenfa's benchmarks: criterion micro-benchmarks (`benches/`) and the binaries the loopback load
//! harness (`run.sh`, see `BENCHMARKS.md`) compares the gateway against.
//!
//! - `bare-pingora`: the framework's floor — a pingora proxy that forwards everything to one
//!   upstream with no routing, no plugins, no metrics.
