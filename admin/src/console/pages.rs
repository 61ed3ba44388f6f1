//! The console's pages. Each reads and changes through the API ([`Bridge::call`]) as the
//! signed-in account; what the API refuses, the page shows refused.

use axum::extract::{Path, Query, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::{Answer, Bridge};
use super::charts;
use super::i18n::word;
use super::render::{cell, page, Me};
use super::session::Visit;
use super::tables;
use crate::authz::{allowed, Action};
use crate::model::Role;

type Page = Result<Response, Response>;

const PAGE_SIZE: usize = 20;

fn may(me: &Me, a: Action) -> bool {
    allowed(a).contains(&me.role)
}

fn to_login() -> Response {
    Redirect::to("/console/login").into_response()
}

fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}

/// A page with one message (refusals, errors).
fn message(v: &Visit, me: Option<&Me>, status: StatusCode, title: &str, text: &str) -> Response {
    page(
        status,
        "message.html",
        v,
        me,
        title,
        "",
        json!({"message": text}),
    )
}

/// The signed-in account, or the way to the sign-in page.
async fn me(b: &Bridge, v: &Visit) -> Result<Me, Response> {
    let Some(token) = v.token.as_deref() else {
        return Err(to_login());
    };
    let a = b
        .call(Some(token), v.peer, Method::GET, "/v1/auth/me", None)
        .await;
    match a.status {
        s if s.is_success() => Me::from(&a.body).ok_or_else(to_login),
        _ => Err(to_login()),
    }
}

/// What to show for an API refusal of a page's read.
fn refused(v: &Visit, me: &Me, a: &Answer) -> Response {
    match a.status.as_u16() {
        401 => to_login(),
        403 => message(
            v,
            Some(me),
            StatusCode::FORBIDDEN,
            &word(v.lang, "forbidden"),
            &a.message(),
        ),
        404 => message(
            v,
            Some(me),
            StatusCode::NOT_FOUND,
            &word(v.lang, "not_found"),
            &a.message(),
        ),
        _ => message(v, Some(me), a.status, &word(v.lang, "error"), &a.message()),
    }
}

async fn read(b: &Bridge, v: &Visit, me: &Me, uri: &str) -> Result<Value, Response> {
    let a = b
        .call(v.token.as_deref(), v.peer, Method::GET, uri, None)
        .await;
    if a.ok() {
        Ok(a.body)
    } else {
        Err(refused(v, me, &a))
    }
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("assets/console.css"),
    )
        .into_response()
}

pub async fn not_found(State(b): State<Bridge>, v: Visit) -> Response {
    let me = me(&b, &v).await.ok();
    message(
        &v,
        me.as_ref(),
        StatusCode::NOT_FOUND,
        &word(v.lang, "not_found"),
        "",
    )
}

// ---- sign-in -------------------------------------------------------------------------------

pub async fn login_form(State(b): State<Bridge>, v: Visit) -> Response {
    if me(&b, &v).await.is_ok() {
        return see_other("/console");
    }
    page(
        StatusCode::OK,
        "login.html",
        &v,
        None,
        &word(v.lang, "sign_in"),
        "",
        json!({}),
    )
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
    #[serde(default)]
    totp: String,
}

pub async fn login(State(b): State<Bridge>, v: Visit, Form(f): Form<LoginForm>) -> Response {
    if !v.same_origin() {
        return message(
            &v,
            None,
            StatusCode::FORBIDDEN,
            &word(v.lang, "forbidden"),
            "cross-origin sign-in refused",
        );
    }
    let totp = f.totp.trim();
    let body = json!({
        "username": f.username,
        "password": f.password,
        "totp": (!totp.is_empty()).then_some(totp),
    });
    let a = b
        .call(None, v.peer, Method::POST, "/v1/auth/login", Some(&body))
        .await;
    match a.body["token"].as_str() {
        Some(token) if a.ok() => {
            let mut r = see_other("/console");
            if let Ok(c) = v.session_cookie(Some(token)).parse() {
                r.headers_mut().append(header::SET_COOKIE, c);
            }
            r
        }
        _ => {
            let text = if a.ok() {
                // A first sign-in of an admin enrols TOTP through the API (docs/admin.md).
                "enrol the second factor first (POST /v1/auth/login, docs/admin.md)".to_string()
            } else {
                a.message()
            };
            page(
                if a.ok() {
                    StatusCode::CONFLICT
                } else {
                    a.status
                },
                "login.html",
                &v,
                None,
                &word(v.lang, "sign_in"),
                "",
                json!({"flash": {"kind": "error", "text": text}}),
            )
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(rename = "_csrf", default)]
    csrf: Option<String>,
}

fn csrf_refused(v: &Visit, me: Option<&Me>) -> Response {
    message(
        v,
        me,
        StatusCode::FORBIDDEN,
        &word(v.lang, "forbidden"),
        "the change did not come from this console page (CSRF check failed)",
    )
}

pub async fn logout(State(b): State<Bridge>, v: Visit, Form(f): Form<CsrfForm>) -> Response {
    if !v.may_change(f.csrf.as_deref()) {
        return csrf_refused(&v, None);
    }
    b.call(
        v.token.as_deref(),
        v.peer,
        Method::POST,
        "/v1/auth/logout",
        None,
    )
    .await;
    let mut r = see_other("/console/login");
    if let Ok(c) = v.session_cookie(None).parse() {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}

// ---- overview ------------------------------------------------------------------------------

pub async fn overview(State(b): State<Bridge>, v: Visit) -> Page {
    let me = me(&b, &v).await?;
    let lang = v.lang;
    let mut cards = Vec::new();
    let mut charts_svg = Vec::new();
    let health = b.call(None, v.peer, Method::GET, "/healthz", None).await;
    cards.push(
        json!({"label": word(lang, "config_version"), "value": health.body["config_version"]}),
    );
    if may(&me, Action::ServiceRead) {
        let s = read(&b, &v, &me, "/v1/services").await?;
        let mut by: std::collections::BTreeMap<String, f64> = Default::default();
        for x in s["items"].as_array().into_iter().flatten() {
            *by.entry(x["status"].as_str().unwrap_or("").to_string())
                .or_default() += 1.0;
        }
        charts_svg.push(charts::bars(
            &word(lang, "services_by_status"),
            &by.into_iter().collect::<Vec<_>>(),
        ));
    }
    if may(&me, Action::AlertRead) {
        let a = read(&b, &v, &me, "/v1/alerts?state=open").await?;
        cards.push(json!({"label": word(lang, "open_alerts"), "value": a["items"].as_array().map_or(0, Vec::len)}));
    }
    if may(&me, Action::InspectionRead) {
        let f = read(&b, &v, &me, "/v1/faults?state=open").await?;
        cards.push(json!({"label": word(lang, "open_faults"), "value": f["items"].as_array().map_or(0, Vec::len)}));
        let runs = read(&b, &v, &me, "/v1/inspections?limit=1").await?;
        if let Some(id) = runs["items"][0]["id"].as_str() {
            let run = read(&b, &v, &me, &format!("/v1/inspections/{id}")).await?;
            let mut req = Vec::new();
            let mut p99 = Vec::new();
            for s in run["services"].as_array().into_iter().flatten() {
                let name = s["service"].as_str().unwrap_or("").to_string();
                let t = &s["traffic"];
                req.push((
                    name.clone(),
                    t["requests"]
                        .as_f64()
                        .or(t["total"].as_f64())
                        .unwrap_or(0.0),
                ));
                p99.push((name, t["p99_ms"].as_f64().unwrap_or(0.0)));
            }
            charts_svg.push(charts::bars(
                &format!("{} · {}", word(lang, "traffic"), word(lang, "requests")),
                &req,
            ));
            charts_svg.push(charts::bars(
                &format!("{} · p99 ms", word(lang, "traffic")),
                &p99,
            ));
        }
    }
    if may(&me, Action::ReportRead) {
        let u = read(&b, &v, &me, "/v1/active-users").await?;
        let mut per = Vec::new();
        for c in ["wechat", "alipay", "baidu", "all"] {
            per.push((c.to_string(), u["daily"][c].as_f64().unwrap_or(0.0)));
        }
        cards.push(json!({"label": word(lang, "active_users"), "value": u["daily"]["all"]}));
        charts_svg.push(charts::bars(&word(lang, "active_users"), &per));
    }
    Ok(page(
        StatusCode::OK,
        "overview.html",
        &v,
        Some(&me),
        &word(lang, "overview"),
        "/console",
        json!({"cards": cards, "charts": charts_svg}),
    ))
}

// ---- tables --------------------------------------------------------------------------------

pub async fn table(
    State(b): State<Bridge>,
    v: Visit,
    Path(slug): Path<String>,
    Query(q): Query<std::collections::BTreeMap<String, String>>,
) -> Page {
    let me = me(&b, &v).await?;
    render_table(&b, &v, &me, &slug, &q, StatusCode::OK, None, None).await
}

type Params = std::collections::BTreeMap<String, String>;

/// The "new" form of a table, for the templates (`None` when the role may not use it).
async fn form_of(
    b: &Bridge,
    v: &Visit,
    me: &Me,
    t: &tables::Table,
    open: bool,
) -> Result<Value, Response> {
    let Some(c) = t.create.as_ref().filter(|c| may(me, c.action)) else {
        return Ok(Value::Null);
    };
    let mut fields = Vec::new();
    for f in c.fields {
        let options: Option<Vec<Value>> = match f.kind {
            tables::Kind::Choice(list) => Some(
                list.iter()
                    .map(|o| json!({"value": o, "label": o}))
                    .collect(),
            ),
            tables::Kind::Agency => {
                let a = read(b, v, me, "/v1/agencies").await?;
                Some(
                    a["items"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|x| json!({"value": x["id"], "label": x["title"]}))
                        .collect(),
                )
            }
            _ => None,
        };
        let ty = match f.kind {
            tables::Kind::Number => "number",
            tables::Kind::Password => "password",
            tables::Kind::Json => "textarea",
            _ => "text",
        };
        fields.push(json!({
            "name": f.name, "label": v.lang.pick(f.zh, f.en), "options": options, "type": ty,
            "required": !matches!(f.kind, tables::Kind::Optional),
        }));
    }
    let title = if c.fields.is_empty() {
        format!(
            "{} · {}",
            v.lang.pick("立即执行", "Run now"),
            t.title(v.lang)
        )
    } else {
        format!("{} · {}", v.lang.pick("新建", "New"), t.title(v.lang))
    };
    Ok(json!({"title": title, "fields": fields, "open": open}))
}

#[allow(clippy::too_many_arguments)]
async fn render_table(
    b: &Bridge,
    v: &Visit,
    me: &Me,
    slug: &str,
    q: &Params,
    status: StatusCode,
    flash: Option<Value>,
    shown: Option<String>,
) -> Page {
    let Some(t) = tables::find(slug) else {
        return Ok(message(
            v,
            Some(me),
            StatusCode::NOT_FOUND,
            &word(v.lang, "not_found"),
            "",
        ));
    };
    let mut uri = t.api.to_string();
    let mut sep = '?';
    let mut filters = Vec::new();
    for f in t.filters {
        let val = q
            .get(*f)
            .map(String::as_str)
            .unwrap_or("")
            .trim()
            .to_string();
        if !val.is_empty() {
            uri.push_str(&format!("{sep}{f}={}", enc(&val)));
            sep = '&';
        }
        filters.push(json!({"name": f, "value": val}));
    }
    let body = read(b, v, me, &uri).await?;
    // Ids of agencies and services are shown by their names.
    let mut names: std::collections::HashMap<String, String> = Default::default();
    for (col, api, action, label) in [
        ("agency_id", "/v1/agencies", Action::AgencyRead, "title"),
        ("service_id", "/v1/services", Action::ServiceRead, "name"),
    ] {
        if t.columns.iter().any(|(k, _, _)| *k == col) && may(me, action) {
            for x in read(b, v, me, api).await?["items"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if let (Some(id), Some(n)) = (x["id"].as_str(), x[label].as_str()) {
                    names.insert(id.to_string(), n.to_string());
                }
            }
        }
    }
    let needle = q
        .get("q")
        .map(|s| s.trim().to_lowercase())
        .unwrap_or_default();
    let actions: Vec<&tables::RowAction> =
        t.row_actions.iter().filter(|a| may(me, a.action)).collect();
    let rows: Vec<Value> = body["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| {
            let cells: Vec<String> = t
                .columns
                .iter()
                .map(|(k, _, _)| {
                    let c = cell(k, &item[*k]);
                    names.get(&c).cloned().unwrap_or(c)
                })
                .collect();
            if !needle.is_empty() && !cells.iter().any(|c| c.to_lowercase().contains(&needle)) {
                return None;
            }
            let link = t.link.map(|l| {
                let mut l = l.to_string();
                for key in ["id", "service_id"] {
                    l = l.replace(&format!("{{{key}}}"), item[key].as_str().unwrap_or(""));
                }
                l
            });
            let row_actions: Vec<Value> = actions
                .iter()
                .filter(|a| (a.when)(item))
                .map(|a| json!({"step": a.step, "label": v.lang.pick(a.zh, a.en), "note": a.put.is_none()}))
                .collect();
            Some(json!({"cells": cells, "link": link, "id": item["id"], "actions": row_actions}))
        })
        .collect();
    let total = rows.len();
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let page_no = q
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .clamp(1, pages);
    let shown_rows: Vec<Value> = rows
        .into_iter()
        .skip((page_no - 1) * PAGE_SIZE)
        .take(PAGE_SIZE)
        .collect();
    let link_to = |n: usize| {
        let mut params: Vec<String> = q
            .iter()
            .filter(|(k, _)| k.as_str() != "page" && k.as_str() != "lang")
            .map(|(k, val)| format!("{}={}", enc(k), enc(val)))
            .collect();
        params.push(format!("page={n}"));
        format!("/console/t/{slug}?{}", params.join("&"))
    };
    let headers: Vec<&str> = t
        .columns
        .iter()
        .map(|(_, zh, en)| v.lang.pick(zh, en))
        .collect();
    let new_link = (t.slug == "services" && may(me, Action::ServiceWrite)).then(
        || json!({"href": "/console/services/new", "label": word(v.lang, "register_service")}),
    );
    let form = form_of(b, v, me, t, flash.is_some()).await?;
    let running = b
        .running
        .lock()
        .map(|r| r.contains(&format!("table:{slug}")))
        .unwrap_or(false);
    Ok(page(
        status,
        "table.html",
        v,
        Some(me),
        t.title(v.lang),
        &format!("/console/t/{slug}"),
        json!({
            "slug": slug, "headers": headers, "rows": shown_rows, "total": total, "page": page_no, "pages": pages,
            "prev": (page_no > 1).then(|| link_to(page_no - 1)),
            "next": (page_no < pages).then(|| link_to(page_no + 1)),
            "q": q.get("q").cloned().unwrap_or_default(), "filters": filters,
            "new_link": new_link, "form": form, "has_actions": !actions.is_empty(),
            "flash": flash, "shown": shown,
            "running": running.then(|| v.lang.pick("正在生成…", "Generating…")),
            "refresh": running.then_some(2),
        }),
    ))
}

/// `POST /console/t/{slug}/new`: the table's "new" form, through the API.
pub async fn table_create(
    State(b): State<Bridge>,
    v: Visit,
    Path(slug): Path<String>,
    Form(f): Form<Params>,
) -> Page {
    if !v.may_change(f.get("_csrf").map(String::as_str)) {
        return Err(csrf_refused(&v, None));
    }
    let me = me(&b, &v).await?;
    let Some(c) = tables::find(&slug).and_then(|t| t.create.as_ref().map(|c| (t, c))) else {
        return Ok(message(
            &v,
            Some(&me),
            StatusCode::NOT_FOUND,
            &word(v.lang, "not_found"),
            "",
        ));
    };
    let (t, c) = c;
    let body = (c.build)(&f);
    if matches!(t.slug, "reports" | "inspections") {
        // A long operation: it runs on, the list shows it in progress until it is done.
        let key = format!("table:{slug}");
        if b.running
            .lock()
            .map(|mut r| r.insert(key.clone()))
            .unwrap_or(false)
        {
            let (b2, token, peer) = (b.clone(), v.token.clone(), v.peer);
            tokio::spawn(async move {
                let a = b2
                    .call(token.as_deref(), peer, Method::POST, t.api, Some(&body))
                    .await;
                if !a.ok() {
                    tracing::warn!(status = %a.status, error = %a.message(), "a console background operation failed");
                }
                if let Ok(mut r) = b2.running.lock() {
                    r.remove(&key);
                }
            });
        }
        return Ok(see_other(&format!("/console/t/{slug}")));
    }
    let a = b
        .call(v.token.as_deref(), v.peer, Method::POST, t.api, Some(&body))
        .await;
    if matches!(a.status.as_u16(), 401 | 403) {
        return Err(refused(&v, &me, &a));
    }
    let none = Params::new();
    if !a.ok() {
        let flash = json!({"kind": "error", "text": a.message()});
        return render_table(&b, &v, &me, &slug, &none, a.status, Some(flash), None).await;
    }
    // A secret the API shows once (a node token, a signing key's secret) is shown here once.
    let once = ["token", "secret"].iter().find_map(|k| {
        a.body[*k].as_str().map(|x| {
            format!(
                "{}: {x}",
                v.lang
                    .pick("仅显示一次，请妥善保存", "shown once, keep it now")
            )
        })
    });
    if once.is_some() {
        return render_table(&b, &v, &me, &slug, &none, StatusCode::CREATED, None, once).await;
    }
    Ok(see_other(&format!("/console/t/{slug}")))
}

/// `POST /console/t/{slug}/{id}/{step}`: a row's button (acknowledge, resolve, close) with a
/// note, through the API.
pub async fn table_step(
    State(b): State<Bridge>,
    v: Visit,
    Path((slug, id, step)): Path<(String, String, String)>,
    Form(f): Form<Params>,
) -> Page {
    if !v.may_change(f.get("_csrf").map(String::as_str)) {
        return Err(csrf_refused(&v, None));
    }
    let me = me(&b, &v).await?;
    let found = tables::find(&slug).and_then(|t| {
        t.row_actions
            .iter()
            .find(|a| a.step == step)
            .map(|a| (t, a))
    });
    let Some((t, action)) = found else {
        return Ok(message(
            &v,
            Some(&me),
            StatusCode::NOT_FOUND,
            &word(v.lang, "not_found"),
            "",
        ));
    };
    let a = match action.put {
        Some(build) => {
            let uri = format!("{}/{}", t.api, enc(&id));
            let row = read(&b, &v, &me, &uri).await?;
            b.call(
                v.token.as_deref(),
                v.peer,
                Method::PUT,
                &uri,
                Some(&build(&row)),
            )
            .await
        }
        None => {
            let uri = format!("{}/{}/{step}", t.api, enc(&id));
            let note = f.get("note").cloned().unwrap_or_default();
            b.call(
                v.token.as_deref(),
                v.peer,
                Method::POST,
                &uri,
                Some(&json!({"note": note})),
            )
            .await
        }
    };
    if a.ok() {
        return Ok(see_other(&format!("/console/t/{slug}")));
    }
    if matches!(a.status.as_u16(), 401 | 403 | 404) {
        return Err(refused(&v, &me, &a));
    }
    let flash = json!({"kind": "error", "text": a.message()});
    render_table(
        &b,
        &v,
        &me,
        &slug,
        &Params::new(),
        a.status,
        Some(flash),
        None,
    )
    .await
}

const EXPORTS: &[(&str, Action, &str, &str)] = &[
    (
        "interfaces",
        Action::ExportInterfaces,
        "注册接口信息表",
        "Registered interfaces",
    ),
    (
        "network-policies",
        Action::ExportPolicies,
        "网络策略清单",
        "Network policy inventory",
    ),
    (
        "accounts",
        Action::ExportAccounts,
        "账户权限配置清单",
        "Accounts and permissions",
    ),
];

pub async fn exports(State(b): State<Bridge>, v: Visit) -> Page {
    let me = me(&b, &v).await?;
    let list: Vec<Value> = EXPORTS
        .iter()
        .filter(|(_, a, _, _)| may(&me, *a))
        .map(|(n, _, zh, en)| json!({"name": n, "title": v.lang.pick(zh, en)}))
        .collect();
    Ok(page(
        StatusCode::OK,
        "exports.html",
        &v,
        Some(&me),
        v.lang.pick("导出", "Exports"),
        "/console/exports",
        json!({"exports": list}),
    ))
}

/// `/console/exports/{name}?format=csv|json`: the API's export, passed on.
pub async fn export(
    State(b): State<Bridge>,
    v: Visit,
    Path(name): Path<String>,
    Query(q): Query<Params>,
) -> Page {
    let me = me(&b, &v).await?;
    if !EXPORTS.iter().any(|(n, _, _, _)| *n == name) {
        return Ok(message(
            &v,
            Some(&me),
            StatusCode::NOT_FOUND,
            &word(v.lang, "not_found"),
            "",
        ));
    }
    let format = if q.get("format").map(String::as_str) == Some("json") {
        "json"
    } else {
        "csv"
    };
    let a = b
        .call(
            v.token.as_deref(),
            v.peer,
            Method::GET,
            &format!("/v1/exports/{name}?format={format}"),
            None,
        )
        .await;
    if !a.ok() {
        return Err(refused(&v, &me, &a));
    }
    let ct = a.content_type.clone().unwrap_or_else(|| "text/csv".into());
    let mut r = ([(header::CONTENT_TYPE, ct)], a.raw).into_response();
    if format == "csv" {
        if let Ok(h) = format!("attachment; filename=\"{name}.csv\"").parse() {
            r.headers_mut().insert(header::CONTENT_DISPOSITION, h);
        }
    }
    Ok(r)
}

/// A report's own page: its inline styles and SVG, nothing loaded, no script.
const REPORT_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// `/console/reports/{id}?format=html|csv|json`: the API's download, passed on.
pub async fn report(
    State(b): State<Bridge>,
    v: Visit,
    Path(id): Path<String>,
    Query(q): Query<std::collections::BTreeMap<String, String>>,
) -> Page {
    let me = me(&b, &v).await?;
    let format = match q.get("format").map(String::as_str) {
        Some("csv") => "csv",
        Some("json") => "json",
        _ => "html",
    };
    let a = b
        .call(
            v.token.as_deref(),
            v.peer,
            Method::GET,
            &format!("/v1/reports/{}?format={format}", enc(&id)),
            None,
        )
        .await;
    if !a.ok() {
        return Err(refused(&v, &me, &a));
    }
    let ct = a
        .content_type
        .clone()
        .unwrap_or_else(|| "application/octet-stream".into());
    Ok((
        [
            (header::CONTENT_TYPE, ct),
            (header::CONTENT_SECURITY_POLICY, REPORT_CSP.to_string()),
        ],
        a.raw,
    )
        .into_response())
}

// ---- services ------------------------------------------------------------------------------

pub async fn service_form(State(b): State<Bridge>, v: Visit) -> Page {
    let me = me(&b, &v).await?;
    render_service_form(&b, &v, &me, StatusCode::OK, None).await
}

async fn render_service_form(
    b: &Bridge,
    v: &Visit,
    me: &Me,
    status: StatusCode,
    error: Option<String>,
) -> Page {
    render_form(b, v, me, status, error, None).await
}

/// The service form: a new service, or `svc` to edit.
async fn render_form(
    b: &Bridge,
    v: &Visit,
    me: &Me,
    status: StatusCode,
    error: Option<String>,
    svc: Option<&Value>,
) -> Page {
    let agencies = if me.role == Role::AgencyOperator {
        Vec::new()
    } else {
        read(b, v, me, "/v1/agencies").await?["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let (title, action) = match svc {
        Some(x) => (
            v.lang.pick("修改服务", "Edit the service").to_string(),
            format!(
                "/console/services/{}/edit",
                enc(x["id"].as_str().unwrap_or(""))
            ),
        ),
        None => (
            word(v.lang, "register_service"),
            "/console/services/new".to_string(),
        ),
    };
    let targets = svc
        .map(|x| {
            x["upstream"]["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["addr"].as_str())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    Ok(page(
        status,
        "service_form.html",
        v,
        Some(me),
        &title,
        "/console/t/services",
        json!({"agencies": agencies, "svc": svc, "action": action, "targets": targets,
               "flash": error.map(|e| json!({"kind": "error", "text": e}))}),
    ))
}

pub async fn service_edit_form(State(b): State<Bridge>, v: Visit, Path(id): Path<String>) -> Page {
    let me = me(&b, &v).await?;
    let svc = read(&b, &v, &me, &format!("/v1/services/{}", enc(&id))).await?;
    render_form(&b, &v, &me, StatusCode::OK, None, Some(&svc)).await
}

/// `POST /console/services/{id}/edit`: the form's fields over the service as it is (the rest of
/// its upstream — timeouts, TLS, balancing — is kept), through `PUT /v1/services/{id}`.
pub async fn service_edit(
    State(b): State<Bridge>,
    v: Visit,
    Path(id): Path<String>,
    Form(f): Form<ServiceForm>,
) -> Page {
    if !v.may_change(f.csrf.as_deref()) {
        return Err(csrf_refused(&v, None));
    }
    let me = me(&b, &v).await?;
    let uri = format!("/v1/services/{}", enc(&id));
    let svc = read(&b, &v, &me, &uri).await?;
    let mut upstream = svc["upstream"].clone();
    upstream["targets"] = Value::Array(
        words_of(&f.upstream)
            .into_iter()
            .map(|addr| {
                // A target kept keeps its weight.
                svc["upstream"]["targets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|t| t["addr"] == addr.as_str())
                    .cloned()
                    .unwrap_or_else(|| json!({"addr": addr}))
            })
            .collect(),
    );
    let body = json!({
        "agency_id": f.agency_id.clone().filter(|a| !a.is_empty()).map(Value::from).unwrap_or(svc["agency_id"].clone()),
        "name": f.name.trim(),
        "title": f.title.trim(),
        "kind": f.kind,
        "description": svc["description"],
        "upstream": upstream,
        "capacity_rps": capacity(&f),
        "masking": if f.masking.is_some() { if svc["masking"].is_null() { json!({}) } else { svc["masking"].clone() } } else { Value::Null },
    });
    let a = b
        .call(v.token.as_deref(), v.peer, Method::PUT, &uri, Some(&body))
        .await;
    if a.ok() {
        return Ok(see_other(&format!("/console/services/{}", enc(&id))));
    }
    if matches!(a.status.as_u16(), 401 | 403) {
        return Err(refused(&v, &me, &a));
    }
    render_form(&b, &v, &me, a.status, Some(a.message()), Some(&svc)).await
}

fn capacity(f: &ServiceForm) -> Option<Value> {
    f.capacity_rps
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| {
            c.parse::<u64>()
                .map(Value::from)
                .unwrap_or_else(|_| json!(c))
        })
}

#[derive(Debug, Deserialize)]
pub struct ServiceForm {
    #[serde(rename = "_csrf", default)]
    csrf: Option<String>,
    #[serde(default)]
    agency_id: Option<String>,
    name: String,
    title: String,
    kind: String,
    upstream: String,
    #[serde(default)]
    capacity_rps: Option<String>,
    #[serde(default)]
    masking: Option<String>,
}

pub async fn service_create(State(b): State<Bridge>, v: Visit, Form(f): Form<ServiceForm>) -> Page {
    if !v.may_change(f.csrf.as_deref()) {
        return Err(csrf_refused(&v, None));
    }
    let me = me(&b, &v).await?;
    let body = json!({
        "agency_id": f.agency_id.clone().filter(|a| !a.is_empty()),
        "name": f.name.trim(),
        "title": f.title.trim(),
        "kind": f.kind,
        "upstream": {"targets": [{"addr": f.upstream.trim()}]},
        "capacity_rps": capacity(&f),
        "masking": f.masking.is_some().then(|| json!({})),
    });
    let a = b
        .call(
            v.token.as_deref(),
            v.peer,
            Method::POST,
            "/v1/services",
            Some(&body),
        )
        .await;
    if a.ok() {
        let id = a.body["id"].as_str().unwrap_or("");
        return Ok(see_other(&format!("/console/services/{id}")));
    }
    if matches!(a.status.as_u16(), 401 | 403) {
        return Err(refused(&v, &me, &a));
    }
    render_service_form(&b, &v, &me, a.status, Some(a.message())).await
}

pub async fn service(State(b): State<Bridge>, v: Visit, Path(id): Path<String>) -> Page {
    let me = me(&b, &v).await?;
    render_service(&b, &v, &me, &id, StatusCode::OK, None).await
}

async fn render_service(
    b: &Bridge,
    v: &Visit,
    me: &Me,
    id: &str,
    status: StatusCode,
    flash: Option<Value>,
) -> Page {
    let id = enc(id);
    let svc = read(b, v, me, &format!("/v1/services/{id}")).await?;
    let routes: Vec<Value> = if may(me, Action::RouteRead) {
        read(b, v, me, &format!("/v1/routes?service_id={id}")).await?["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| json!({"name": r["name"], "paths": cell("paths", &r["paths"]), "methods": cell("methods", &r["methods"])}))
            .collect()
    } else {
        Vec::new()
    };
    let verifications: Vec<Value> = if may(me, Action::VerificationRead) {
        read(b, v, me, &format!("/v1/verifications?service_id={id}")).await?["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| json!({"id": x["id"], "result": x["result"], "summary": cell("summary", &x["summary"]), "started_at": cell("started_at", &x["started_at"])}))
            .collect()
    } else {
        Vec::new()
    };
    let st = svc["status"].as_str().unwrap_or("");
    let mut actions = Vec::new();
    let mut act =
        |step: &str, key: &str| actions.push(json!({"step": step, "label": word(v.lang, key)}));
    if may(me, Action::ServiceSubmit) && matches!(st, "draft" | "returned" | "offline") {
        act("submit", "submit");
    }
    let running = b.running.lock().map(|r| r.contains(&id)).unwrap_or(false);
    if may(me, Action::VerificationRun) && st == "submitted" && !running {
        act("verify", "verify");
    }
    if may(me, Action::ServicePublish) && matches!(st, "submitted" | "published" | "offline") {
        act("publish", "publish");
    }
    if may(me, Action::ServicePublish) && st == "published" {
        act("offline", "offline");
    }
    if may(me, Action::ServicePublish) && st == "submitted" {
        act("reject", "reject");
    }
    let editable = match me.role {
        Role::AgencyOperator => matches!(st, "draft" | "returned" | "offline"),
        _ => true,
    };
    let upstream = cell(
        "targets",
        &Value::Array(
            svc["upstream"]["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| t["addr"].clone())
                .collect(),
        ),
    );
    Ok(page(
        status,
        "service.html",
        v,
        Some(me),
        svc["title"].as_str().unwrap_or(""),
        "/console/t/services",
        json!({
            "svc": svc, "routes": routes, "verifications": verifications, "actions": actions,
            "channels": cell("channels", &svc["channels"]), "upstream": upstream,
            "can_add_route": may(me, Action::RouteWrite) && editable,
            "can_edit": may(me, Action::ServiceWrite) && editable,
            "running": running.then(|| v.lang.pick("接口核验进行中…", "Verification in progress…")),
            "refresh": running.then_some(2),
            "flash": flash,
        }),
    ))
}

#[derive(Debug, Deserialize)]
pub struct RouteForm {
    #[serde(rename = "_csrf", default)]
    csrf: Option<String>,
    name: String,
    paths: String,
    #[serde(default)]
    methods: String,
}

fn words_of(s: &str) -> Vec<String> {
    s.split([',', ' ', '，'])
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

pub async fn route_create(
    State(b): State<Bridge>,
    v: Visit,
    Path(id): Path<String>,
    Form(f): Form<RouteForm>,
) -> Page {
    if !v.may_change(f.csrf.as_deref()) {
        return Err(csrf_refused(&v, None));
    }
    let me = me(&b, &v).await?;
    let body = json!({
        "service_id": id, "name": f.name.trim(), "paths": words_of(&f.paths),
        "methods": words_of(&f.methods.to_uppercase()),
    });
    let a = b
        .call(
            v.token.as_deref(),
            v.peer,
            Method::POST,
            "/v1/routes",
            Some(&body),
        )
        .await;
    after_change(&b, &v, &me, &id, a).await
}

/// After a change on a service page: back to the page, or the page with the API's refusal.
async fn after_change(b: &Bridge, v: &Visit, me: &Me, id: &str, a: Answer) -> Page {
    if a.ok() {
        return Ok(see_other(&format!("/console/services/{}", enc(id))));
    }
    if matches!(a.status.as_u16(), 401 | 403) {
        return Err(refused(v, me, &a));
    }
    render_service(
        b,
        v,
        me,
        id,
        a.status,
        Some(json!({"kind": "error", "text": a.message()})),
    )
    .await
}

#[derive(Debug, Deserialize)]
pub struct StepForm {
    #[serde(rename = "_csrf", default)]
    csrf: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    verification: Option<String>,
}

pub async fn service_step(
    State(b): State<Bridge>,
    v: Visit,
    Path((id, step)): Path<(String, String)>,
    axum::extract::RawForm(raw): axum::extract::RawForm,
) -> Page {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&raw).unwrap_or_default();
    let f: StepForm = serde_urlencoded::from_bytes(&raw).unwrap_or(StepForm {
        csrf: None,
        reason: None,
        verification: None,
    });
    if !v.may_change(f.csrf.as_deref()) {
        return Err(csrf_refused(&v, None));
    }
    let me = me(&b, &v).await?;
    let sid = enc(&id);
    let (uri, body) = match step.as_str() {
        "submit" => (format!("/v1/services/{sid}/submit"), None),
        "publish" => {
            let channels: Vec<&str> = pairs
                .iter()
                .filter(|(k, _)| k == "channels")
                .map(|(_, c)| c.as_str())
                .collect();
            (
                format!("/v1/services/{sid}/publish"),
                Some(json!({"channels": channels})),
            )
        }
        "offline" => (format!("/v1/services/{sid}/offline"), Some(json!({}))),
        "reject" => (
            format!("/v1/services/{sid}/reject"),
            Some(json!({"reason": f.reason.filter(|r| !r.trim().is_empty())})),
        ),
        "override" => (
            format!(
                "/v1/verifications/{}/override",
                enc(f.verification.as_deref().unwrap_or(""))
            ),
            Some(json!({"reason": f.reason.unwrap_or_default()})),
        ),
        "verify" => {
            // A long operation: it runs on, the page shows it in progress until it is done.
            let token = v.token.clone();
            let (b2, peer, key) = (b.clone(), v.peer, sid.clone());
            if let Ok(mut r) = b.running.lock() {
                if !r.insert(key.clone()) {
                    return Ok(see_other(&format!("/console/services/{sid}")));
                }
            }
            tokio::spawn(async move {
                let uri = format!("/v1/services/{key}/verifications");
                b2.call(token.as_deref(), peer, Method::POST, &uri, Some(&json!({})))
                    .await;
                if let Ok(mut r) = b2.running.lock() {
                    r.remove(&key);
                }
            });
            return Ok(see_other(&format!("/console/services/{sid}")));
        }
        _ => {
            return Ok(message(
                &v,
                Some(&me),
                StatusCode::NOT_FOUND,
                &word(v.lang, "not_found"),
                "",
            ))
        }
    };
    let a = b
        .call(
            v.token.as_deref(),
            v.peer,
            Method::POST,
            &uri,
            body.as_ref(),
        )
        .await;
    if step == "override" && a.ok() {
        return Ok(see_other(&format!(
            "/console/verifications/{}",
            enc(f.verification.as_deref().unwrap_or(""))
        )));
    }
    after_change(&b, &v, &me, &id, a).await
}

pub async fn inspection(State(b): State<Bridge>, v: Visit, Path(id): Path<String>) -> Page {
    let me = me(&b, &v).await?;
    let x = read(&b, &v, &me, &format!("/v1/inspections/{}", enc(&id))).await?;
    let mut rows = Vec::new();
    for s in x["services"].as_array().into_iter().flatten() {
        for i in s["interfaces"].as_array().into_iter().flatten() {
            for p in i["probes"].as_array().into_iter().flatten() {
                rows.push(vec![
                    cell("", &s["service"]),
                    cell("", &i["route"]),
                    cell("", &p["target"]),
                    cell("", &p["status"]),
                    cell("", &p["latency_ms"]),
                    cell("", &p["causes"]),
                    cell("", &p["detail"]),
                ]);
            }
        }
    }
    let headers = [
        v.lang.pick("服务", "Service"),
        v.lang.pick("接口", "Interface"),
        v.lang.pick("后端", "Target"),
        v.lang.pick("状态码", "Status"),
        v.lang.pick("耗时 ms", "Latency ms"),
        v.lang.pick("问题", "Causes"),
        v.lang.pick("详情", "Detail"),
    ];
    Ok(page(
        StatusCode::OK,
        "audit.html",
        &v,
        Some(&me),
        &format!(
            "{} {}",
            v.lang.pick("巡检", "Inspection"),
            cell("started_at", &x["started_at"])
        ),
        "/console/t/inspections",
        json!({"inspection": true, "headers": headers, "rows": rows, "summary": cell("summary", &x["summary"])}),
    ))
}

pub async fn verification(State(b): State<Bridge>, v: Visit, Path(id): Path<String>) -> Page {
    let me = me(&b, &v).await?;
    let mut x = read(&b, &v, &me, &format!("/v1/verifications/{}", enc(&id))).await?;
    x["started_at"] = json!(cell("started_at", &x["started_at"]));
    let can_override = may(&me, Action::VerificationOverride) && x["result"] == "failed";
    Ok(page(
        StatusCode::OK,
        "verification.html",
        &v,
        Some(&me),
        &word(v.lang, "verify"),
        "/console/t/verifications",
        json!({"v": x, "can_override": can_override}),
    ))
}

// ---- audit ---------------------------------------------------------------------------------

const REQUEST_FILTERS: &[&str] = &[
    "service",
    "route",
    "channel",
    "app",
    "user",
    "status",
    "decision",
    "request_id",
];
const ADMIN_FILTERS: &[&str] = &["actor", "action", "resource_kind", "resource_id"];

pub async fn audit(
    State(b): State<Bridge>,
    v: Visit,
    Query(q): Query<std::collections::BTreeMap<String, String>>,
) -> Page {
    let me = me(&b, &v).await?;
    let admin = q.get("trail").map(String::as_str) == Some("admin");
    let (api, names) = if admin {
        ("/v1/audit/admin", ADMIN_FILTERS)
    } else {
        ("/v1/audit/requests", REQUEST_FILTERS)
    };
    let mut uri = format!("{api}?limit=50");
    let mut filters = Vec::new();
    for n in names {
        let val = q.get(*n).map(|s| s.trim().to_string()).unwrap_or_default();
        if !val.is_empty() {
            uri.push_str(&format!("&{n}={}", enc(&val)));
        }
        filters.push(json!({"name": n, "value": val}));
    }
    if let Some(before) = q
        .get("before")
        .filter(|x| x.chars().all(|c| c.is_ascii_digit()) && !x.is_empty())
    {
        uri.push_str(&format!("&before={before}"));
    }
    let body = read(&b, &v, &me, &uri).await?;
    let chain = if q.contains_key("verify") {
        let c = read(&b, &v, &me, "/v1/audit/admin/verify").await?;
        let ok = c["ok"].as_bool().unwrap_or(false);
        Some(
            json!({"ok": ok, "text": if ok { format!("{} ({})", word(v.lang, "chain_ok"), c["records"]) } else { c.to_string() }}),
        )
    } else {
        None
    };
    let cols: &[&str] = if admin {
        &[
            "seq",
            "at",
            "actor",
            "role",
            "action",
            "resource_kind",
            "resource_id",
            "source_ip",
        ]
    } else {
        &[
            "time",
            "request_id",
            "service",
            "route",
            "channel",
            "app",
            "user",
            "method",
            "path",
            "status",
            "decision",
        ]
    };
    let rows: Vec<Vec<String>> = body["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            // A request audit row holds the gateway's record as it was written.
            let r = if admin { r } else { &r["record"] };
            cols.iter().map(|c| cell(c, &r[*c])).collect()
        })
        .collect();
    let next = body["next_before"].as_i64().map(|n| {
        let mut params: Vec<String> = q
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "before" | "verify" | "lang"))
            .map(|(k, val)| format!("{}={}", enc(k), enc(val)))
            .collect();
        params.push(format!("before={n}"));
        format!("/console/audit?{}", params.join("&"))
    });
    Ok(page(
        StatusCode::OK,
        "audit.html",
        &v,
        Some(&me),
        &word(v.lang, "audit_search"),
        "/console/audit",
        json!({"trail": if admin { "admin" } else { "requests" }, "filters": filters,
               "headers": cols.iter().map(|c| column(v.lang, c)).collect::<Vec<_>>(),
               "rows": rows, "next": next, "chain": chain}),
    ))
}

/// The label of an audit column.
fn column(lang: super::i18n::Lang, key: &str) -> &str {
    const LABELS: &[(&str, &str, &str)] = &[
        ("time", "时间", "Time"),
        ("at", "时间", "Time"),
        ("seq", "序号", "Seq"),
        ("request_id", "请求标识", "Request id"),
        ("service", "服务", "Service"),
        ("route", "接口", "Interface"),
        ("channel", "渠道", "Channel"),
        ("app", "小程序", "App"),
        ("user", "用户", "User"),
        ("method", "方法", "Method"),
        ("path", "路径", "Path"),
        ("status", "状态码", "Status"),
        ("decision", "处理", "Decision"),
        ("actor", "操作人", "Actor"),
        ("role", "角色", "Role"),
        ("action", "操作", "Action"),
        ("resource_kind", "资源类型", "Resource kind"),
        ("resource_id", "资源标识", "Resource id"),
        ("source_ip", "来源地址", "Source IP"),
    ];
    LABELS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, zh, en)| lang.pick(zh, en))
        .unwrap_or(key)
}
