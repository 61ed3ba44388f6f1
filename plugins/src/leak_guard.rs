//! `leak-guard`: keeps upstream internals out of client responses.
//!
//! - **Error bodies.** By default every `5xx` body from the upstream is replaced by the
//!   gateway's JSON error (`{"error":{"code":"upstream_error","message":…,"request_id":…}}`,
//!   status kept, `Content-Type: application/json`). Any other text or JSON body is replaced
//!   only when it matches a leak pattern: stack traces (Java, Python, .NET, Go, Node, Ruby), SQL
//!   errors (MySQL, Oracle `ORA-`, PostgreSQL, SQL Server, SQLite, `SQLSTATE`), PHP errors with
//!   file paths, framework debug pages (Django, Werkzeug, Laravel, Symfony, Spring Whitelabel,
//!   ASP.NET, Rails, Tomcat) and internal addresses (private IPv4 with a port or in a URL,
//!   cluster-internal host names). Binary bodies are never inspected.
//! - **Banners.** `Server`, `X-Powered-By`, `X-AspNet-Version`, `X-AspNetMvc-Version`,
//!   `X-Runtime`, `X-Debug-Token` and `X-Debug-Token-Link` are removed from every response.
//! - Each replacement is a [`Finding`] (`action: replaced`, class `stack_trace`, `sql_error`,
//!   `php_error`, `debug_page`, `internal_address`, or `server_error` for a 5xx body without a
//!   known pattern); no excerpt of the page is kept.
//!
//! Config in one line: `{replace_5xx, detect, remove_banners, extra_banners, message, limit,
//! over_limit}`. It may not: change the `Content-Type` of a non-5xx response whose head already
//! went out (pingora sends the head before the body is in; see the doc page), or see a body
//! over `limit`. See `docs/plugins/leak-guard.md`.

use std::sync::{Arc, OnceLock};

use http::header::CONTENT_TYPE;
use http::{HeaderName, HeaderValue};
use regex::Regex;
use serde::Deserialize;

use crate::contract::{
    BodyNeed, Finding, FindingAction, HeaderEdits, KeptLength, OverLimit, Plugin, PluginFactory,
    RequestCtx, SchemaError,
};
use crate::response_masking::{check_limit, BodyKind, OverLimitConfig};

/// The plugin's name in configs and findings.
pub const NAME: &str = "leak-guard";

/// In the response-body phase it runs before `response-masking` (400): a replaced page needs
/// no masking. It has no request-side work.
pub const PRIORITY: i32 = 450;

/// Default buffering limit (256 KiB): error pages are small; larger bodies pass uninspected.
pub const DEFAULT_LIMIT: usize = 256 * 1024;

/// The code of the replacement error.
pub const CODE: &str = "upstream_error";

const DEFAULT_MESSAGE: &str = "the upstream failed; details are withheld by the gateway";

/// Banners removed by default (lower case).
pub const BANNERS: [&str; 7] = [
    "server",
    "x-powered-by",
    "x-aspnet-version",
    "x-aspnetmvc-version",
    "x-runtime",
    "x-debug-token",
    "x-debug-token-link",
];

/// A kind of leak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Leak {
    StackTrace,
    SqlError,
    PhpError,
    DebugPage,
    InternalAddress,
}

impl Leak {
    pub const ALL: [Leak; 5] = [
        Leak::StackTrace,
        Leak::SqlError,
        Leak::PhpError,
        Leak::DebugPage,
        Leak::InternalAddress,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Leak::StackTrace => "stack_trace",
            Leak::SqlError => "sql_error",
            Leak::PhpError => "php_error",
            Leak::DebugPage => "debug_page",
            Leak::InternalAddress => "internal_address",
        }
    }

    fn patterns(self) -> &'static [&'static str] {
        match self {
            Leak::StackTrace => &[
                // Java / Kotlin / Scala frames and uncaught exceptions.
                r"\bat [\w$.<>]+\((?:[\w$]+\.(?:java|kt|scala|groovy):\d+|Native Method|Unknown Source)\)",
                r#"Exception in thread ""#,
                r"\b(?:java|javax|jakarta)\.[\w.]+(?:Exception|Error)\b",
                // Python.
                r"Traceback \(most recent call last\):",
                r#"File "[^"\n]+", line \d+, in "#,
                // .NET.
                r"\bat [\w.`<>]+\([^)\n]*\) in [^\n]+:line \d+",
                r"--- End of (?:inner exception )?stack trace",
                r"\bSystem\.[\w.]+Exception\b",
                // Go.
                r"goroutine \d+ \[running\]:",
                r"(?m)^panic: ",
                // Node.js.
                r"\bat (?:[\w.<>]+ )?\((?:/|[A-Za-z]:\\|node:)[^)\n]+:\d+:\d+\)",
                // Ruby.
                r"\.rb:\d+:in `",
            ],
            Leak::SqlError => &[
                r"You have an error in your SQL syntax",
                r"\bSQLSTATE\b",
                r"\bORA-\d{5}\b",
                r"ERROR:\s+(?:syntax error at or near|relation .+ does not exist|column .+ does not exist)",
                r"\bPG::\w+Error\b",
                r"Unclosed quotation mark after the character string",
                r"Microsoft OLE DB Provider for (?:SQL Server|ODBC)",
                r"\[Microsoft\]\[ODBC",
                r"\bSQLite3?::\w*Exception\b|sqlite3\.OperationalError",
                r"\b(?:java\.sql\.SQL\w*Exception|com\.mysql\.\w+|MySQLSyntaxErrorException)\b",
                r"\bWarning: (?:mysqli?|pg|oci|sqlsrv)_\w+\(",
                r"\bpsycopg2\.\w+",
            ],
            Leak::PhpError => &[
                r"(?i)<b>(?:warning|fatal error|parse error|notice|deprecated)</b>:",
                r"(?i)(?:PHP )?(?:Warning|Fatal error|Parse error|Notice|Deprecated): .{0,400}? in (?:/|[A-Za-z]:\\)\S+\.php(?: on line |:)\d+",
                r"Stack trace:\s*#0 ",
            ],
            Leak::DebugPage => &[
                r"You're seeing this error because you have <code>DEBUG = True</code>",
                r"\bDjango Version:",
                r"Werkzeug Debugger|The debugger caught an exception in your WSGI application",
                r"Whoops, looks like something went wrong|\bIlluminate\\[A-Z]\w+\\",
                r"\bSymfony\\Component\\",
                r"Whitelabel Error Page",
                r"Server Error in '[^'\n]*' Application",
                r"Action Controller: Exception caught",
                r"Apache Tomcat/\d",
            ],
            Leak::InternalAddress => &[
                // Private IPv4 with a port, or inside a URL.
                r"\b(?:10\.\d{1,3}|192\.168|172\.(?:1[6-9]|2\d|3[01])\.\d{1,3})\.\d{1,3}\.?\d{0,3}:\d{2,5}\b",
                r"(?i)\b(?:https?|jdbc:\w+|redis|mongodb|amqp)://(?:10\.\d{1,3}|192\.168|172\.(?:1[6-9]|2\d|3[01])\.\d{1,3})\.\d{1,3}",
                // Cluster-internal and intranet host names.
                r"(?i)\b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:svc\.cluster\.local|internal|intranet|corp)(?::\d{2,5})?\b",
                r"(?i)\b(?:localhost|127\.0\.0\.1):\d{2,5}\b",
            ],
        }
    }

    /// The compiled patterns of this kind (one alternation, built once per process).
    fn regex(self) -> &'static Regex {
        static RES: OnceLock<Vec<Regex>> = OnceLock::new();
        let all = RES.get_or_init(|| {
            Leak::ALL
                .iter()
                .map(|l| {
                    let alt = l
                        .patterns()
                        .iter()
                        .map(|p| format!("(?:{p})"))
                        .collect::<Vec<_>>()
                        .join("|");
                    Regex::new(&alt).unwrap_or_else(|e| unreachable!("constant regex: {e}"))
                })
                .collect()
        });
        &all[self as usize]
    }
}

/// The first leak found in `text`, trying the kinds in `kinds` in order.
pub fn detect(text: &str, kinds: &[Leak]) -> Option<Leak> {
    kinds.iter().copied().find(|k| k.regex().is_match(text))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "yes")]
    replace_5xx: bool,
    #[serde(default)]
    detect: Option<Vec<Leak>>,
    #[serde(default = "yes")]
    remove_banners: bool,
    #[serde(default)]
    extra_banners: Vec<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default = "default_limit")]
    limit: usize,
    #[serde(default)]
    over_limit: OverLimitConfig,
}

fn yes() -> bool {
    true
}

fn default_limit() -> usize {
    DEFAULT_LIMIT
}

#[derive(Debug)]
pub struct LeakGuard {
    replace_5xx: bool,
    detect: Vec<Leak>,
    banners: Vec<HeaderName>,
    message: String,
    limit: usize,
    over_limit: OverLimit,
}

/// What the head phase decided for this response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    /// A 5xx: the body is replaced whatever it says.
    Replace,
    /// Inspect the body for leaks.
    Inspect,
    /// Binary: leave it.
    Skip,
}

impl LeakGuard {
    fn error_body(&self, message: Option<&str>, request_id: &str) -> Vec<u8> {
        let error = match message {
            Some(m) => serde_json::json!({ "code": CODE, "message": m, "request_id": request_id }),
            None => serde_json::json!({ "code": CODE, "request_id": request_id }),
        };
        serde_json::to_vec(&serde_json::json!({ "error": error })).unwrap_or_default()
    }
}

/// The error body without message and request id, for a replaced body that must keep a short
/// length.
const SHORT_ERROR: &[u8] = br#"{"error":{"code":"upstream_error"}}"#;

impl Plugin for LeakGuard {
    fn name(&self) -> &'static str {
        NAME
    }

    fn priority(&self) -> i32 {
        PRIORITY
    }

    fn response_body_need(&self) -> BodyNeed {
        BodyNeed::Buffer {
            limit: self.limit,
            over_limit: self.over_limit,
        }
    }

    fn response_body_head(&self, ctx: &mut RequestCtx, status: u16, headers: &mut dyn HeaderEdits) {
        let decision = if status >= 500 && self.replace_5xx {
            // The head leaves now: the replacement's type must be in it.
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Decision::Replace
        } else if self.detect.is_empty()
            || BodyKind::of(headers.get(CONTENT_TYPE.as_str())) == BodyKind::Binary
        {
            Decision::Skip
        } else {
            Decision::Inspect
        };
        ctx.vars.insert(decision);
    }

    /// Only a `5xx` body is always replaced (by a body of its own length and type, so it is
    /// framed chunked); an inspected body keeps its length even when replaced.
    fn response_body_keeps_length(&self, ctx: &RequestCtx, _status: u16) -> bool {
        ctx.vars.get::<Decision>() != Some(&Decision::Replace)
    }

    fn response_body(&self, ctx: &mut RequestCtx, _status: u16, body: &mut Vec<u8>) {
        let decision = ctx
            .vars
            .get::<Decision>()
            .copied()
            .unwrap_or(Decision::Skip);
        let found = match decision {
            Decision::Skip => return,
            Decision::Inspect | Decision::Replace => {
                let text = String::from_utf8_lossy(body);
                detect(&text, &self.detect)
            }
        };
        let class = match (decision, found) {
            (_, Some(leak)) => leak.as_str(),
            (Decision::Replace, None) => "server_error",
            _ => return,
        };
        if ctx.vars.get::<KeptLength>().is_some() {
            // The head went out with the upstream's length: the error takes its place within
            // it, padded with spaces — without its message, then without the request id, when
            // the page was shorter; a page shorter than any error is blanked.
            let len = body.len();
            *body = [
                self.error_body(Some(&self.message), &ctx.request_id),
                self.error_body(None, &ctx.request_id),
                SHORT_ERROR.to_vec(),
            ]
            .into_iter()
            .find(|e| e.len() <= len)
            .unwrap_or_default();
            body.resize(len, b' ');
        } else {
            *body = self.error_body(Some(&self.message), &ctx.request_id);
        }
        ctx.findings.push(Finding {
            plugin: NAME,
            class,
            rule: None,
            location: "response".into(),
            action: FindingAction::Replaced,
            count: 1,
            excerpt: None,
        });
    }

    fn response(&self, _ctx: &RequestCtx, _status: u16, headers: &mut dyn HeaderEdits) {
        for b in &self.banners {
            headers.remove(b.as_str());
        }
    }
}

pub struct Factory;

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        NAME
    }

    fn build(&self, config: &serde_json::Value) -> Result<Arc<dyn Plugin>, SchemaError> {
        let cfg: Config = SchemaError::parse(config)?;
        let detect = match cfg.detect {
            None => Leak::ALL.to_vec(),
            Some(list) => {
                for (i, l) in list.iter().enumerate() {
                    if list[..i].contains(l) {
                        return Err(SchemaError::new(
                            format!("detect[{i}]"),
                            format!("`{}` is listed twice", l.as_str()),
                        ));
                    }
                }
                list
            }
        };
        let mut banners: Vec<HeaderName> = Vec::new();
        if cfg.remove_banners {
            banners.extend(BANNERS.iter().map(|b| HeaderName::from_static(b)));
        }
        for (i, b) in cfg.extra_banners.iter().enumerate() {
            let name = HeaderName::from_bytes(b.trim().as_bytes()).map_err(|_| {
                SchemaError::new(
                    format!("extra_banners[{i}]"),
                    format!("`{b}` is not a valid header name"),
                )
            })?;
            banners.push(name);
        }
        let message = match cfg.message {
            None => DEFAULT_MESSAGE.to_string(),
            Some(m) if m.trim().is_empty() || m.len() > 200 => {
                return Err(SchemaError::new(
                    "message",
                    "must be 1 to 200 bytes of text for the client (no internals)",
                ))
            }
            Some(m) => m,
        };
        Ok(Arc::new(LeakGuard {
            replace_5xx: cfg.replace_5xx,
            detect,
            banners,
            message,
            limit: check_limit(cfg.limit)?,
            over_limit: cfg.over_limit.policy(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct H(http::HeaderMap);
    impl HeaderEdits for H {
        fn get(&self, name: &str) -> Option<&HeaderValue> {
            self.0.get(name)
        }
        fn insert(&mut self, name: HeaderName, value: HeaderValue) {
            self.0.insert(name, value);
        }
        fn remove(&mut self, name: &str) {
            self.0.remove(name);
        }
    }

    fn build(cfg: serde_json::Value) -> Arc<dyn Plugin> {
        Factory.build(&cfg).unwrap()
    }

    /// Head and body phases for one response: (content type sent, body sent, findings).
    fn run(
        p: &Arc<dyn Plugin>,
        status: u16,
        ct: &str,
        body: &str,
    ) -> (String, String, Vec<&'static str>) {
        let mut ctx = RequestCtx {
            request_id: "req-1".into(),
            ..Default::default()
        };
        let mut h = H(http::HeaderMap::new());
        h.0.insert(CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        p.response_body_head(&mut ctx, status, &mut h);
        let mut b = body.as_bytes().to_vec();
        p.response_body(&mut ctx, status, &mut b);
        let ct = h.0[CONTENT_TYPE].to_str().unwrap().to_string();
        (
            ct,
            String::from_utf8(b).unwrap(),
            ctx.findings.iter().map(|f| f.class).collect(),
        )
    }

    const JAVA: &str = "java.lang.NullPointerException: null\n\tat com.foo.Bar.baz(Bar.java:12)\n\tat com.foo.Main.main(Main.java:3)";
    const PYTHON: &str = "Traceback (most recent call last):\n  File \"/srv/app.py\", line 3, in <module>\n    boom()\nZeroDivisionError";
    const DOTNET: &str =
        "System.InvalidOperationException: bad\n   at Foo.Bar.Baz() in C:\\src\\Bar.cs:line 42";
    const GO: &str =
        "panic: runtime error: index out of range\n\ngoroutine 1 [running]:\nmain.main()";
    const MYSQL: &str = "You have an error in your SQL syntax; check the manual that corresponds to your MySQL server version for the right syntax to use near ''1'' at line 1";
    const ORACLE: &str = "ORA-00942: table or view does not exist";
    const PG: &str = "ERROR:  syntax error at or near \"FROM\"\nLINE 1: SELECT FROM";
    const SQLSTATE: &str = "SQLSTATE[42S02]: Base table or view not found";
    const PHP: &str = "<br />\n<b>Warning</b>:  Undefined variable $x in <b>/var/www/html/index.php</b> on line <b>3</b><br />";
    const PHP_CLI: &str =
        "PHP Fatal error:  Uncaught Error: Call to undefined function foo() in /var/www/app.php:7";
    const DJANGO: &str = "<p>You're seeing this error because you have <code>DEBUG = True</code> in your Django settings file.</p>";
    const WERKZEUG: &str = "<title>ZeroDivisionError // Werkzeug Debugger</title>";
    const LARAVEL: &str = "Whoops, looks like something went wrong.";
    const SPRING: &str =
        "<h1>Whitelabel Error Page</h1><p>This application has no explicit mapping for /error</p>";
    const INTERNAL: &str = "{\"msg\":\"connect to 10.2.3.4:3306 refused\"}";
    const K8S: &str = "upstream orders.default.svc.cluster.local:8080 unavailable";

    #[test]
    fn every_known_leak_is_recognised_with_its_class() {
        let all = Leak::ALL;
        for (text, leak) in [
            (JAVA, Leak::StackTrace),
            (PYTHON, Leak::StackTrace),
            (DOTNET, Leak::StackTrace),
            (GO, Leak::StackTrace),
            (MYSQL, Leak::SqlError),
            (ORACLE, Leak::SqlError),
            (PG, Leak::SqlError),
            (SQLSTATE, Leak::SqlError),
            (PHP, Leak::PhpError),
            (PHP_CLI, Leak::PhpError),
            (DJANGO, Leak::DebugPage),
            (WERKZEUG, Leak::DebugPage),
            (LARAVEL, Leak::DebugPage),
            (SPRING, Leak::DebugPage),
            (INTERNAL, Leak::InternalAddress),
            (K8S, Leak::InternalAddress),
        ] {
            assert_eq!(detect(text, &all), Some(leak), "{text}");
        }
    }

    #[test]
    fn ordinary_pages_are_not_leaks() {
        for text in [
            "{\"code\":0,\"data\":{\"ip\":\"10.0.0.1\",\"version\":\"1.2.3.4\"}}",
            "<html><body>办事指南: at the counter (window 3)</body></html>",
            "Error: the permit number is invalid",
            "{\"error\":\"order not found\",\"at\":\"2026-12-04T10:00:00Z\"}",
        ] {
            assert_eq!(detect(text, &Leak::ALL), None, "{text}");
        }
    }

    #[test]
    fn any_5xx_body_is_replaced_by_the_json_error_with_its_content_type() {
        let p = build(json!(null));
        let (ct, body, f) = run(&p, 500, "text/html", "<h1>Internal Server Error</h1>");
        assert_eq!(ct, "application/json");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], CODE);
        assert_eq!(v["error"]["request_id"], "req-1");
        assert_eq!(f, vec!["server_error"]);
        let (_, _, f) = run(&p, 502, "text/plain", JAVA);
        assert_eq!(f, vec!["stack_trace"]);
    }

    #[test]
    fn other_statuses_are_replaced_only_on_a_leak() {
        let p = build(json!({}));
        let (ct, body, f) = run(&p, 200, "text/html", "<p>hello</p>");
        assert_eq!((ct.as_str(), body.as_str()), ("text/html", "<p>hello</p>"));
        assert!(f.is_empty());
        let (_, body, f) = run(&p, 200, "text/html", PHP);
        assert!(
            body.starts_with("{\"error\":{\"code\":\"upstream_error\""),
            "{body}"
        );
        assert_eq!(f, vec!["php_error"]);
        let (_, body, _) = run(&p, 400, "application/json", MYSQL);
        assert!(!body.contains("SQL syntax"));
        // Binary bodies are not inspected.
        let (_, body, f) = run(&p, 200, "application/octet-stream", JAVA);
        assert_eq!(body, JAVA);
        assert!(f.is_empty());
    }

    #[test]
    fn replace_5xx_off_and_detect_subsets() {
        let p = build(json!({"replace_5xx": false, "detect": ["sql_error"]}));
        let (ct, body, _) = run(&p, 500, "text/plain", "plain failure");
        assert_eq!(
            (ct.as_str(), body.as_str()),
            ("text/plain", "plain failure")
        );
        let (_, body, _) = run(&p, 500, "text/plain", JAVA);
        assert_eq!(body, JAVA, "stack traces not selected");
        let (_, _, f) = run(&p, 500, "text/plain", ORACLE);
        assert_eq!(f, vec!["sql_error"]);
    }

    #[test]
    fn banners_are_removed() {
        let p = build(json!({"extra_banners": ["X-Backend"]}));
        let mut h = H(http::HeaderMap::new());
        for n in [
            "server",
            "x-powered-by",
            "x-aspnet-version",
            "x-debug-token",
            "x-backend",
            "x-kept",
        ] {
            h.0.insert(HeaderName::from_static(n), HeaderValue::from_static("v"));
        }
        p.response(&RequestCtx::default(), 200, &mut h);
        let left: Vec<&str> = h.0.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["x-kept"]);
    }

    #[test]
    fn config_errors_name_the_field() {
        let err = |c: serde_json::Value| Factory.build(&c).err().unwrap().to_string();
        assert!(err(json!({"detect": ["stacktrace"]})).starts_with("detect[0]: unknown variant"));
        assert!(err(json!({"detect": ["sql_error", "sql_error"]})).starts_with("detect[1]: "));
        assert!(err(json!({"extra_banners": ["bad header"]})).starts_with("extra_banners[0]: "));
        assert!(err(json!({"message": ""})).starts_with("message: "));
        assert!(err(json!({"limit": 0})).starts_with("limit: "));
        assert!(err(json!({"replace5xx": true})).contains("unknown field `replace5xx`"));
    }
}
