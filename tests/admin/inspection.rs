//! Daily inspection (docs/inspection.md): the schedule, driven by the manual clock through
//! `fenfa_admin::inspection::tick` (the process's own schedule loop is off), inspects published
//! services against real loopback backends and opens and closes fault records.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::harness::*;

/// A backend on `port` answering 200 to everything, until the handle is aborted.
async fn backend(port: u16) -> tokio::task::JoinHandle<()> {
    let l = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind the backend port again");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    })
}

/// A port nothing listens on (found by binding and letting go).
async fn free_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

/// A published service whose one interface goes to 127.0.0.1:`port`.
async fn published_service(env: &Env, port: u16) -> String {
    let sys = env.admin().await;
    let sec = env.security().await;
    let ag = env.agency(&sys, "housing").await;
    env.expect(
        201,
        "POST",
        "/v1/network-policies",
        &sec,
        json!({"agency_id": ag, "name": "housing-backends", "rules": [
            {"destination": "127.0.0.1", "port": port, "protocol": "http"}
        ]}),
    )
    .await;
    let svc = env
        .expect(
            201,
            "POST",
            "/v1/services",
            &sys,
            json!({
                "agency_id": ag, "name": "fund", "title": "公积金查询", "kind": "api",
                "upstream": {"targets": [{"addr": format!("127.0.0.1:{port}")}]}
            }),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    env.route(&sys, &svc, "fund-balance", "/housing/fund/balance")
        .await;
    env.go_live(&sys, &svc, &["wechat"]).await;
    svc
}

async fn faults(env: &Env, token: &str, query: &str) -> Vec<Value> {
    env.get(&format!("/v1/faults{query}"), token).await["items"]
        .as_array()
        .unwrap()
        .clone()
}

/// The unix second of `HH:MM` local time (UTC+8) on the day after the clock's day.
fn next_day_at(now: i64, hour: i64, minute: i64) -> i64 {
    let local_midnight = (now + 8 * 3600).div_euclid(86_400) * 86_400 - 8 * 3600;
    local_midnight + 86_400 + hour * 3600 + minute * 60
}

async fn a_down_backend_is_a_refused_fault_that_closes_when_it_is_back(env: &Env) {
    let sys = env.admin().await;
    let port = free_port().await;
    let svc = published_service(env, port).await;
    env.expect(
        200,
        "PUT",
        "/v1/inspection-settings",
        &sys,
        json!({"daily_at": "09:00"}),
    )
    .await;
    let app: &Arc<fenfa_admin::app::App> = &env.app;

    // The next day, a minute before the configured time: nothing is due.
    let day1 = next_day_at(env.now(), 8, 59);
    env.clock.set(day1);
    assert_eq!(fenfa_admin::inspection::tick(app).await.unwrap(), None);
    // (Sessions idle out after 30 minutes: sign in again after each jump of the clock.)
    let sys = env.admin().await;
    assert!(faults(env, &sys, "").await.is_empty());

    // At 09:00 the daily inspection runs, once.
    env.clock.set(day1 + 60);
    let first = fenfa_admin::inspection::tick(app)
        .await
        .unwrap()
        .expect("the daily inspection is due at 09:00");
    env.clock.advance(3600);
    assert_eq!(
        fenfa_admin::inspection::tick(app).await.unwrap(),
        None,
        "once a day"
    );
    let sys = env.admin().await;
    let open = faults(env, &sys, "?state=open").await;
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0]["cause"], "refused");
    assert_eq!(open[0]["service_id"], svc.as_str());
    assert_eq!(open[0]["route"], "fund-balance");
    assert_eq!(open[0]["target"], format!("127.0.0.1:{port}"));
    assert_eq!(open[0]["opened_by"], first.as_str());
    let insp = env.get(&format!("/v1/inspections/{first}"), &sys).await;
    assert_eq!(insp["trigger"], "schedule");
    assert_eq!(insp["services"][0]["healthy"], false);
    assert_eq!(
        insp["services"][0]["interfaces"][0]["probes"][0]["causes"],
        json!(["refused"])
    );

    // The backend comes back; the next day's inspection closes the fault.
    let up = backend(port).await;
    env.clock.set(next_day_at(env.now(), 9, 0));
    let second = fenfa_admin::inspection::tick(app)
        .await
        .unwrap()
        .expect("the next day's inspection");
    let sys = env.admin().await;
    assert!(faults(env, &sys, "?state=open").await.is_empty());
    let closed = faults(env, &sys, "?state=closed").await;
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0]["id"], open[0]["id"]);
    assert_eq!(closed[0]["closed_by"], "inspection");
    let insp = env.get(&format!("/v1/inspections/{second}"), &sys).await;
    assert_eq!(insp["services"][0]["healthy"], true);
    assert_eq!(
        insp["services"][0]["interfaces"][0]["probes"][0]["status"],
        200
    );
    assert_eq!(insp["summary"]["faults_closed"], json!([open[0]["id"]]));
    up.abort();
}

async fn an_operator_closes_a_fault_with_a_note_and_a_new_one_opens_if_it_persists(env: &Env) {
    let sys = env.admin().await;
    let port = free_port().await;
    published_service(env, port).await;
    // On demand: a system admin runs it; the audit admin may only read.
    let aud = env.auditor().await;
    env.expect(403, "POST", "/v1/inspections", &aud, json!({}))
        .await;
    let run = env
        .expect(201, "POST", "/v1/inspections", &sys, json!({}))
        .await;
    assert_eq!(run["trigger"], "manual");
    assert_eq!(run["summary"]["faults_opened"].as_array().unwrap().len(), 1);
    let f = faults(env, &aud, "?state=open&cause=refused").await;
    assert_eq!(f.len(), 1);
    let id = f[0]["id"].as_str().unwrap();

    // A note is required; an empty one changes nothing.
    env.expect(
        422,
        "POST",
        &format!("/v1/faults/{id}/close"),
        &sys,
        json!({"note": " "}),
    )
    .await;
    let closed = env
        .expect(
            200,
            "POST",
            &format!("/v1/faults/{id}/close"),
            &sys,
            json!({"note": "已通知委办局重启后端"}),
        )
        .await;
    assert_eq!(closed["state"], "closed");
    assert_eq!(closed["closed_by"], "admin");
    assert_eq!(closed["note"], "已通知委办局重启后端");
    env.expect(
        409,
        "POST",
        &format!("/v1/faults/{id}/close"),
        &sys,
        json!({"note": "again"}),
    )
    .await;
    let trail = env.get("/v1/audit/admin?action=fault.close", &aud).await;
    assert_eq!(trail["items"][0]["resource_id"], id);

    // Still down: the next inspection opens a new record.
    env.expect(201, "POST", "/v1/inspections", &sys, json!({}))
        .await;
    let open = faults(env, &sys, "?state=open").await;
    assert_eq!(open.len(), 1);
    assert_ne!(open[0]["id"], id);
    let (st, _) = env
        .call("GET", "/v1/faults?cause=broken", Some(&sys), None)
        .await;
    assert_eq!(st, 400);
    env.expect(
        422,
        "PUT",
        "/v1/inspection-settings",
        &sys,
        json!({"daily_at": "25:00"}),
    )
    .await;
}

/// A TLS backend on a free port answering 200, with a certificate for 127.0.0.1 that expires on
/// 2027-01-25 (ten days after the harness clock's start), signed by a CA nobody trusts.
async fn tls_backend() -> (u16, tokio::task::JoinHandle<()>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    p.not_after = rcgen::date_time_ymd(2027, 1, 25);
    let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let h = tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let Ok(mut s) = acceptor.accept(s).await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
                let _ = s.shutdown().await;
            });
        }
    });
    (port, h)
}

async fn tls_upstreams_are_checked_for_trust_and_certificate_expiry(env: &Env) {
    let sys = env.admin().await;
    let sec = env.security().await;
    let (port, h) = tls_backend().await;
    let ag = env.agency(&sys, "tax").await;
    env.expect(
        201,
        "POST",
        "/v1/network-policies",
        &sec,
        json!({"agency_id": ag, "name": "tax-backends", "rules": [
            {"destination": "127.0.0.1", "port": port, "protocol": "https"}
        ]}),
    )
    .await;
    // `tls.verify: false` (the gateway does not check the chain, nor does the probe): it
    // answers, but its certificate expires in ten days. Verified against the system's CAs, which
    // do not know the backend's CA: the handshake fails. (`tls.ca` files are the gateways' own
    // and cannot be set through the control plane.)
    for (name, verify) in [("invoice", false), ("refund", true)] {
        let svc = env
            .expect(
                201,
                "POST",
                "/v1/services",
                &sys,
                json!({
                    "agency_id": ag, "name": name, "title": "税务", "kind": "api",
                    "upstream": {"scheme": "https", "targets": [{"addr": format!("127.0.0.1:{port}")}],
                                 "tls": {"verify": verify}}
                }),
            )
            .await["id"]
            .as_str()
            .unwrap()
            .to_string();
        env.route(&sys, &svc, &format!("{name}-get"), &format!("/tax/{name}"))
            .await;
        env.go_live(&sys, &svc, &["alipay"]).await;
    }
    let run = env
        .expect(201, "POST", "/v1/inspections", &sys, json!({}))
        .await;
    let by_name = |n: &str| {
        run["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["service"] == n)
            .unwrap()
            .clone()
    };
    let invoice = by_name("invoice");
    let probe = &invoice["interfaces"][0]["probes"][0];
    assert_eq!(probe["status"], 200);
    let days = probe["cert_days_left"].as_i64().unwrap();
    assert!((9..=10).contains(&days), "{days} days left");
    assert_eq!(probe["causes"], json!(["certificate_expiring"]));
    let refund = by_name("refund");
    assert_eq!(
        refund["interfaces"][0]["probes"][0]["causes"],
        json!(["tls"])
    );
    let f = faults(env, &sys, "?cause=certificate_expiring").await;
    assert_eq!(f.len(), 1);
    assert_eq!(f[0]["service"], "invoice");
    assert_eq!(
        f[0]["route"],
        Value::Null,
        "a certificate is the target's, not a route's"
    );
    let f = faults(env, &sys, "?cause=tls").await;
    assert_eq!(f.len(), 1);
    assert_eq!(f[0]["service"], "refund");
    h.abort();
}

macro_rules! without_schedule_loop {
    ($name:ident) => {
        mod $name {
            use crate::harness::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let env = Env::start_with(Backend::Sqlite, |o| o.schedule = None)
                    .await
                    .expect("sqlite env");
                super::$name(&env).await;
                env.finish().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(env) = Env::start_with(Backend::Postgres, |o| o.schedule = None).await {
                    super::$name(&env).await;
                    env.finish().await;
                }
            }
        }
    };
}

without_schedule_loop!(a_down_backend_is_a_refused_fault_that_closes_when_it_is_back);
without_schedule_loop!(an_operator_closes_a_fault_with_a_note_and_a_new_one_opens_if_it_persists);
without_schedule_loop!(tls_upstreams_are_checked_for_trust_and_certificate_expiry);
