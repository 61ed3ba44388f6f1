//! Traffic control through the real gateway: GCRA rate limits keyed by app, user, channel, client
//! IP, route and service (a cap shared by a service's routes), several limits on one route, the
//! 429 answer and `RateLimit-*` headers, and the per-service cap on requests in flight.
//!
//! Rates are one request a minute with an explicit burst, so a test's few requests (milliseconds
//! apart) never see a bucket refill: the outcomes do not depend on timing.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::tokens::{jwt_auth, Keys};
use crate::support::{client, error_code, Gateway, Upstream};

fn header(resp: &reqwest::Response, name: &str) -> Option<u64> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().parse().expect("a whole number"))
}

/// The `RateLimit-Limit`, `-Remaining`, `-Reset` of a response (each must be present).
fn ratelimit(resp: &reqwest::Response) -> (u64, u64, u64) {
    let get =
        |n| header(resp, n).unwrap_or_else(|| panic!("{n} missing from {:?}", resp.headers()));
    (
        get("ratelimit-limit"),
        get("ratelimit-remaining"),
        get("ratelimit-reset"),
    )
}

/// GET with an optional bearer token and an optional `X-Forwarded-For`.
async fn get(
    gw: &Gateway,
    path: &str,
    token: Option<&str>,
    xff: Option<&str>,
) -> reqwest::Response {
    let mut req = client().get(gw.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(x) = xff {
        req = req.header("x-forwarded-for", x);
    }
    req.send().await.unwrap()
}

/// Asserts a `429 rate_limited` with `Retry-After` in 1..=`max_wait` and the `RateLimit-*`
/// headers; returns them with the `Retry-After`.
async fn assert_limited(
    resp: reqwest::Response,
    max_wait: u64,
    what: &str,
) -> (u64, u64, u64, u64) {
    let retry = header(&resp, "retry-after").unwrap_or_else(|| panic!("{what}: no Retry-After"));
    let rl = ratelimit(&resp);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "{what}"
    );
    let (status, code, body) = error_code(resp).await;
    assert_eq!(
        (status, code.as_str()),
        (429, "rate_limited"),
        "{what}: {body}"
    );
    assert!(
        (1..=max_wait).contains(&retry),
        "{what}: Retry-After {retry}"
    );
    assert_eq!(rl.1, 0, "{what}: RateLimit-Remaining on a denial");
    assert!(
        rl.2 >= retry,
        "{what}: RateLimit-Reset {} < Retry-After {retry}",
        rl.2
    );
    (rl.0, rl.1, rl.2, retry)
}

fn rate_limit(limits: &str) -> String {
    format!("{{ name: rate-limit, config: {{ limits: [{limits}] }} }}")
}

#[tokio::test]
async fn per_app_limit_answers_429_with_retry_after_and_ratelimit_headers() {
    let keys = Keys::generate(&[("hs-1", "HS256")]);
    let t = keys.mint(&[
        json!({"kid": "hs-1", "claims": {"app": "wx_a"}}),
        json!({"kid": "hs-1", "claims": {"app": "wx_b", "sub": "u_other"}}),
    ]);
    let (app_a, app_b) = (&t[0], &t[1]);
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
    paths: ["/*"]
    plugins: [{}, {}]
"#,
        up.addr,
        jwt_auth(&keys.jwks(), ""),
        rate_limit("{ key: app, rate: 1, per: 1m, burst: 2 }")
    ));

    // A full bucket lets burst + 1 = 3 through at once, counting down.
    for remaining in [2, 1, 0] {
        let resp = get(&gw, "/x", Some(app_a), None).await;
        assert_eq!(resp.status(), 200);
        let (limit, rem, reset) = ratelimit(&resp);
        assert_eq!((limit, rem), (3, remaining));
        // Full again after (3 - remaining) minutes, give or take the rounding up.
        assert!(
            (1..=180).contains(&reset) && reset > (2 - remaining) * 60,
            "RateLimit-Reset {reset} with {remaining} remaining"
        );
    }
    let (limit, _, _, retry) =
        assert_limited(get(&gw, "/x", Some(app_a), None).await, 60, "4th").await;
    assert_eq!(limit, 3);
    assert!(
        retry > 50,
        "the next request passes in about a minute: {retry}"
    );
    assert_eq!(up.hits(), 3, "the denied request never reached the backend");

    // Another app has its own bucket.
    let resp = get(&gw, "/x", Some(app_b), None).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(ratelimit(&resp).1, 2);
    // The upstream's own status does not matter for the headers.
    let resp = get(&gw, "/__status/500", Some(app_b), None).await;
    assert_eq!(resp.status(), 500);
    assert_eq!(ratelimit(&resp).1, 1);
}

#[tokio::test]
async fn limits_key_by_user_channel_ip_route_and_anonymous_callers_by_ip() {
    let keys = Keys::generate(&[("es-1", "ES256")]);
    let t = keys.mint(&[
        json!({"kid": "es-1", "claims": {"sub": "u1", "chn": "wechat", "app": "a1"}}),
        json!({"kid": "es-1", "claims": {"sub": "u2", "chn": "wechat", "app": "a1"}}),
        json!({"kid": "es-1", "claims": {"sub": "u1", "chn": "alipay", "app": "a1"}}),
    ]);
    let (u1, u2, u1_alipay) = (t[0].as_str(), t[1].as_str(), t[2].as_str());
    let up = Upstream::start("a");
    let jwt = jwt_auth(&keys.jwks(), "");
    let route = |name: &str, key: &str, auth: bool| {
        let auth = if auth {
            format!("{jwt}, ")
        } else {
            String::new()
        };
        format!(
            "  - {{ name: {name}, service: s, paths: [\"/{name}/*\"], plugins: [{auth}{}] }}\n",
            rate_limit(&format!("{{ key: {key}, rate: 1, per: 1m }}"))
        )
    };
    let gw = Gateway::start(&format!(
        r#"
gateway:
  trusted_proxies: ["127.0.0.1/32"]
services:
  - name: s
    upstream:
      targets: [{{ addr: "{}" }}]
routes:
{}{}{}{}{}"#,
        up.addr,
        route("user", "user", true),
        route("channel", "channel", true),
        route("ip", "ip", true),
        route("route", "route", true),
        route("anon", "app", false),
    ));

    // (path, token, client address, passes?) in order; burst 0: one request per bucket.
    let steps: &[(&str, Option<&str>, &str, bool)] = &[
        ("/user/1", Some(u1), "10.0.0.1", true),
        ("/user/1", Some(u1), "10.0.0.2", false),
        ("/user/1", Some(u1_alipay), "10.0.0.1", false), // same user on another channel
        ("/user/1", Some(u2), "10.0.0.1", true),
        ("/channel/1", Some(u1), "10.0.0.1", true),
        ("/channel/1", Some(u2), "10.0.0.2", false), // another user, same channel
        ("/channel/1", Some(u1_alipay), "10.0.0.1", true),
        ("/ip/1", Some(u1), "10.0.0.1", true),
        ("/ip/1", Some(u2), "10.0.0.1", false), // another user, same address
        ("/ip/1", Some(u1), "10.0.0.2", true),
        ("/route/1", Some(u1), "10.0.0.1", true),
        ("/route/1", Some(u1_alipay), "10.0.0.2", false), // everyone shares the route
        // `app` without an identity falls back to the client address.
        ("/anon/1", None, "10.0.0.1", true),
        ("/anon/1", None, "10.0.0.1", false),
        ("/anon/1", None, "10.0.0.2", true),
    ];
    for (i, (path, token, ip, passes)) in steps.iter().enumerate() {
        let resp = get(&gw, path, *token, Some(ip)).await;
        let what = format!("step {i}: {path} from {ip}");
        if *passes {
            assert_eq!(resp.status(), 200, "{what}");
            assert_eq!(ratelimit(&resp), (1, 0, 60), "{what}");
        } else {
            assert_limited(resp, 60, &what).await;
        }
    }
    assert_eq!(up.hits(), steps.iter().filter(|s| s.3).count());
}

#[tokio::test]
async fn a_service_cap_is_shared_by_its_routes_and_a_route_limit_is_not() {
    let up = Upstream::start("a");
    let cap = rate_limit("{ key: service, rate: 1, per: 1m, burst: 2 }");
    let gw = Gateway::start(&format!(
        r#"
services:
  - name: fragile
    upstream:
      targets: [{{ addr: "{addr}" }}]
    plugins: [{cap}]
  - name: sturdy
    upstream:
      targets: [{{ addr: "{addr}" }}]
    plugins: [{per_route}]
routes:
  - {{ name: fragile-a, service: fragile, paths: ["/fa/*"] }}
  - {{ name: fragile-b, service: fragile, paths: ["/fb/*"] }}
  - name: fragile-c
    service: fragile
    paths: ["/fc/*"]
    # Replaces the service's rate-limit; repeating the cap keeps it the same bucket.
    plugins: [{cap_and_ip}]
  - {{ name: sturdy-a, service: sturdy, paths: ["/sa/*"] }}
  - {{ name: sturdy-b, service: sturdy, paths: ["/sb/*"] }}
"#,
        addr = up.addr,
        per_route = rate_limit("{ key: route, rate: 1, per: 1m, burst: 1 }"),
        cap_and_ip = rate_limit(
            "{ key: service, rate: 1, per: 1m, burst: 2 }, { key: ip, rate: 1, per: 1m, burst: 9 }"
        ),
    ));

    // Three for the whole fragile service, whichever route.
    for path in ["/fa/1", "/fb/1", "/fc/1"] {
        assert_eq!(get(&gw, path, None, None).await.status(), 200, "{path}");
    }
    for path in ["/fa/2", "/fb/2", "/fc/2"] {
        let (limit, _, _, _) = assert_limited(get(&gw, path, None, None).await, 60, path).await;
        assert_eq!(limit, 3, "{path}: the service cap denied");
    }
    // Two per route on the sturdy service.
    for path in ["/sa/1", "/sa/2", "/sb/1", "/sb/2"] {
        assert_eq!(get(&gw, path, None, None).await.status(), 200, "{path}");
    }
    for path in ["/sa/3", "/sb/3"] {
        assert_limited(get(&gw, path, None, None).await, 60, path).await;
    }
    assert_eq!(up.hits(), 7);
}

#[tokio::test]
async fn several_limits_on_one_route_all_apply_and_a_denial_charges_none() {
    let keys = Keys::generate(&[("hs-1", "HS256")]);
    let t = keys.mint(&[
        json!({"kid": "hs-1", "claims": {"app": "app_a"}}),
        json!({"kid": "hs-1", "claims": {"app": "app_b"}}),
        json!({"kid": "hs-1", "claims": {"app": "app_c"}}),
    ]);
    let (a, b, c) = (t[0].as_str(), t[1].as_str(), t[2].as_str());
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
    paths: ["/*"]
    plugins: [{}, {}]
"#,
        up.addr,
        jwt_auth(&keys.jwks(), ""),
        rate_limit(
            "{ key: ip, rate: 1, per: 1m, burst: 4 }, { key: app, rate: 1, per: 1m, burst: 1 }"
        )
    ));

    // (token, passes, RateLimit-Limit, RateLimit-Remaining): the headers describe the most
    // restrictive limit. All from one address: the ip bucket holds 5, each app's holds 2.
    let steps = [
        (a, true, 2, 1),
        (a, true, 2, 0),
        (a, false, 2, 0), // app_a is out; the ip limit is not charged for it
        (b, true, 2, 1),  // ip: 2 left
        (b, true, 2, 0),  // ip: 1 left
        (c, true, 5, 0),  // ip: 0 left, app_c: 1 left — the ip limit is the tighter one now
        (c, false, 5, 0), // denied by the ip limit although app_c has budget
    ];
    for (i, (token, passes, limit, remaining)) in steps.into_iter().enumerate() {
        let resp = get(&gw, "/x", Some(token), None).await;
        let what = format!("step {i}");
        if passes {
            assert_eq!(resp.status(), 200, "{what}");
            let (l, r, _) = ratelimit(&resp);
            assert_eq!((l, r), (limit, remaining), "{what}");
        } else {
            let (l, r, _, _) = assert_limited(resp, 60, &what).await;
            assert_eq!((l, r), (limit, remaining), "{what}");
        }
    }
    assert_eq!(up.hits(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_in_flight_cap_requests_get_503_upstream_busy_until_one_finishes() {
    let up = Upstream::start("slow");
    let gw = Gateway::start(&format!(
        r#"
services:
  - name: s
    upstream:
      targets: [{{ addr: "{}" }}]
    plugins: [{{ name: concurrency-limit, config: {{ max: 1 }} }}]
routes:
  - {{ name: a, service: s, paths: ["/a/*"] }}
  - {{ name: b, service: s, paths: ["/b/*"] }}
"#,
        up.addr
    ));
    assert_eq!(get(&gw, "/a/warm", None, None).await.status(), 200);

    let slow = tokio::spawn(client().get(gw.url("/a/__sleep/2000")).send());
    // In flight once the backend has it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while up.hits() < 2 {
        assert!(Instant::now() < deadline, "the slow request never arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for path in ["/a/x", "/b/x"] {
        let resp = get(&gw, path, None, None).await;
        assert_eq!(header(&resp, "retry-after"), Some(1), "{path}");
        let (status, code, body) = error_code(resp).await;
        assert_eq!(
            (status, code.as_str()),
            (503, "upstream_busy"),
            "{path}: {body}"
        );
    }
    assert_eq!(up.hits(), 2, "busy requests never reached the backend");

    assert_eq!(slow.await.unwrap().unwrap().status(), 200);
    // The slot is given back when the first request is finished (its log phase): poll briefly.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let resp = get(&gw, "/b/y", None, None).await;
        if resp.status() == 200 {
            break;
        }
        assert_eq!(resp.status(), 503);
        assert!(Instant::now() < deadline, "the slot was never given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..3 {
        assert_eq!(get(&gw, "/a/z", None, None).await.status(), 200);
    }
}

#[tokio::test]
async fn buckets_survive_a_reload_unless_their_limit_changes() {
    let up = Upstream::start("a");
    let config = |version: &str, limit: &str| {
        format!(
            r#"
version: "{version}"
services:
  - name: s
    upstream:
      targets: [{{ addr: "{}" }}]
routes:
  - {{ name: r, service: s, paths: ["/*"], plugins: [{}] }}
  - {{ name: other, service: s, paths: ["/other/*"] }}
"#,
            up.addr,
            rate_limit(limit)
        )
    };
    let gw = Gateway::start(&config("v1", "{ key: route, rate: 1, per: 1m, burst: 1 }"));
    for _ in 0..2 {
        assert_eq!(get(&gw, "/x", None, None).await.status(), 200);
    }
    assert_limited(get(&gw, "/x", None, None).await, 60, "before the reload").await;

    // Another change to the config: the route's bucket keeps its state.
    let next = gw.generation() + 1;
    gw.write_config(&config("v2", "{ key: route, rate: 1, per: 1m, burst: 1 }"));
    gw.signal(nix::sys::signal::Signal::SIGHUP);
    gw.wait_generation(next);
    assert_eq!(gw.status_json()["config"]["version"], "v2");
    assert_limited(
        get(&gw, "/x", None, None).await,
        60,
        "after an unrelated reload",
    )
    .await;

    // The limit itself changed: a new, full bucket.
    gw.write_config(&config("v3", "{ key: route, rate: 1, per: 1m, burst: 2 }"));
    gw.signal(nix::sys::signal::Signal::SIGHUP);
    gw.wait_generation(next + 1);
    let resp = get(&gw, "/x", None, None).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(ratelimit(&resp).0, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_stay_counted_across_a_reload() {
    let up = Upstream::start("slow");
    let config = |version: &str| {
        format!(
            r#"
version: "{version}"
services:
  - name: s
    upstream:
      targets: [{{ addr: "{}" }}]
    plugins: [{{ name: concurrency-limit, config: {{ max: 1 }} }}]
routes:
  - {{ name: a, service: s, paths: ["/*"] }}
"#,
            up.addr
        )
    };
    let gw = Gateway::start(&config("v1"));
    let slow = tokio::spawn(client().get(gw.url("/__sleep/3000")).send());
    let deadline = Instant::now() + Duration::from_secs(10);
    while up.hits() < 1 {
        assert!(Instant::now() < deadline, "the slow request never arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let next = gw.generation() + 1;
    gw.write_config(&config("v2"));
    gw.signal(nix::sys::signal::Signal::SIGHUP);
    gw.wait_generation(next);
    let (status, code, _) = error_code(get(&gw, "/x", None, None).await).await;
    assert_eq!((status, code.as_str()), (503, "upstream_busy"));
    assert_eq!(slow.await.unwrap().unwrap().status(), 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(&gw, "/x", None, None).await.status() != 200 {
        assert!(Instant::now() < deadline, "the slot was never given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
