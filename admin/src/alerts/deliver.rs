//! Delivery of alerts to people: a generic webhook (JSON, `X-Fenfa-Signature: sha256=<hex>` —
//! HMAC-SHA256 of the body under the destination's secret), WeCom group robots and DingTalk
//! custom robots (markdown messages; DingTalk signed with `timestamp` and `sign`).
//!
//! One queue per destination. A destination gets at most `per_minute` messages in any minute of
//! the app clock (the robots allow about 20): alerts that arrive meanwhile wait and go out
//! together in the next message, cut to the robot's size limit — batched, never dropped. A failed
//! send is retried with exponential backoff ([`MAX_ATTEMPTS`] in all); the outcome is recorded
//! per alert and destination (`alert_deliveries`). URLs are `https://` except to loopback
//! (checked by `fenfa_net`, which also refuses redirects and proxies and caps answers).

use std::collections::{HashMap, VecDeque};
use std::sync::Weak;
use std::time::Duration;

use base64::Engine;
use ring::hmac;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::store::{self, AlertRow, DestinationRow};
use crate::app::App;

/// Sends per alert and destination before it is given up (`failed`).
pub const MAX_ATTEMPTS: i64 = 5;
/// The first retry's delay; each next one doubles it.
pub const BACKOFF: Duration = Duration::from_millis(500);
/// How long a queue waits after its first pending alert before sending, to batch a burst.
const LINGER: Duration = Duration::from_millis(300);
/// WeCom's markdown `content` limit, in bytes.
pub const WECOM_MAX: usize = 4096;
/// DingTalk's markdown text limit we keep to, in bytes.
pub const DINGTALK_MAX: usize = 18_000;
/// Most alerts in one webhook message.
const WEBHOOK_BATCH: usize = 50;

/// Destination kinds.
pub const KINDS: [&str; 3] = ["webhook", "wecom", "dingtalk"];

/// A destination with its URL and secret opened, ready to send.
#[derive(Clone)]
pub struct Target {
    pub id: String,
    pub kind: String,
    pub url: String,
    pub secret: Option<String>,
    pub per_minute: i64,
}

impl Target {
    pub fn open(app: &App, d: &DestinationRow) -> Result<Target, String> {
        let url = app
            .master
            .open(&format!("alert-destination-url:{}", d.id), &d.sealed_url)?;
        let secret = d
            .sealed_secret
            .as_ref()
            .map(|s| app.master.open(&format!("alert-destination:{}", d.id), s))
            .transpose()?;
        Ok(Target {
            id: d.id.clone(),
            kind: d.kind.clone(),
            url: String::from_utf8(url).map_err(|e| e.to_string())?,
            secret: secret
                .map(String::from_utf8)
                .transpose()
                .map_err(|e| e.to_string())?,
            per_minute: d.per_minute,
        })
    }
}

/// DingTalk's signature: urlencode(base64(HMAC-SHA256(secret, "{timestamp}\n{secret}"))).
pub fn dingtalk_sign(secret: &str, timestamp_ms: i64) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mac = hmac::sign(&key, format!("{timestamp_ms}\n{secret}").as_bytes());
    urlencode(&base64::engine::general_purpose::STANDARD.encode(mac.as_ref()))
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `sha256=<hex>` of the body under `secret`.
pub fn webhook_signature(secret: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    format!(
        "sha256={}",
        crate::crypto::hex(hmac::sign(&key, body).as_ref())
    )
}

/// One alert as a markdown block (Simplified Chinese, Asia/Shanghai times).
pub fn markdown(a: &AlertRow) -> String {
    let sev = match a.severity.as_str() {
        "critical" => "严重",
        "warning" => "警告",
        _ => "提示",
    };
    let mut s = format!(
        "### 【{sev}】{}\n> 对象: {} {}\n",
        a.title, a.subject_kind, a.subject
    );
    if let Some(svc) = &a.service {
        s.push_str(&format!("> 服务: {svc}\n"));
    }
    if let Some(sum) = a.evidence.get("summary").and_then(Value::as_str) {
        s.push_str(&format!("> 证据: {sum}\n"));
    }
    s.push_str(&format!(
        "> 时间: {}(北京时间)\n> 告警编号: {}\n\n",
        store::shanghai(a.first_seen),
        a.id
    ));
    s
}

/// The header of every robot message.
fn heading(n: usize) -> String {
    format!("## Fenfa 网关告警({n} 条)\n\n")
}

/// Takes from `queue` as many alerts as one message of `kind` holds; returns them and the body.
pub fn next_message(kind: &str, queue: &mut VecDeque<AlertRow>) -> (Vec<AlertRow>, Value) {
    let mut taken = Vec::new();
    if kind == "webhook" {
        while taken.len() < WEBHOOK_BATCH {
            match queue.pop_front() {
                Some(a) => taken.push(a),
                None => break,
            }
        }
        let body = json!({
            "source": "fenfa",
            "alerts": taken.iter().map(AlertRow::view).collect::<Vec<_>>(),
        });
        return (taken, body);
    }
    let max = if kind == "wecom" {
        WECOM_MAX
    } else {
        DINGTALK_MAX
    };
    // The header with a 3-digit count is the longest it gets.
    let mut text = String::new();
    while let Some(a) = queue.front() {
        let mut block = markdown(a);
        if taken.is_empty() && heading(999).len() + block.len() > max {
            // One alert longer than a message: cut at a character boundary.
            let mut cut = max - heading(999).len();
            while !block.is_char_boundary(cut) {
                cut -= 1;
            }
            block.truncate(cut);
        } else if heading(999).len() + text.len() + block.len() > max {
            break;
        }
        text.push_str(&block);
        taken.extend(queue.pop_front());
    }
    let content = format!("{}{text}", heading(taken.len()));
    let body = if kind == "wecom" {
        json!({"msgtype": "markdown", "markdown": {"content": content}})
    } else {
        json!({"msgtype": "markdown", "markdown": {"title": format!("Fenfa 网关告警({} 条)", taken.len()), "text": content}})
    };
    (taken, body)
}

/// Sends one message; `Err` with a reason for people (never the URL or the secret).
pub async fn send(t: &Target, body: &Value, now: i64) -> Result<(), String> {
    let bytes = serde_json::to_vec(body).map_err(|e| e.to_string())?;
    let mut url = t.url.clone();
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    match t.kind.as_str() {
        "webhook" => {
            if let Some(s) = &t.secret {
                let sig = webhook_signature(s, &bytes);
                headers.insert(
                    "x-fenfa-signature",
                    http::HeaderValue::from_str(&sig).map_err(|e| e.to_string())?,
                );
            }
        }
        "dingtalk" => {
            if let Some(s) = &t.secret {
                let ts = now * 1000;
                let sep = if url.contains('?') { '&' } else { '?' };
                url = format!("{url}{sep}timestamp={ts}&sign={}", dingtalk_sign(s, ts));
            }
        }
        _ => {}
    }
    let settings = fenfa_net::Settings {
        url: &url,
        // The system's CAs, no client certificate.
        tls: fenfa_net::ClientTls::default(),
        insecure: false,
        connect_timeout: Duration::from_secs(5),
        max_body: 64 * 1024,
        names: fenfa_net::Names::section("destination"),
    };
    let ep = fenfa_net::Endpoint::new(&settings).map_err(|e| e.to_string())?;
    let parsed = ep.url.clone();
    let answer = ep
        .request(
            http::Method::POST,
            parsed,
            headers,
            bytes,
            Duration::from_secs(10),
        )
        .await
        .map_err(|e| e.to_string())?;
    if !(200..300).contains(&answer.status) {
        return Err(format!("answered {}", answer.status));
    }
    // The robots answer 200 with `errcode` ≠ 0 when they refuse a message.
    if t.kind != "webhook" {
        if let Ok(v) = serde_json::from_slice::<Value>(&answer.body) {
            if let Some(code) = v.get("errcode").and_then(Value::as_i64) {
                if code != 0 {
                    return Err(format!("robot refused the message: errcode {code}"));
                }
            }
        }
    }
    Ok(())
}

/// One destination's queue.
#[derive(Default)]
struct Queue {
    pending: VecDeque<AlertRow>,
    /// App-clock seconds of the messages sent in the last minute.
    sent: VecDeque<i64>,
    /// A batch being retried, its attempts so far, and when to try again.
    retry: Option<(Vec<AlertRow>, Value, i64, tokio::time::Instant)>,
    since: Option<tokio::time::Instant>,
}

/// The delivery task: takes new alerts from `rx` and hands them to one task per destination
/// (so a slow or failing destination never holds up the others).
pub async fn run(app: Weak<App>, mut rx: mpsc::Receiver<AlertRow>) {
    let mut workers: HashMap<String, mpsc::UnboundedSender<AlertRow>> = HashMap::new();
    loop {
        let got = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await;
        let Some(strong) = app.upgrade() else { return };
        let mut fresh = Vec::new();
        match got {
            Ok(Some(a)) => fresh.push(a),
            Ok(None) => return,
            Err(_) => {}
        }
        while let Ok(a) = rx.try_recv() {
            fresh.push(a);
        }
        let dests = match store::destinations(&strong.store.pool).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read alert destinations");
                continue;
            }
        };
        // A removed destination's worker ends when its sender is dropped.
        workers.retain(|id, _| dests.iter().any(|d| &d.id == id));
        for d in dests {
            let tx = workers.entry(d.id.clone()).or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(worker(app.clone(), d.clone(), rx));
                tx
            });
            for a in &fresh {
                let _ = store::set_delivery(
                    &strong.store.pool,
                    &a.id,
                    &d.id,
                    "pending",
                    0,
                    None,
                    strong.now(),
                )
                .await;
                let _ = tx.send(a.clone());
            }
        }
    }
}

/// One destination's queue, batching and sending.
async fn worker(app: Weak<App>, d: DestinationRow, mut rx: mpsc::UnboundedReceiver<AlertRow>) {
    let mut q = Queue::default();
    loop {
        match tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
            Ok(Some(a)) => q.pending.push_back(a),
            Ok(None) => return,
            Err(_) => {}
        }
        while let Ok(a) = rx.try_recv() {
            q.pending.push_back(a);
        }
        let Some(app) = app.upgrade() else { return };
        pump(&app, &d, &mut q).await;
    }
}

async fn mark(
    app: &App,
    alerts: &[AlertRow],
    dest: &str,
    state: &str,
    attempts: i64,
    err: Option<&str>,
) {
    for a in alerts {
        if let Err(e) = store::set_delivery(
            &app.store.pool,
            &a.id,
            dest,
            state,
            attempts,
            err,
            app.now(),
        )
        .await
        {
            tracing::warn!(error = %e, "cannot record an alert delivery");
        }
    }
}

/// Sends what one queue may send now.
async fn pump(app: &App, d: &DestinationRow, q: &mut Queue) {
    let now = app.now();
    while q.sent.front().is_some_and(|t| *t <= now - 60) {
        q.sent.pop_front();
    }
    if q.sent.len() as i64 >= d.per_minute {
        return;
    }
    let (alerts, body, attempts) = match q.retry.take() {
        Some((a, b, n, at)) => {
            if tokio::time::Instant::now() < at {
                q.retry = Some((a, b, n, at));
                return;
            }
            (a, b, n)
        }
        None => {
            if q.pending.is_empty() {
                q.since = None;
                return;
            }
            let since = *q.since.get_or_insert_with(tokio::time::Instant::now);
            if since.elapsed() < LINGER {
                return;
            }
            q.since = None;
            let (a, b) = next_message(&d.kind, &mut q.pending);
            (a, b, 0)
        }
    };
    let target = match Target::open(app, d) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(destination = %d.id, error = %e, "cannot open an alert destination");
            mark(
                app,
                &alerts,
                &d.id,
                "failed",
                attempts,
                Some("cannot open the destination"),
            )
            .await;
            return;
        }
    };
    q.sent.push_back(now);
    let attempts = attempts + 1;
    match send(&target, &body, now).await {
        Ok(()) => mark(app, &alerts, &d.id, "delivered", attempts, None).await,
        Err(e) => {
            tracing::warn!(destination = %d.id, attempts, error = %e, "alert delivery failed");
            if attempts >= MAX_ATTEMPTS {
                mark(app, &alerts, &d.id, "failed", attempts, Some(&e)).await;
            } else {
                mark(app, &alerts, &d.id, "retrying", attempts, Some(&e)).await;
                let delay = BACKOFF * 2u32.pow((attempts - 1) as u32);
                q.retry = Some((alerts, body, attempts, tokio::time::Instant::now() + delay));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(i: usize) -> AlertRow {
        AlertRow {
            id: format!("al_{i:04}"),
            rule: "auth_failures".into(),
            dedup_key: String::new(),
            severity: "warning".into(),
            state: "open".into(),
            subject_kind: "client_ip".into(),
            subject: format!("10.0.{}.{}", i / 256, i % 256),
            service: None,
            title: "认证失败激增".into(),
            evidence: json!({"summary": "60 秒内 20 次 401/403(阈值 20)"}),
            signals: 1,
            first_seen: 1_800_000_000,
            last_seen: 1_800_000_000,
            created_at: 1_800_000_000,
            updated_at: 1_800_000_000,
            notes: json!([]),
        }
    }

    #[test]
    fn wecom_messages_stay_within_4096_bytes_and_lose_nothing() {
        let mut q: VecDeque<AlertRow> = (0..100).map(alert).collect();
        let mut seen = 0;
        while !q.is_empty() {
            let (taken, body) = next_message("wecom", &mut q);
            let c = body["markdown"]["content"].as_str().unwrap();
            assert!(c.len() <= WECOM_MAX, "{}", c.len());
            assert!(!taken.is_empty());
            seen += taken.len();
        }
        assert_eq!(seen, 100);
    }

    #[test]
    fn dingtalk_sign_matches_the_documented_example_shape() {
        let s = dingtalk_sign("SEC000", 1_700_000_000_000);
        assert!(!s.contains('+') && !s.contains('/') && !s.contains('='));
        assert!(s.ends_with("%3D"));
    }
}
