//! Routing: the most specific route wins; 404/405 in the JSON error shape.
//!
//! Every test runs the real gateway in front of real upstreams; which route won is read from the
//! `x-upstream` header of the answer (each service has its own named upstream) and from what that
//! upstream saw.

use reqwest::Method;

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

/// One service per upstream, named after it: `services:` YAML for `ups`.
fn services(ups: &[&Upstream]) -> String {
    let mut s = String::from("services:\n");
    for up in ups {
        s.push_str(&format!(
            "  - name: {}\n    upstream:\n      targets: [{{ addr: \"{}\" }}]\n",
            up.state.name, up.addr
        ));
    }
    s
}

/// Sends `method path` with an optional `Host`; returns the status and the name of the upstream
/// that answered (`None` when the gateway answered itself).
async fn send(
    gw: &Gateway,
    method: Method,
    host: Option<&str>,
    path: &str,
) -> (u16, Option<String>) {
    let mut req = client().request(method, gw.url(path));
    if let Some(h) = host {
        req = req.header("host", h);
    }
    let resp = req.send().await.unwrap();
    let upstream = resp
        .headers()
        .get("x-upstream")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (resp.status().as_u16(), upstream)
}

async fn get(gw: &Gateway, host: Option<&str>, path: &str) -> (u16, Option<String>) {
    send(gw, Method::GET, host, path).await
}

fn ok(name: &str) -> (u16, Option<String>) {
    (200, Some(name.to_owned()))
}

/// Three routes with the same path, an exact host, a wildcard host and no host.
fn host_routes(exact: &Upstream, wildcard: &Upstream, any: &Upstream) -> Gateway {
    Gateway::start(&format!(
        r#"{}
routes:
  - name: any-host
    service: any
    paths: ["/x/*"]
  - name: wildcard-host
    service: wildcard
    hosts: ["*.example.com"]
    paths: ["/x/*"]
  - name: exact-host
    service: exact
    hosts: ["api.example.com"]
    paths: ["/x/*"]
"#,
        services(&[exact, wildcard, any])
    ))
}

#[tokio::test]
async fn exact_host_beats_wildcard_host() {
    let (exact, wildcard, any) = (
        Upstream::start("exact"),
        Upstream::start("wildcard"),
        Upstream::start("any"),
    );
    let gw = host_routes(&exact, &wildcard, &any);
    assert_eq!(get(&gw, Some("api.example.com"), "/x/1").await, ok("exact"));
    assert_eq!(get(&gw, Some("API.Example.COM"), "/x/1").await, ok("exact"));
    assert_eq!(wildcard.hits() + any.hits(), 0);
}

#[tokio::test]
async fn wildcard_host_beats_any_host_route() {
    let (exact, wildcard, any) = (
        Upstream::start("exact"),
        Upstream::start("wildcard"),
        Upstream::start("any"),
    );
    let gw = host_routes(&exact, &wildcard, &any);
    assert_eq!(
        get(&gw, Some("www.example.com"), "/x/1").await,
        ok("wildcard")
    );
    assert_eq!(
        get(&gw, Some("a.b.example.com"), "/x/1").await,
        ok("wildcard")
    );
    // The wildcard covers subdomains only, not the apex, and no other domain.
    assert_eq!(get(&gw, Some("example.com"), "/x/1").await, ok("any"));
    assert_eq!(get(&gw, Some("other.org"), "/x/1").await, ok("any"));
    assert_eq!(get(&gw, Some("evil-example.com"), "/x/1").await, ok("any"));
    assert_eq!(exact.hits(), 0);
}

#[tokio::test]
async fn host_header_with_a_port_still_matches() {
    let (exact, wildcard, any) = (
        Upstream::start("exact"),
        Upstream::start("wildcard"),
        Upstream::start("any"),
    );
    let gw = host_routes(&exact, &wildcard, &any);
    assert_eq!(
        get(&gw, Some("api.example.com:9080"), "/x/1").await,
        ok("exact")
    );
    assert_eq!(
        get(&gw, Some("www.example.com:443"), "/x/1").await,
        ok("wildcard")
    );
    // The Host header is passed upstream as the client sent it.
    assert_eq!(exact.last().header("host"), Some("api.example.com:9080"));
}

#[tokio::test]
async fn exact_path_beats_a_longer_prefix_and_longer_prefix_beats_shorter() {
    let (exact, long, short) = (
        Upstream::start("exact"),
        Upstream::start("long"),
        Upstream::start("short"),
    );
    let gw = Gateway::start(&format!(
        r#"{}
routes:
  - name: short-prefix
    service: short
    paths: ["/api/*"]
  - name: long-prefix
    service: long
    paths: ["/api/users/*"]
  - name: exact
    service: exact
    paths: ["/api/users"]
"#,
        services(&[&exact, &long, &short])
    ));
    // `/api/users/*` also matches `/api/users`, but the exact route is more specific.
    assert_eq!(get(&gw, None, "/api/users").await, ok("exact"));
    assert_eq!(get(&gw, None, "/api/users/42").await, ok("long"));
    assert_eq!(get(&gw, None, "/api/users/").await, ok("long"));
    assert_eq!(get(&gw, None, "/api/orders/1").await, ok("short"));
    assert_eq!(get(&gw, None, "/api/usersx").await, ok("short"));
    assert_eq!(long.last().path, "/api/users/");
}

#[tokio::test]
async fn param_route_rewrites_the_path_and_keeps_the_query() {
    let up = Upstream::start("users");
    let gw = Gateway::start(&format!(
        r#"{}
routes:
  - name: user
    service: users
    paths: ["/users/{{id}}"]
    rewrite: "/v2/users/{{id}}"
  - name: legacy
    service: users
    paths: ["/old/*"]
    rewrite: "/new/{{*}}"
"#,
        services(&[&up])
    ));
    assert_eq!(
        get(&gw, None, "/users/42?fields=a,b&x=%20y").await,
        ok("users")
    );
    let seen = up.last();
    assert_eq!(seen.path, "/v2/users/42");
    assert_eq!(seen.query.as_deref(), Some("fields=a,b&x=%20y"));

    // `{id}` is one segment: deeper paths do not match.
    let (status, code, _) =
        error_code(client().get(gw.url("/users/42/x")).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (404, "route_not_found"));

    // `{*}` is the rest of a prefix match.
    assert_eq!(get(&gw, None, "/old/a/b?q=1").await, ok("users"));
    let seen = up.last();
    assert_eq!(
        (seen.path.as_str(), seen.query.as_deref()),
        ("/new/a/b", Some("q=1"))
    );
    assert_eq!(up.hits(), 2);
}

#[tokio::test]
async fn strip_prefix_removes_the_prefix() {
    let up = Upstream::start("svc");
    let gw = Gateway::start(&format!(
        r#"{}
routes:
  - name: r
    service: svc
    paths: ["/svc/v1/*"]
    strip_prefix: true
"#,
        services(&[&up])
    ));
    assert_eq!(get(&gw, None, "/svc/v1/items/7?page=2").await, ok("svc"));
    let seen = up.last();
    assert_eq!(
        (seen.path.as_str(), seen.query.as_deref()),
        ("/items/7", Some("page=2"))
    );
    assert_eq!(get(&gw, None, "/svc/v1").await, ok("svc"));
    assert_eq!(up.last().path, "/");
    assert_eq!(get(&gw, None, "/svc/v1/").await, ok("svc"));
    assert_eq!(up.last().path, "/");
}

#[tokio::test]
async fn priority_breaks_a_tie_between_equally_specific_routes() {
    let (low, high) = (Upstream::start("low"), Upstream::start("high"));
    let gw = Gateway::start(&format!(
        r#"{}
routes:
  - name: low
    service: low
    paths: ["/p/*"]
  - name: high
    service: high
    paths: ["/p/*"]
    priority: 10
  - name: item-low
    service: low
    paths: ["/items/{{id}}"]
    priority: -1
  - name: item-default
    service: high
    paths: ["/items/{{key}}"]
"#,
        services(&[&low, &high])
    ));
    // The higher priority wins even though it was declared later.
    assert_eq!(get(&gw, None, "/p/x").await, ok("high"));
    assert_eq!(get(&gw, None, "/items/1").await, ok("high"));
    assert_eq!(low.hits(), 0);
}

#[tokio::test]
async fn method_not_allowed_is_405_json_unless_a_less_specific_route_allows_it() {
    let (reader, writer) = (Upstream::start("reader"), Upstream::start("writer"));
    let gw = Gateway::start(&format!(
        r#"{}
routes:
  - name: read-only
    service: reader
    paths: ["/ro/items"]
    methods: [GET]
  - name: items
    service: reader
    paths: ["/m/items"]
    methods: [GET]
  - name: writes
    service: writer
    paths: ["/m/*"]
    methods: [POST, PUT]
"#,
        services(&[&reader, &writer])
    ));
    let resp = client().post(gw.url("/ro/items")).send().await.unwrap();
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let (status, code, body) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (405, "method_not_allowed"));
    assert!(!body["error"]["message"].as_str().unwrap_or("").is_empty());
    assert_eq!(reader.hits() + writer.hits(), 0);

    // The exact route only allows GET; the prefix route allows POST, so POST goes there.
    assert_eq!(
        send(&gw, Method::POST, None, "/m/items").await,
        ok("writer")
    );
    assert_eq!(writer.last().method, "POST");
    assert_eq!(get(&gw, None, "/m/items").await, ok("reader"));
    // Neither allows DELETE.
    let resp = client().delete(gw.url("/m/items")).send().await.unwrap();
    let (status, code, _) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (405, "method_not_allowed"));
    assert_eq!((reader.hits(), writer.hits()), (1, 1));
}

#[tokio::test]
async fn head_is_served_by_a_get_route() {
    let up = Upstream::start("getter");
    let gw = Gateway::start(&format!(
        r#"{}
routes:
  - name: r
    service: getter
    paths: ["/doc"]
    methods: [GET]
"#,
        services(&[&up])
    ));
    assert_eq!(send(&gw, Method::HEAD, None, "/doc").await, ok("getter"));
    assert_eq!(up.last().method, "HEAD");
    let (status, code, _) = error_code(client().post(gw.url("/doc")).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (405, "method_not_allowed"));
    assert_eq!(up.hits(), 1);
}
