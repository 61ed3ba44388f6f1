//! Cost of the audit trail per request, on the proxy thread and on the writer thread:
//!
//! - `audit/encode`: masking the query and serialising one record into a fresh buffer.
//! - `audit/record`: what the proxy's log phase pays — the same record encoded straight into the
//!   thread's lane of the queue (bound check, lane lock, framing), with the writer's drain of the
//!   lanes every 1,024 records counted in.
//! - `audit/chain`: what the writer pays per record — appending `seq` and the HMAC-SHA256 link.
//! - `audit/append`: the writer's whole per-record path into its buffer (chain + buffered write),
//!   with a segment rotation every 64 MiB.
//!
//! Throughput with audit on and off is measured end to end by the load harness:
//! `benches/run.sh` runs `fenfa-full` (audit on) and `fenfa-full-noaudit` (`audit.enabled: false`)
//! and reports the difference (target: at most 5%).
//!
//! Run: `cargo bench -p fenfa-benches --bench audit -- --warm-up-time 1 --measurement-time 3`

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::SystemTime;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use fenfa_gateway::audit::chain::{Algorithm, Key, GENESIS};
use fenfa_gateway::audit::queue::Queue;
use fenfa_gateway::audit::writer::{Policy, Trail};
use fenfa_gateway::audit::{Parts, Recorder};
use fenfa_gateway::config::model::AuditSettings;
use fenfa_gateway::metrics::AuditCounters;
use fenfa_plugins::Identity;
use http::HeaderMap;

fn identity() -> Identity {
    Identity {
        user: "u-8f14e45fceea167a5a36dedd4bea2543".into(),
        channel: "wechat".into(),
        app: "wx0123456789abcdef".into(),
        token_id: Some("jti-1".into()),
        expires_at: 0,
    }
}

fn parts<'a>(headers: &'a HeaderMap, id: &'a Identity) -> Parts<'a> {
    Parts {
        request_id: "5f2b8c1d9e7a4b3c8d6e1f0a2b3c4d5e",
        client_request_id: None,
        client_ip: Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7))),
        identity: Some(id),
        agency: "municipal-tax-bureau",
        service: "tax-certificates",
        route: "tax-certificates-api",
        method: "GET",
        path: "/api/tax/certificates/2024",
        query: Some("idcard=110101199001011234&page=2&size=20"),
        headers,
        status: 200,
        upstream: Some("10.20.30.40:8080"),
        upstream_status: Some(200),
        latency_us: 1834,
        bytes_sent: 2412,
        denied_by: None,
        error: None,
        reason: None,
        body_uninspected: false,
        findings: &[],
    }
}

fn bench(c: &mut Criterion) {
    let recorder = Recorder::new("gw-node-01", &AuditSettings::default()).expect("recorder");
    let headers = HeaderMap::new();
    let id = identity();
    let p = parts(&headers, &id);
    let at = SystemTime::now();
    let record = recorder.encode(&p, at);
    let key = Key::from_bytes(&[42u8; 32]).expect("key");

    let mut g = c.benchmark_group("audit");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode", |b| {
        b.iter(|| black_box(recorder.encode(black_box(&p), at)))
    });
    let counters = Arc::new(AuditCounters::default());
    let queue = Queue::new(65_536, false, counters);
    let (mut batches, mut spare, mut n) = (Vec::new(), Vec::new(), 0u32);
    g.bench_function("record", |b| {
        b.iter(|| {
            queue.push(None, |out| recorder.encode_now_into(black_box(&p), out));
            n += 1;
            if n % 1024 == 0 {
                queue.drain(&mut batches, &mut spare, false);
                for batch in batches.drain(..) {
                    queue.written(batch, &mut spare);
                }
            }
        })
    });
    let mut line = Vec::with_capacity(1024);
    // One record line chained with each algorithm (`audit.chain`; BENCHMARKS.md "国密").
    for (name, alg) in [
        ("chain", Algorithm::HmacSha256),
        ("chain_sm3", Algorithm::HmacSm3),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                line.clear();
                black_box(key.seal(
                    alg,
                    &GENESIS,
                    black_box(&record),
                    b",\"seq\":123456",
                    &mut line,
                ))
            })
        });
    }
    let dir = std::env::temp_dir().join(format!("fenfa-audit-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut trail = Trail::open(
        &dir,
        Arc::new(Key::from_bytes(&[42u8; 32]).expect("key")),
        "gw-node-01",
    )
    .expect("trail");
    let policy = Policy {
        max_bytes: 64 << 20,
        max_age: std::time::Duration::from_secs(3600),
        retention: std::time::Duration::from_secs(3600),
        fsync_interval: std::time::Duration::from_secs(1),
    };
    g.bench_function("append", |b| {
        b.iter(|| trail.append(black_box(&record), &policy).expect("append"))
    });
    g.finish();
    let _ = trail.seal("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
