//! H5 services through the real gateway: the channels' verification files at the root of the
//! H5 host, pages under an agency's prefix with the origin's redirects and cookies put back
//! under it and the security headers added, the static-asset cache (hits, what is never stored,
//! revalidation with the origin), an API route beside them left untouched, and `jwt-auth`
//! reading the token from a cookie, optionally.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;

use crate::support::tokens::{jwt_auth, Keys};
use crate::support::Gateway;

const HOST: &str = "h5.city.example";

/// Every request an [`Origin`] got: its path and headers.
type Seen = Arc<Mutex<Vec<(String, HashMap<String, String>)>>>;

/// An agency's web origin: pages, redirects, cookies and assets with caching headers. Records
/// every request (path and headers).
struct Origin {
    addr: SocketAddr,
    seen: Seen,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Origin {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Seen = Arc::default();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let st = seen.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let st = st.clone();
                            tokio::spawn(async move {
                                let svc = service_fn(move |req| answer(st.clone(), addr, req));
                                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                                    .serve_connection(TokioIo::new(stream), svc)
                                    .await;
                            });
                        }
                    }
                }
            });
        });
        Self {
            addr,
            seen,
            _stop: stop,
        }
    }

    /// Requests the origin got for `path`.
    fn hits(&self, path: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .count()
    }

    /// Headers of the last request for `path`.
    fn last(&self, path: &str) -> HashMap<String, String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(p, _)| p == path)
            .map(|(_, h)| h.clone())
            .unwrap_or_else(|| panic!("the origin saw no request for {path}"))
    }
}

async fn answer(
    seen: Seen,
    me: SocketAddr,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let headers: HashMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    seen.lock().unwrap().push((path.clone(), headers.clone()));
    let r = Response::builder();
    let r = match path.as_str() {
        "/redirect-rel" => r.status(302).header("location", "/login?x=1"),
        "/redirect-abs" => r
            .status(302)
            .header("location", format!("http://{me}/done?y=2")),
        "/redirect-other" => r
            .status(302)
            .header("location", "https://open.other.example/x"),
        "/cookies" => r
            .header("set-cookie", "sid=abc; Path=/; HttpOnly")
            .header("set-cookie", "lang=zh; Domain=city.example; Max-Age=60"),
        "/app.js" => r.header("cache-control", "public, max-age=60"),
        "/private.js" => r.header("cache-control", "private, max-age=60"),
        "/cookie.js" => r
            .header("cache-control", "max-age=60")
            .header("set-cookie", "t=1"),
        "/etag.js" => {
            if headers.get("if-none-match").map(String::as_str) == Some("\"v1\"") {
                return Ok(Response::builder()
                    .status(304)
                    .header("etag", "\"v1\"")
                    .body(Full::new(Bytes::new()))
                    .unwrap());
            }
            r.header("etag", "\"v1\"")
        }
        _ => r.header("content-type", "text/html"),
    };
    let body = format!("body of {path}");
    Ok(r.body(Full::new(Bytes::from(body))).unwrap())
}

fn config(origin: &Origin, h5_plugins: &str) -> String {
    format!(
        r#"
h5:
  hosts: ["{HOST}"]
  verification_files:
    - {{ channel: wechat, name: MP_verify_abc123.txt, content: abc123 }}
    - {{ channel: alipay, name: alipay-verify.txt, content: "alipay proof" }}
    - {{ channel: baidu, name: baidu_verify_xyz.html, content: "baidu proof" }}
services:
  - name: agency-a
    kind: h5
    upstream: {{ targets: [{{ addr: "{addr}" }}] }}
    plugins: [{h5_plugins}]
  - name: api
    upstream: {{ targets: [{{ addr: "{addr}" }}] }}
routes:
  - {{ name: a-pages, service: agency-a, paths: ["/h5/agency-a/*"], strip_prefix: true }}
  - {{ name: api, service: api, paths: ["/api/*"], strip_prefix: true }}
"#,
        addr = origin.addr
    )
}

/// A client that shows redirects instead of following them.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(15))
        .build()
        .unwrap()
}

async fn get(gw: &Gateway, host: &str, path: &str) -> reqwest::Response {
    client()
        .get(gw.url(path))
        .header("host", host)
        .send()
        .await
        .unwrap()
}

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_channels_verification_file_is_served_at_the_root_of_the_h5_host() {
    let origin = Origin::start();
    let gw = Gateway::start(&config(&origin, ""));
    for (name, content) in [
        ("MP_verify_abc123.txt", "abc123"),
        ("alipay-verify.txt", "alipay proof"),
        ("baidu_verify_xyz.html", "baidu proof"),
    ] {
        let r = get(&gw, HOST, &format!("/{name}")).await;
        assert_eq!(r.status(), 200, "{name}");
        assert_eq!(
            header(&r, "content-type").as_deref(),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(r.text().await.unwrap(), content);
    }
    let head = client()
        .head(gw.url("/MP_verify_abc123.txt"))
        .header("host", format!("{HOST}:443"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(header(&head, "content-length").as_deref(), Some("6"));
    // A name not configured falls through to routing: no route for `/`.
    assert_eq!(get(&gw, HOST, "/MP_verify_other.txt").await.status(), 404);
    // Another host does not get the files.
    assert_eq!(
        get(&gw, "api.city.example", "/MP_verify_abc123.txt")
            .await
            .status(),
        404
    );
    assert_eq!(origin.hits("/MP_verify_abc123.txt"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_keep_their_redirects_and_cookies_under_the_prefix() {
    let origin = Origin::start();
    let gw = Gateway::start(&config(&origin, ""));

    let page = get(&gw, HOST, "/h5/agency-a/index.html?from=wx").await;
    assert_eq!(page.status(), 200);
    assert_eq!(
        origin.hits("/index.html"),
        1,
        "the origin sees the stripped path"
    );
    let csp = header(&page, "content-security-policy").expect("CSP");
    assert!(csp.starts_with("default-src 'self';"), "{csp}");
    assert!(
        csp.ends_with("frame-ancestors 'self'"),
        "no identity: {csp}"
    );
    assert_eq!(
        header(&page, "x-content-type-options").as_deref(),
        Some("nosniff")
    );
    assert_eq!(
        header(&page, "referrer-policy").as_deref(),
        Some("strict-origin-when-cross-origin")
    );
    assert_eq!(
        header(&page, "strict-transport-security"),
        None,
        "plain HTTP"
    );

    let loc = |r: &reqwest::Response| header(r, "location").unwrap();
    let r = get(&gw, HOST, "/h5/agency-a/redirect-rel").await;
    assert_eq!(r.status(), 302);
    assert_eq!(loc(&r), "/h5/agency-a/login?x=1");
    let r = get(&gw, HOST, "/h5/agency-a/redirect-abs").await;
    assert_eq!(loc(&r), "/h5/agency-a/done?y=2");
    let r = get(&gw, HOST, "/h5/agency-a/redirect-other").await;
    assert_eq!(loc(&r), "https://open.other.example/x");

    let r = get(&gw, HOST, "/h5/agency-a/cookies").await;
    let cookies: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(
        cookies,
        [
            "sid=abc; Path=/h5/agency-a/; HttpOnly",
            "lang=zh; Max-Age=60; Path=/h5/agency-a/"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_assets_are_cached_by_the_origins_rules() {
    let origin = Origin::start();
    let gw = Gateway::start(&config(&origin, ""));

    let first = get(&gw, HOST, "/h5/agency-a/app.js").await;
    assert_eq!(header(&first, "x-cache-status").as_deref(), Some("MISS"));
    let first = first.text().await.unwrap();
    let second = get(&gw, HOST, "/h5/agency-a/app.js").await;
    assert_eq!(header(&second, "x-cache-status").as_deref(), Some("HIT"));
    assert_eq!(second.text().await.unwrap(), first);
    assert_eq!(origin.hits("/app.js"), 1);

    for path in ["private.js", "cookie.js"] {
        for _ in 0..2 {
            let r = get(&gw, HOST, &format!("/h5/agency-a/{path}")).await;
            assert_eq!(r.status(), 200);
            assert_ne!(header(&r, "x-cache-status").as_deref(), Some("HIT"));
        }
        assert_eq!(
            origin.hits(&format!("/{path}")),
            2,
            "{path} is never stored"
        );
    }

    let first = get(&gw, HOST, "/h5/agency-a/etag.js").await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.text().await.unwrap(), "body of /etag.js");
    let again = get(&gw, HOST, "/h5/agency-a/etag.js").await;
    assert_eq!(again.status(), 200);
    assert_eq!(
        header(&again, "x-cache-status").as_deref(),
        Some("REVALIDATED")
    );
    assert_eq!(again.text().await.unwrap(), "body of /etag.js");
    assert_eq!(origin.hits("/etag.js"), 2, "revalidated with the origin");
    assert_eq!(
        origin
            .last("/etag.js")
            .get("if-none-match")
            .map(String::as_str),
        Some("\"v1\"")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_route_beside_them_is_left_alone() {
    let origin = Origin::start();
    let gw = Gateway::start(&config(&origin, ""));
    for _ in 0..2 {
        let r = get(&gw, HOST, "/api/app.js").await;
        assert_eq!(r.status(), 200);
        for h in [
            "content-security-policy",
            "x-content-type-options",
            "x-cache-status",
        ] {
            assert_eq!(header(&r, h), None, "{h}");
        }
    }
    assert_eq!(origin.hits("/app.js"), 2, "nothing cached for an API route");
    let r = get(&gw, HOST, "/api/redirect-rel").await;
    assert_eq!(header(&r, "location").as_deref(), Some("/login?x=1"));
    let r = get(&gw, HOST, "/api/cookies").await;
    assert_eq!(
        header(&r, "set-cookie").as_deref(),
        Some("sid=abc; Path=/; HttpOnly")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_auth_reads_an_optional_token_from_a_cookie() {
    let keys = Keys::generate(&[("es-1", "ES256")]);
    let plugin = jwt_auth(&keys.jwks(), "cookie: fenfa_token, optional: true");
    let origin = Origin::start();
    let gw = Gateway::start(&config(&origin, &plugin));
    let tokens = keys.mint(&[
        json!({"kid": "es-1", "claims": {"sub": "u_cookie", "chn": "wechat"}}),
        json!({"kid": "es-1", "attack": "tamper"}),
    ]);
    let send = |cookie: Option<String>| {
        let mut req = client()
            .get(gw.url("/h5/agency-a/me"))
            .header("host", HOST)
            .header("x-fenfa-user", "forged");
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        req.send()
    };

    let r = send(Some(format!("theme=dark; fenfa_token={}", tokens[0])))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = origin.last("/me");
    assert_eq!(
        seen.get("x-fenfa-user").map(String::as_str),
        Some("u_cookie")
    );
    assert_eq!(
        seen.get("x-fenfa-channel").map(String::as_str),
        Some("wechat")
    );
    assert_eq!(seen.get("cookie").map(String::as_str), Some("theme=dark"));
    let csp = header(&r, "content-security-policy").unwrap();
    assert!(
        csp.ends_with("frame-ancestors 'none'"),
        "wechat caller: {csp}"
    );

    let r = send(None).await.unwrap();
    assert_eq!(r.status(), 200, "a visitor without a token gets the page");
    assert_eq!(origin.hits("/me"), 2);
    assert_eq!(origin.last("/me").get("x-fenfa-user"), None);

    let r = send(Some(format!("fenfa_token={}", tokens[1])))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(origin.hits("/me"), 2);
}
