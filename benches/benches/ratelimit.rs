//! Cost of one rate-limit check: the GCRA store alone, and the whole `rate-limit` request phase,
//! with one hot key and with keys spread over 1M distinct keys (most of the 8 MiB table, which
//! does not fit in cache: the realistic case for per-user and per-IP limits).
//!
//! Beside them, `governor`'s keyed limiter on the same keys (why Fenfa does not use it:
//! BENCHMARKS.md, "The crates the design named").
//!
//! Run: `cargo bench -p fenfa-benches --bench ratelimit -- --warm-up-time 1 --measurement-time 3`

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use fenfa_plugins::contract::{Flow, Plugin, PluginFactory, RequestCtx, RequestView};
use fenfa_plugins::gcra::{Clock, GcraStore, ManualClock, Quota, DEFAULT_CAPACITY};
use fenfa_plugins::rate_limit::RateLimitFactory;
use http::{HeaderMap, Method};

const SPREADS: [u64; 2] = [1, 1_000_000];

/// The `n`-th key of a spread of `keys`: a multiplicative step visits all of them in a scattered
/// order (the multiplier is prime to 10⁶).
fn nth(i: u64, keys: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9) % keys
}

/// The store alone: hash the key, then acquire. Time is passed in, one µs per check, and the
/// quota is one request per µs, so every check is allowed and writes (the slower path).
fn store(c: &mut Criterion) {
    let mut g = c.benchmark_group("gcra_store_acquire");
    let store = GcraStore::new(DEFAULT_CAPACITY);
    let quota = Quota::new(1_000_000, Duration::from_secs(1), 0).expect("quota");
    // Time must only move forward, across criterion's repeated calls of the routine too.
    let mut i: u64 = 0;
    for keys in SPREADS {
        g.bench_with_input(BenchmarkId::new("keys", keys), &keys, |b, &keys| {
            b.iter(|| {
                i += 1;
                let k = store.key(nth(i, keys));
                black_box(store.acquire(k, &quota, i).allowed)
            })
        });
    }
    g.finish();
    c.bench_function("monotonic_clock_now", |b| {
        let clock = Clock::monotonic();
        b.iter(|| black_box(clock.now_us()))
    });
}

fn run(p: &dyn Plugin, ctx: &mut RequestCtx, headers: &HeaderMap) -> bool {
    let req = RequestView {
        method: &Method::GET,
        path: "/",
        query: None,
        headers,
        client_ip: ctx.client_ip,
        tls: false,
    };
    matches!(p.request(&req, ctx), Flow::Continue)
}

/// The whole request phase of a configured plugin (key hashing, store, `ctx.vars` stash), keyed
/// by client IP, with one limit and with two (IP + service-wide cap). A manual clock moves 1 µs
/// per request and the limits allow one request per µs, so every request is allowed.
fn plugin_allowed(c: &mut Criterion) {
    let mut g = c.benchmark_group("rate_limit_request_allowed");
    let clock = ManualClock::new();
    let store = GcraStore::with_clock(DEFAULT_CAPACITY, clock.clone().into());
    let factory = RateLimitFactory::with_store(Arc::new(store));
    let one = factory
        .build(&serde_json::json!({"limits": [
            {"key": "ip", "rate": 1000000, "per": "1s"}
        ]}))
        .expect("config");
    let two = factory
        .build(&serde_json::json!({"limits": [
            {"key": "ip", "rate": 1000000, "per": "1s"},
            {"key": "service", "rate": 1000000, "per": "1s"}
        ]}))
        .expect("config");
    let headers = HeaderMap::new();
    for (name, p) in [("1_limit", &one), ("2_limits", &two)] {
        for keys in SPREADS {
            let mut ctx = RequestCtx {
                service: Arc::from("svc"),
                route: Arc::from("route"),
                ..RequestCtx::default()
            };
            g.bench_with_input(BenchmarkId::new(name, keys), &keys, |b, &keys| {
                let mut i: u64 = 0;
                b.iter(|| {
                    i += 1;
                    clock.advance(Duration::from_micros(1));
                    let n = nth(i, keys) as u32;
                    ctx.client_ip = IpAddr::V4(Ipv4Addr::from(0x0A00_0000 | n));
                    black_box(run(&**p, &mut ctx, &headers))
                })
            });
        }
    }
    g.finish();
}

/// The 429 path on the real monotonic clock: one caller far over its limit.
fn plugin_denied(c: &mut Criterion) {
    let factory = RateLimitFactory::with_store(Arc::new(GcraStore::new(DEFAULT_CAPACITY)));
    let p = factory
        .build(&serde_json::json!({"limits": [{"key": "ip", "rate": 1, "per": "1h"}]}))
        .expect("config");
    let headers = HeaderMap::new();
    let mut ctx = RequestCtx {
        service: Arc::from("svc"),
        route: Arc::from("route"),
        ..RequestCtx::default()
    };
    c.bench_function("rate_limit_request_denied", |b| {
        b.iter(|| black_box(run(&*p, &mut ctx, &headers)))
    });
}

/// Resident memory of this process, in bytes (Linux).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// `governor`'s keyed limiter (the crate the design named), on the same keys and the same
/// quota as [`store`]: its default DashMap state store, time from its fake clock moved 1 µs per
/// check (`governor_fake_clock_advance` is that move alone, to subtract). Before measuring, it
/// prints what 1M distinct keys cost it in memory against the fixed table.
fn governor_keyed(c: &mut Criterion) {
    use governor::clock::FakeRelativeClock;
    use std::num::NonZeroU32;
    let quota = governor::Quota::per_second(NonZeroU32::new(1_000_000).expect("non-zero"));

    let before = rss_bytes();
    let clock = FakeRelativeClock::default();
    let filled = governor::RateLimiter::dashmap_with_clock(quota, clock.clone());
    for k in 0..1_000_000u64 {
        clock.advance(Duration::from_micros(1));
        let _ = filled.check_key(&k);
    }
    let governor_bytes = rss_bytes().saturating_sub(before);
    let before = rss_bytes();
    let table = GcraStore::new(DEFAULT_CAPACITY);
    let q = Quota::new(1_000_000, Duration::from_secs(1), 0).expect("quota");
    for k in 0..1_000_000u64 {
        table.acquire(table.key(k), &q, k);
    }
    let table_bytes = rss_bytes().saturating_sub(before);
    eprintln!(
        "memory after 1,000,000 distinct keys: governor (DashMap) {} entries, +{:.1} MiB RSS; \
         Fenfa's GcraStore +{:.1} MiB RSS (fixed {} MiB table)",
        filled.len(),
        governor_bytes as f64 / (1 << 20) as f64,
        table_bytes as f64 / (1 << 20) as f64,
        table.memory_bytes() >> 20
    );
    drop(filled);

    let mut g = c.benchmark_group("governor_keyed_check");
    let clock = FakeRelativeClock::default();
    let limiter = governor::RateLimiter::dashmap_with_clock(quota, clock.clone());
    let mut i: u64 = 0;
    for keys in SPREADS {
        g.bench_with_input(BenchmarkId::new("keys", keys), &keys, |b, &keys| {
            b.iter(|| {
                i += 1;
                clock.advance(Duration::from_micros(1));
                black_box(limiter.check_key(&nth(i, keys)).is_ok())
            })
        });
    }
    g.finish();
    c.bench_function("governor_fake_clock_advance", |b| {
        let clock = FakeRelativeClock::default();
        b.iter(|| clock.advance(black_box(Duration::from_micros(1))))
    });
}

criterion_group!(
    benches,
    store,
    governor_keyed,
    plugin_allowed,
    plugin_denied
);
criterion_main!(benches);
