//! The control plane under test: the real router and store on a loopback port, in-process, with
//! a clock the test moves. Each test gets its own SQLite file or its own PostgreSQL schema.

use std::sync::Arc;

use fenfa_admin::app::{App, Options};
use fenfa_admin::auth::Bootstrap;
use fenfa_admin::clock::{Clock, ManualClock};
use fenfa_admin::totp;
use serde_json::{json, Value};

/// The manual clock's start: 2027-01-15.
pub const T0: i64 = 1_800_000_000;
pub const ADMIN_PW: &str = "Platform-Ops-Pass-2026";
pub const SECURITY_PW: &str = "Sec-Admin-Pass-2026";
pub const AUDIT_PW: &str = "Aud-Admin-Pass-2026";
pub const OPERATOR_PW: &str = "Agency-Op-Pass-2026";
/// Base32 of RFC 6238's seed `12345678901234567890`.
pub const ADMIN_TOTP: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
pub const SECURITY_TOTP: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
pub const AUDIT_TOTP: &str = "KRUGS4ZANFZSAYLVMRUXIIDTMVRXEZLU";
pub const MASTER_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
/// Upstream port every test service uses; the test policies allow it on 127.0.0.1.
pub const UPSTREAM_PORT: u16 = 18000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct Env {
    pub base: String,
    pub clock: ManualClock,
    pub app: Arc<App>,
    pub http: reqwest::Client,
    /// Holds the SQLite file and the master key file until the test ends.
    _dir: tempfile::TempDir,
    pg: Option<(String, String)>,
}

/// `FENFA_TEST_POSTGRES_URL`, or `None` (loudly) outside CI; in CI a missing URL fails the test.
pub fn postgres_url() -> Option<String> {
    match std::env::var("FENFA_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            if std::env::var_os("CI").is_some() {
                panic!("CI is set but FENFA_TEST_POSTGRES_URL is not: the PostgreSQL half of the admin tests must run in CI");
            }
            // Straight to the process's stderr, past the test harness's output capture, once.
            static LOUD: std::sync::Once = std::sync::Once::new();
            LOUD.call_once(|| {
                use std::io::Write;
                let _ = std::io::stderr().write_all(
                    b"\n!!! SKIPPING the PostgreSQL variants of the admin tests: FENFA_TEST_POSTGRES_URL is not set\n!!! (e.g. FENFA_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test; CI sets it)\n\n",
                );
            });
            None
        }
    }
}

/// Runs a test body against SQLite (`sqlite`) and PostgreSQL (`postgres`).
#[macro_export]
macro_rules! both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let env = $crate::harness::Env::start($crate::harness::Backend::Sqlite)
                    .await
                    .expect("sqlite env");
                super::$name(&env).await;
                env.finish().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(env) =
                    $crate::harness::Env::start($crate::harness::Backend::Postgres).await
                {
                    super::$name(&env).await;
                    env.finish().await;
                }
            }
        }
    };
}

pub fn test_options(database: String, dir: &std::path::Path) -> Options {
    let mut opts = Options::new(database, dir.to_path_buf());
    opts.master_key = Some(MASTER_KEY.into());
    opts.watch_timeout = std::time::Duration::from_secs(2);
    opts.bootstrap = Bootstrap::from_lookup(|k| {
        Some(
            match k {
                "FENFA_ADMIN_PASSWORD" => ADMIN_PW,
                "FENFA_ADMIN_TOTP_SECRET" => ADMIN_TOTP,
                "FENFA_SECURITY_PASSWORD" => SECURITY_PW,
                "FENFA_SECURITY_TOTP_SECRET" => SECURITY_TOTP,
                "FENFA_AUDIT_PASSWORD" => AUDIT_PW,
                "FENFA_AUDIT_TOTP_SECRET" => AUDIT_TOTP,
                _ => return None,
            }
            .to_string(),
        )
    });
    opts
}

impl Env {
    pub async fn start(backend: Backend) -> Option<Env> {
        Self::start_with(backend, |_| {}).await
    }

    pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut Options)) -> Option<Env> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (url, pg) = match backend {
            Backend::Sqlite => (
                format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("admin.db").display()
                ),
                None,
            ),
            Backend::Postgres => {
                let base = postgres_url()?;
                let schema = format!(
                    "fenfa_t_{}",
                    fenfa_admin::crypto::hex(&fenfa_admin::crypto::random_array::<6>())
                );
                fenfa_admin::store::install_drivers();
                let mut c = <sqlx::AnyConnection as sqlx::Connection>::connect(&base)
                    .await
                    .expect("connect to FENFA_TEST_POSTGRES_URL");
                sqlx::query(&format!("CREATE SCHEMA {schema}"))
                    .execute(&mut c)
                    .await
                    .expect("create a test schema");
                let sep = if base.contains('?') { '&' } else { '?' };
                (
                    format!("{base}{sep}options[search_path]={schema}"),
                    Some((base, schema)),
                )
            }
        };
        let clock = ManualClock::new(T0);
        let mut opts = test_options(url, dir.path());
        tweak(&mut opts);
        let (app, issued) = App::open(opts, Arc::new(clock.clone()))
            .await
            .expect("open the control plane");
        assert!(issued.is_empty(), "env-provided accounts print nothing");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(fenfa_admin::app::serve(app.clone(), listener));
        Some(Env {
            base: format!("http://{addr}"),
            clock,
            app,
            http: reqwest::Client::new(),
            _dir: dir,
            pg,
        })
    }

    /// Drops the PostgreSQL schema (best effort).
    pub async fn finish(self) {
        if let Some((base, schema)) = &self.pg {
            self.app.store.pool.close().await;
            if let Ok(mut c) = <sqlx::AnyConnection as sqlx::Connection>::connect(base).await {
                let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                    .execute(&mut c)
                    .await;
            }
        }
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// One request: `(status, JSON body or Null, or the text as a JSON string)`.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let (st, _, text) = self.call_raw(method, path, token, body).await;
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (st, v)
    }

    pub async fn call_raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, String) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = self.http.request(m, format!("{}{path}", self.base));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.expect("request");
        let st = resp.status().as_u16();
        let headers = resp.headers().clone();
        (st, headers, resp.text().await.unwrap_or_default())
    }

    pub async fn get(&self, path: &str, token: &str) -> Value {
        let (st, v) = self.call("GET", path, Some(token), None).await;
        assert_eq!(st, 200, "GET {path}: {v}");
        v
    }

    /// A request that must answer `want`; returns the body.
    pub async fn expect(
        &self,
        want: u16,
        method: &str,
        path: &str,
        token: &str,
        body: Value,
    ) -> Value {
        let (st, v) = self.call(method, path, Some(token), Some(body)).await;
        assert_eq!(st, want, "{method} {path}: {v}");
        v
    }

    /// Signs in (moving the clock to a fresh TOTP step first); returns the session token.
    pub async fn login(&self, user: &str, password: &str, totp_secret: Option<&str>) -> String {
        let (st, v) = self.try_login(user, password, totp_secret).await;
        assert_eq!(st, 200, "login {user}: {v}");
        v["token"].as_str().unwrap().to_string()
    }

    pub async fn try_login(
        &self,
        user: &str,
        password: &str,
        totp_secret: Option<&str>,
    ) -> (u16, Value) {
        self.clock.advance(30);
        let code =
            totp_secret.map(|s| totp::current(&totp::base32_decode(s).unwrap(), self.clock.now()));
        self.call(
            "POST",
            "/v1/auth/login",
            None,
            Some(json!({"username": user, "password": password, "totp": code})),
        )
        .await
    }

    pub async fn admin(&self) -> String {
        self.login("admin", ADMIN_PW, Some(ADMIN_TOTP)).await
    }

    pub async fn security(&self) -> String {
        self.login("security", SECURITY_PW, Some(SECURITY_TOTP))
            .await
    }

    pub async fn auditor(&self) -> String {
        self.login("auditor", AUDIT_PW, Some(AUDIT_TOTP)).await
    }

    pub async fn version(&self) -> i64 {
        fenfa_admin::store::current_version(&self.app.store.pool)
            .await
            .unwrap()
    }

    // ---- fixtures -------------------------------------------------------------------------

    pub async fn agency(&self, sys: &str, name: &str) -> String {
        let v = self
            .expect(
                201,
                "POST",
                "/v1/agencies",
                sys,
                json!({"name": name, "title": format!("{name} 委办局")}),
            )
            .await;
        v["id"].as_str().unwrap().to_string()
    }

    /// A policy allowing 127.0.0.1:[`UPSTREAM_PORT`] over http.
    pub async fn policy(&self, sec: &str, agency: &str, name: &str) -> String {
        let v = self
            .expect(
                201,
                "POST",
                "/v1/network-policies",
                sec,
                json!({"agency_id": agency, "name": name, "rules": [
                    {"destination": "127.0.0.1", "port": UPSTREAM_PORT, "protocol": "http"}
                ]}),
            )
            .await;
        v["id"].as_str().unwrap().to_string()
    }

    pub async fn service(&self, token: &str, agency: &str, name: &str) -> String {
        let v = self
            .expect(
                201,
                "POST",
                "/v1/services",
                token,
                json!({
                    "agency_id": agency, "name": name, "title": format!("{name} 服务"), "kind": "api",
                    "upstream": {"targets": [{"addr": format!("127.0.0.1:{UPSTREAM_PORT}")}]}
                }),
            )
            .await;
        v["id"].as_str().unwrap().to_string()
    }

    pub async fn route(&self, token: &str, service: &str, name: &str, path: &str) -> String {
        let v = self
            .expect(
                201,
                "POST",
                "/v1/routes",
                token,
                json!({"service_id": service, "name": name, "paths": [path], "description": "接口说明"}),
            )
            .await;
        v["id"].as_str().unwrap().to_string()
    }

    /// Verifies a submitted service by `token` with short load steps; returns the verification.
    pub async fn verify(&self, token: &str, service: &str) -> Value {
        self.expect(
            201,
            "POST",
            &format!("/v1/services/{service}/verifications"),
            token,
            json!({"load": {"step_ms": 200}}),
        )
        .await
    }

    /// Verifies a submitted service by `token`; a failure (these fixtures' upstreams usually
    /// have no backend) is overridden by the security admin, as `docs/verification.md` allows.
    /// Returns the verification.
    pub async fn verified(&self, token: &str, service: &str) -> Value {
        let v = self.verify(token, service).await;
        if v["result"] != "failed" {
            return v;
        }
        let sec = self.security().await;
        self.expect(
            200,
            "POST",
            &format!("/v1/verifications/{}/override", v["id"].as_str().unwrap()),
            &sec,
            json!({"reason": "test fixture: the backend is not what this test is about"}),
        )
        .await
    }

    /// Submits a service, verifies it, and publishes it on `channels` (all by `token`),
    /// expecting success ([`Env::verified`]).
    pub async fn go_live(&self, token: &str, service: &str, channels: &[&str]) -> Value {
        self.expect(
            200,
            "POST",
            &format!("/v1/services/{service}/submit"),
            token,
            json!({}),
        )
        .await;
        self.verified(token, service).await;
        self.expect(
            200,
            "POST",
            &format!("/v1/services/{service}/publish"),
            token,
            json!({ "channels": channels }),
        )
        .await
    }

    /// Creates an agency operator and signs them in.
    pub async fn operator(&self, sys: &str, username: &str, agency: &str) -> String {
        self.expect(
            201,
            "POST",
            "/v1/users",
            sys,
            json!({"username": username, "role": "agency-operator", "agency_id": agency, "password": OPERATOR_PW}),
        )
        .await;
        self.login(username, OPERATOR_PW, None).await
    }
}
