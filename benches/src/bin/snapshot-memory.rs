//! Where a snapshot's memory goes (issue 19): live heap bytes after each stage of compiling a
//! config, and the peak while a second compile runs beside the first snapshot, as a reload does.
//!
//! Bytes are counted by a global allocator that wraps the system one, so what an allocator keeps
//! cached (mimalloc's freed pages, which decide the gateway's RSS) does not blur what the
//! gateway itself holds. `benches/harness/reload_memory.py` measures the RSS of the real process.
//!
//! ```sh
//! python3 benches/harness/reload_memory.py --routes 100000 --reloads 0 --keep-config /tmp/scale.yaml
//! cargo run --release -p fenfa-benches --bin snapshot-memory -- /tmp/scale.yaml
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use fenfa_gateway::compile::{compile, CompileEnv, Runtime};
use fenfa_gateway::config::check::{plan, SystemResolver};
use fenfa_gateway::metrics::Metrics;
use fenfa_gateway::upstream::health::HealthRegistry;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Relaxed);
            grew(new_size);
        }
        p
    }
}

fn grew(n: usize) {
    let now = LIVE.fetch_add(n, Relaxed) + n;
    PEAK.fetch_max(now, Relaxed);
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn mib(b: usize) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// Live bytes now, and resets the peak to them.
fn mark() -> usize {
    let now = LIVE.load(Relaxed);
    PEAK.store(now, Relaxed);
    now
}

fn row(what: &str, bytes: usize) {
    println!("| {what} | {:.1} |", mib(bytes));
}

/// Two rows: what a stage left live since `before`, and its peak above `before`.
fn stage(what: &str, doing: &str, above: &str, before: usize) {
    let (live, peak) = (LIVE.load(Relaxed) - before, PEAK.load(Relaxed) - before);
    row(what, live);
    row(&format!("  peak of {doing}, above {above}"), peak);
}

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: snapshot-memory CONFIG.yaml");
    let plugins = fenfa_plugins::builtin();
    let health = HealthRegistry::default();
    let metrics = Metrics::default();
    let env = CompileEnv {
        plugins: &plugins,
        health: &health,
        metrics: &metrics,
    };
    let load = || -> Runtime {
        let text = std::fs::read_to_string(&path).expect("read the config");
        let config = fenfa_gateway::config::parse(&text).expect("parse the config");
        compile(&config, &env).expect("compile the config")
    };

    println!("| stage | MiB |\n|---|---:|");
    let base = mark();
    let text = std::fs::read_to_string(&path).expect("read the config");
    row("config text", LIVE.load(Relaxed) - base);
    let before = mark();
    let config = fenfa_gateway::config::parse(&text).expect("parse the config");
    stage(
        "parsed config (held while compiling)",
        "parsing",
        "the text",
        before,
    );
    let before = mark();
    let p = plan(&config, &plugins, &SystemResolver).expect("check the config");
    row("checked plan", LIVE.load(Relaxed) - before);
    drop(p);
    let before = mark();
    let first = compile(&config, &env).expect("compile the config");
    let route_metrics = metrics.route_count();
    let what = "compiled snapshot, with route metrics";
    stage(what, "compiling", "the parsed config", before);
    drop(config);
    drop(text);
    let steady = LIVE.load(Relaxed) - base;
    row("**steady: snapshot + route metrics**", steady);

    let before = mark();
    let second = load();
    let reload_peak = PEAK.load(Relaxed) - base;
    row(
        "second snapshot beside the first (route metrics reused)",
        LIVE.load(Relaxed) - before,
    );
    row("**reload peak**", reload_peak);
    println!(
        "\nreload peak / steady = {:.2}× ({route_metrics} routes with metrics)",
        reload_peak as f64 / steady as f64
    );
    drop(first);
    println!("\n| after the reload | MiB |\n|---|---:|");
    row(
        "live once the first snapshot is freed",
        LIVE.load(Relaxed) - base,
    );
    let mut last = second;
    for _ in 0..3 {
        let next = load();
        drop(std::mem::replace(&mut last, next));
    }
    row("live after three more reloads", LIVE.load(Relaxed) - base);
    breakdown(last);
}

/// What the parts of a snapshot hold: each part is dropped in turn and the bytes it freed shown.
fn breakdown(mut rt: Runtime) {
    println!("\n| part of one snapshot | MiB |\n|---|---:|");
    let before = LIVE.load(Relaxed);
    let router = std::mem::replace(
        &mut rt.router,
        fenfa_gateway::router::RouterBuilder::new().build(),
    );
    drop(router);
    row("router (tree and its entries)", before - LIVE.load(Relaxed));
    let before = LIVE.load(Relaxed);
    rt.routes = Vec::new();
    row(
        "routes (names, chains, rewrites)",
        before - LIVE.load(Relaxed),
    );
    let before = LIVE.load(Relaxed);
    drop(rt);
    row(
        "services, certificates, the rest",
        before - LIVE.load(Relaxed),
    );
}
