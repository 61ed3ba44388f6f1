//! Routing: the most specific route wins; 404/405 in the JSON error shape.

use crate::support::{client, error_code, Gateway, Upstream};

#[tokio::test]
async fn request_reaches_upstream_and_unknown_path_is_404_json() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&format!(
        r#"
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
    let resp = client().get(gw.url("/api/x?q=1")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("x-request-id").is_some());
    assert_eq!(up.last().path, "/api/x");
    let (status, code, body) =
        error_code(client().get(gw.url("/other")).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (404, "route_not_found"));
    assert!(body["error"]["request_id"].as_str().unwrap().len() >= 16);
}
