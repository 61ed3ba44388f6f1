//! Graceful shutdown: SIGTERM stops new connections, lets in-flight requests finish within the
//! grace period, and exits as soon as nothing is in flight.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::support::{client, Gateway, Upstream};

fn config(grace: &str, target: std::net::SocketAddr) -> String {
    format!(
        r#"
gateway:
  shutdown_grace: {grace}
services:
  - name: s
    upstream:
      targets: [{{ addr: "{target}" }}]
      timeouts: {{ read: 10s, total: 20s }}
routes:
  - name: r
    service: s
    paths: ["/*"]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish_then_exits() {
    let up = Upstream::start("slow");
    let mut gw = Gateway::start(&config("10s", up.addr));
    let url = gw.url("/__sleep/1500");
    let in_flight =
        tokio::spawn(async move { client().get(url).send().await.map(|r| r.status().as_u16()) });
    // Wait until the upstream has the request, then ask the gateway to stop.
    let deadline = Instant::now() + Duration::from_secs(5);
    while up.hits() == 0 {
        assert!(
            Instant::now() < deadline,
            "request never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gw.signal(Signal::SIGTERM);
    // New connections are refused once the listener has stopped.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if std::net::TcpStream::connect(gw.http).is_err() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "listener still accepting after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        in_flight
            .await
            .unwrap()
            .expect("in-flight request completed"),
        200
    );
    let status = tokio::task::spawn_blocking(move || {
        let st = gw.wait_exit(Duration::from_secs(8));
        (st, gw.logs())
    })
    .await
    .unwrap();
    assert!(status.0.success(), "exit status {:?}", status.0);
    assert!(status.1.contains("drained"), "{}", status.1);
}

#[tokio::test]
async fn an_idle_gateway_exits_promptly_on_sigterm_not_after_the_whole_grace() {
    let up = Upstream::start("a");
    let mut gw = Gateway::start(&config("30s", up.addr));
    assert_eq!(
        client().get(gw.url("/x")).send().await.unwrap().status(),
        200
    );
    gw.signal(Signal::SIGTERM);
    // Far below the 30 s grace: the gateway noticed nothing was in flight.
    assert!(gw.wait_exit(Duration::from_secs(10)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grace_period_bounds_how_long_a_request_may_hold_shutdown() {
    let up = Upstream::start("stuck");
    let mut gw = Gateway::start(&config("1s", up.addr));
    let url = gw.url("/__sleep/8000");
    let _stuck = tokio::spawn(async move { client().get(url).send().await });
    let deadline = Instant::now() + Duration::from_secs(5);
    while up.hits() == 0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gw.signal(Signal::SIGTERM);
    // Exits after the 1 s grace (plus runtime shutdown), well before the 8 s request would end.
    tokio::task::spawn_blocking(move || gw.wait_exit(Duration::from_secs(6)))
        .await
        .unwrap();
}
