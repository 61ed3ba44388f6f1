//! Templates (compiled into the binary) and the page frame every console page shares.

use std::sync::OnceLock;

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use minijinja::Environment;
use serde_json::{json, Value};

use super::i18n::{self, Lang};
use super::session::Visit;
use super::tables;
use crate::model::Role;

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut e = Environment::new();
        for (name, text) in [
            ("base.html", include_str!("templates/base.html")),
            ("login.html", include_str!("templates/login.html")),
            ("overview.html", include_str!("templates/overview.html")),
            ("table.html", include_str!("templates/table.html")),
            ("service.html", include_str!("templates/service.html")),
            (
                "service_form.html",
                include_str!("templates/service_form.html"),
            ),
            (
                "verification.html",
                include_str!("templates/verification.html"),
            ),
            ("audit.html", include_str!("templates/audit.html")),
            ("message.html", include_str!("templates/message.html")),
            ("exports.html", include_str!("templates/exports.html")),
        ] {
            e.add_template(name, text)
                .unwrap_or_else(|err| panic!("console template {name}: {err}"));
        }
        e
    })
}

/// The signed-in account, as `/v1/auth/me` shows it.
#[derive(Debug, Clone)]
pub struct Me {
    pub username: String,
    pub role: Role,
}

impl Me {
    pub fn from(v: &Value) -> Option<Me> {
        Some(Me {
            username: v["username"].as_str()?.to_string(),
            role: serde_json::from_value(v["role"].clone()).ok()?,
        })
    }
}

/// Renders `template` inside the frame: the words of the visit's language, the account and its
/// navigation, the CSRF token.
pub fn page(
    status: StatusCode,
    template: &str,
    visit: &Visit,
    me: Option<&Me>,
    title: &str,
    active: &str,
    mut ctx: Value,
) -> Response {
    ctx["tr"] = i18n::words(visit.lang);
    ctx["lang"] = json!(visit.lang.code());
    ctx["other_lang"] = json!(match visit.lang {
        Lang::Zh => "en",
        Lang::En => "zh",
    });
    ctx["title"] = json!(title);
    ctx["csrf"] = json!(visit.csrf());
    if let Some(me) = me {
        ctx["user"] = json!({"username": me.username, "role": me.role.as_str()});
        ctx["nav"] = tables::nav(me.role, visit.lang)
            .into_iter()
            .map(|(href, label)| json!({"href": href, "label": label, "active": href == active}))
            .collect();
    }
    match env().get_template(template).and_then(|t| t.render(&ctx)) {
        Ok(html) => {
            let mut r = (status, Html(html)).into_response();
            if let Ok(v) = visit.lang_cookie().parse() {
                r.headers_mut().append(axum::http::header::SET_COOKIE, v);
            }
            r
        }
        Err(e) => {
            tracing::error!(error = %e, template, "console template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "console template failed").into_response()
        }
    }
}

/// A cell of a table: text for any JSON value (times as local time, lists joined).
pub fn cell(key: &str, v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        // Times the API writes as RFC 3339 are shown in Asia/Shanghai.
        Value::String(s) if key == "time" || key.ends_with("_at") => s
            .parse::<jiff::Timestamp>()
            .map(|t| crate::local_time::display(t.as_second()))
            .unwrap_or_else(|_| s.clone()),
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "✓" } else { "" }.to_string(),
        Value::Number(n) => {
            let timeish = key.ends_with("_at") || key == "last_seen" || key == "at";
            match n.as_i64() {
                Some(t) if timeish && t > 1_000_000_000 => crate::local_time::display(t),
                _ => n.to_string(),
            }
        }
        Value::Array(a) => a
            .iter()
            .map(|x| match x {
                Value::Object(_) => cell(key, x),
                other => cell("", other),
            })
            .collect::<Vec<_>>()
            .join(if a.iter().any(Value::is_object) {
                " | "
            } else {
                ", "
            }),
        Value::Object(o) => o
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| format!("{k} {}", cell(k, v)))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_show_local_times_and_readable_lists() {
        // 2026-12-05T00:30:00Z is 08:30 in Asia/Shanghai.
        assert_eq!(
            cell("created_at", &json!(1_796_430_600)),
            "2026-12-05 08:30:00"
        );
        assert_eq!(
            cell("time", &json!("2026-12-05T00:30:00Z")),
            "2026-12-05 08:30:00"
        );
        assert_eq!(cell("port", &json!(8080)), "8080");
        assert_eq!(cell("paths", &json!(["/a", "/b"])), "/a, /b");
        assert_eq!(
            cell(
                "rules",
                &json!([{"destination": "10.0.0.0/8", "port": 443}, {"destination": "h", "port": 80}])
            ),
            "destination 10.0.0.0/8, port 443 | destination h, port 80"
        );
        assert_eq!(cell("x", &Value::Null), "");
    }
}
