//! Route lookup cost with 10, 1k, 10k and 100k routes (issue: lookup at 100k within 1.5× of 10).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use fenfa_gateway::router::{PathPattern, RouterBuilder};
use http::Method;

fn build(n: usize) -> fenfa_gateway::router::Router<usize> {
    let mut b = RouterBuilder::new();
    for i in 0..n {
        let kind = i % 3;
        let p = match kind {
            0 => format!("/svc{i}/items/{{id}}"),
            1 => format!("/svc{i}/static/*"),
            _ => format!("/svc{i}/exact/path"),
        };
        let pat: PathPattern = p.parse().expect("pattern");
        b.add(&[], &pat, Some(&[Method::GET]), 0, i).expect("add");
    }
    b.build()
}

fn lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("route_lookup");
    for n in [10usize, 1_000, 10_000, 100_000] {
        let r = build(n);
        let paths: Vec<String> = (0..64)
            .map(|k| {
                let i = (k * 7919) % n;
                match i % 3 {
                    0 => format!("/svc{i}/items/42"),
                    1 => format!("/svc{i}/static/css/app.css"),
                    _ => format!("/svc{i}/exact/path"),
                }
            })
            .collect();
        g.bench_with_input(BenchmarkId::from_parameter(n), &r, |b, r| {
            let mut k = 0;
            b.iter(|| {
                k = (k + 1) % paths.len();
                black_box(
                    r.lookup(Some("api.example.com"), &paths[k], &Method::GET)
                        .found()
                        .is_some(),
                )
            })
        });
    }
    g.finish();
}

criterion_group!(benches, lookup);
criterion_main!(benches);
