//! The status listener: liveness, readiness, status JSON and Prometheus metrics.

use crate::support::{client, http_get, Gateway, Upstream};

#[tokio::test]
async fn status_listener_reports_health_readiness_config_and_metrics() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&format!(
        r#"
version: "release-7"
services:
  - name: s
    upstream:
      targets: [{{ addr: "{}" }}]
routes:
  - name: r
    service: s
    paths: ["/api/*"]
"#,
        up.addr
    ));
    assert_eq!(http_get(gw.status, "/healthz").unwrap().0, 200);
    assert_eq!(http_get(gw.status, "/readyz").unwrap().0, 200);
    for _ in 0..3 {
        assert_eq!(
            client()
                .get(gw.url("/api/a"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    assert_eq!(
        client()
            .get(gw.url("/api/__status/503"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    assert_eq!(
        client()
            .get(gw.url("/nothing"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    let st = gw.status_json();
    assert_eq!(st["ready"], true);
    assert_eq!(st["config"]["version"], "release-7");
    assert_eq!(st["config"]["generation"], 1);
    assert_eq!(st["upstreams"][0]["targets"][0]["healthy"], true);

    let m = gw.settled_metrics();
    assert!(
        m.contains(r#"fenfa_http_requests_total{route="r",service="s",status="200"} 3"#),
        "{m}"
    );
    assert!(
        m.contains(r#"fenfa_http_requests_total{route="r",service="s",status="503"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"fenfa_http_requests_total{route="",service="",status="404"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"fenfa_http_request_duration_seconds_count{route="r",service="s"} 4"#),
        "{m}"
    );
    assert!(
        m.contains(r#"fenfa_http_request_duration_seconds_count{route="",service=""} 1"#),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            r#"fenfa_upstream_target_healthy{{service="s",target="{}"}} 1"#,
            up.addr
        )),
        "{m}"
    );
    assert!(m.contains("fenfa_config_generation 1"), "{m}");
    assert!(m.contains("fenfa_config_reload_failures_total 0"), "{m}");
    assert!(
        m.contains(r#"fenfa_config_info{version="release-7"} 1"#),
        "{m}"
    );
}
