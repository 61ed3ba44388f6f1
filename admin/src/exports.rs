//! The compliance reports: the registered interface table (注册接口信息表), the network policy
//! inventory (网络策略清单) and the account-permission list (账户权限配置清单), as JSON or as CSV
//! (`?format=csv`: UTF-8 with a byte-order mark, so Excel shows the Chinese headers correctly).
//!
//! What auditors ask for beyond the lists: who published each interface and when, its rate
//! limits and the network-policy rule that admits its upstream; the services relying on each
//! policy rule; each account's creator, last sign-in and lock state. Every export is itself
//! recorded in the admin audit (`export.<report>`: who took which list, in which format).

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::Params;
use crate::app::AppState;
use crate::authz::{permissions, Action, Principal};
use crate::clock::rfc3339;
use crate::error::{ApiError, ApiResult};
use crate::store;

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Json,
    Csv,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    #[serde(default)]
    format: Format,
}

/// One report: a title, columns (JSON key, CSV header) and rows.
struct Report {
    file: &'static str,
    title: &'static str,
    columns: &'static [(&'static str, &'static str)],
    rows: Vec<Vec<String>>,
}

/// Quotes a CSV field when it needs it (RFC 4180). Fields that a spreadsheet would run as a
/// formula (`=`, `+`, `-`, `@` first) are prefixed with `'`.
pub fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

impl Report {
    fn answer(self, format: Format, now: i64) -> Response {
        match format {
            Format::Json => {
                let items: Vec<Value> = self
                    .rows
                    .iter()
                    .map(|r| {
                        let obj: serde_json::Map<String, Value> = self
                            .columns
                            .iter()
                            .zip(r)
                            .map(|((k, _), v)| (k.to_string(), json!(v)))
                            .collect();
                        Value::Object(obj)
                    })
                    .collect();
                let columns: Vec<Value> = self
                    .columns
                    .iter()
                    .map(|(k, h)| json!({"key": k, "title": h}))
                    .collect();
                Json(json!({
                    "title": self.title,
                    "generated_at": rfc3339(now),
                    "columns": columns,
                    "items": items,
                }))
                .into_response()
            }
            Format::Csv => {
                let mut out = String::from("\u{feff}");
                let header: Vec<String> = self.columns.iter().map(|(_, h)| csv_field(h)).collect();
                out.push_str(&header.join(","));
                out.push_str("\r\n");
                for r in &self.rows {
                    let line: Vec<String> = r.iter().map(|v| csv_field(v)).collect();
                    out.push_str(&line.join(","));
                    out.push_str("\r\n");
                }
                let mut resp = (StatusCode::OK, out).into_response();
                let h = resp.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/csv; charset=utf-8"),
                );
                if let Ok(v) = HeaderValue::from_str(&format!(
                    "attachment; filename=\"{}-{}.csv\"",
                    self.file,
                    &rfc3339(now)[..10]
                )) {
                    h.insert(header::CONTENT_DISPOSITION, v);
                }
                resp
            }
        }
    }
}

/// Records who exported which report (and how many rows) in the admin audit.
async fn record_export(
    app: &AppState,
    p: &Principal,
    report: &str,
    format: Format,
    rows: usize,
) -> ApiResult<()> {
    let w = crate::commit::begin_write(app).await?;
    w.finish(
        &crate::commit::Actor::from(p),
        &format!("export.{report}"),
        crate::commit::AuditTarget {
            kind: "export".into(),
            id: report.to_string(),
            agency_id: p.own_agency().map(str::to_string),
            after: Some(json!({
                "format": match format { Format::Json => "json", Format::Csv => "csv" },
                "rows": rows,
            })),
            ..Default::default()
        },
    )
    .await
}

/// `(who, when)` of the latest `service.publish` of a service, from the admin audit.
async fn published(app: &AppState, service_id: &str) -> ApiResult<(String, String)> {
    let rows = store::audit_query(
        &app.store.pool,
        &[
            ("action = ?", store::Bind::Text("service.publish".into())),
            ("resource_id = ?", store::Bind::Text(service_id.to_string())),
        ],
        1,
    )
    .await?;
    Ok(rows
        .first()
        .map(|r| (r.actor.clone(), rfc3339(r.at)))
        .unwrap_or_default())
}

pub async fn interfaces(
    State(app): State<AppState>,
    p: Principal,
    Params(q): Params<ExportQuery>,
) -> ApiResult<Response> {
    p.authorize(Action::ExportInterfaces)?;
    let s = crate::commit::snapshot(&app).await?;
    let mut rows = Vec::new();
    for svc in s.services.iter().filter(|x| p.sees(Some(&x.agency_id))) {
        let agency = s.agency(&svc.agency_id);
        let scheme = match svc.upstream.scheme {
            fenfa_config::model::Scheme::Http => "http",
            fenfa_config::model::Scheme::Https => "https",
        };
        let upstream: Vec<String> = svc
            .upstream
            .targets
            .iter()
            .map(|t| format!("{scheme}://{}", t.addr))
            .collect();
        let channels: Vec<&str> = svc.channels.iter().map(|c| c.as_str()).collect();
        let (published_by, published_at) = published(&app, &svc.id).await?;
        let limits: Vec<String> = s
            .limits
            .iter()
            .filter(|l| l.service_id == svc.id)
            .map(|l| l.limits.to_string())
            .collect();
        let admitted: Vec<String> = crate::policy::admitting(&s, svc)
            .into_iter()
            .map(|(pol, i)| {
                let r = &pol.rules[i];
                format!(
                    "{} ({} {}:{})",
                    pol.name,
                    r.protocol.as_str(),
                    r.destination,
                    r.port.0
                )
            })
            .collect();
        for r in s.routes.iter().filter(|r| r.service_id == svc.id) {
            rows.push(vec![
                agency.map(|a| a.name.to_string()).unwrap_or_default(),
                agency
                    .map(|a| a.title.as_str().to_string())
                    .unwrap_or_default(),
                svc.name.to_string(),
                svc.title.as_str().to_string(),
                svc.kind.as_str().to_string(),
                svc.status.as_str().to_string(),
                channels.join(" "),
                svc.apps.join(" "),
                r.name.to_string(),
                r.description
                    .as_ref()
                    .map(|d| d.as_str().to_string())
                    .unwrap_or_default(),
                if r.methods.is_empty() {
                    "*".to_string()
                } else {
                    r.methods.join(" ")
                },
                r.paths.join(" "),
                r.hosts.join(" "),
                upstream.join(" "),
                admitted.join("; "),
                limits.join("; "),
                published_by.clone(),
                published_at.clone(),
                rfc3339(r.updated_at.max(svc.updated_at)),
            ]);
        }
    }
    let report = Report {
        file: "interfaces",
        title: "注册接口信息表",
        columns: &[
            ("agency", "委办局标识"),
            ("agency_title", "委办局名称"),
            ("service", "服务标识"),
            ("service_title", "服务名称"),
            ("kind", "服务类型"),
            ("status", "状态"),
            ("channels", "发布渠道"),
            ("apps", "允许应用"),
            ("route", "接口标识"),
            ("description", "接口说明"),
            ("methods", "请求方法"),
            ("paths", "路径"),
            ("hosts", "域名"),
            ("upstream", "上游地址"),
            ("policy", "准入网络策略"),
            ("limits", "限流"),
            ("published_by", "发布人"),
            ("published_at", "发布时间"),
            ("updated_at", "更新时间"),
        ],
        rows,
    };
    record_export(&app, &p, "interfaces", q.format, report.rows.len()).await?;
    Ok(report.answer(q.format, app.now()))
}

pub async fn policies(
    State(app): State<AppState>,
    p: Principal,
    Params(q): Params<ExportQuery>,
) -> ApiResult<Response> {
    p.authorize(Action::ExportPolicies)?;
    let s = crate::commit::snapshot(&app).await?;
    let mut rows = Vec::new();
    for pol in &s.policies {
        let agency = s.agency(&pol.agency_id);
        for (i, rule) in pol.rules.iter().enumerate() {
            let relying: Vec<String> = s
                .services
                .iter()
                .filter(|svc| {
                    crate::policy::admitting(&s, svc)
                        .iter()
                        .any(|(q, j)| q.id == pol.id && *j == i)
                })
                .map(|svc| svc.name.to_string())
                .collect();
            rows.push(vec![
                agency.map(|a| a.name.to_string()).unwrap_or_default(),
                agency
                    .map(|a| a.title.as_str().to_string())
                    .unwrap_or_default(),
                pol.name.to_string(),
                pol.description
                    .as_ref()
                    .map(|d| d.as_str().to_string())
                    .unwrap_or_default(),
                rule.destination.to_string(),
                rule.port.0.to_string(),
                rule.protocol.as_str().to_string(),
                relying.join(" "),
                rfc3339(pol.updated_at),
            ]);
        }
    }
    let report = Report {
        file: "network-policies",
        title: "网络策略清单",
        columns: &[
            ("agency", "委办局标识"),
            ("agency_title", "委办局名称"),
            ("policy", "策略名称"),
            ("description", "说明"),
            ("destination", "目的地址"),
            ("port", "端口"),
            ("protocol", "协议"),
            ("services", "依赖服务"),
            ("updated_at", "更新时间"),
        ],
        rows,
    };
    record_export(&app, &p, "network-policies", q.format, report.rows.len()).await?;
    Ok(report.answer(q.format, app.now()))
}

pub async fn accounts(
    State(app): State<AppState>,
    p: Principal,
    Params(q): Params<ExportQuery>,
) -> ApiResult<Response> {
    p.authorize(Action::ExportAccounts)?;
    let s = crate::commit::snapshot(&app).await?;
    let now = app.now();
    let users = store::list_users(&app.store.pool)
        .await
        .map_err(ApiError::from)?;
    let rows = users
        .iter()
        .map(|u| {
            let agency = u.agency_id.as_deref().and_then(|a| s.agency(a));
            let state = if u.disabled {
                "停用"
            } else if u.locked_until > now {
                "锁定"
            } else {
                "启用"
            };
            vec![
                u.username.clone(),
                u.role.as_str().to_string(),
                u.role.label_zh().to_string(),
                agency.map(|a| a.name.to_string()).unwrap_or_default(),
                agency
                    .map(|a| a.title.as_str().to_string())
                    .unwrap_or_default(),
                permissions(u.role).join(" "),
                if u.sealed_totp.is_some() {
                    "是"
                } else {
                    "否"
                }
                .to_string(),
                state.to_string(),
                if u.locked_until > now { "是" } else { "否" }.to_string(),
                if u.role_pending {
                    "待授予"
                } else {
                    "已授予"
                }
                .to_string(),
                u.created_by.clone().unwrap_or_default(),
                rfc3339(u.created_at),
                if u.last_login > 0 {
                    rfc3339(u.last_login)
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    let report = Report {
        file: "accounts",
        title: "账户权限配置清单",
        columns: &[
            ("username", "账户"),
            ("role", "角色标识"),
            ("role_title", "角色"),
            ("agency", "所属委办局标识"),
            ("agency_title", "所属委办局"),
            ("permissions", "权限"),
            ("totp", "双因素认证"),
            ("state", "状态"),
            ("locked", "锁定"),
            ("role_granted", "角色授予"),
            ("created_by", "创建人"),
            ("created_at", "创建时间"),
            ("last_login", "最近登录"),
        ],
        rows,
    };
    record_export(&app, &p, "accounts", q.format, report.rows.len()).await?;
    Ok(report.answer(q.format, now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=1+1"), "'=1+1");
        assert_eq!(csv_field("注册接口"), "注册接口");
    }
}
