//! The plugin contract, re-exported from `fenfa-plugin-api` (where it is defined and documented)
//! so that the built-in plugins keep their `crate::contract::…` paths.
pub use fenfa_plugin_api::contract::*;
