//! The web console (`/console`, docs/console.md): server-rendered pages for operators, security
//! staff, auditors and agencies, in Simplified Chinese by default (English selectable).
//!
//! The console has no rules of its own. Every page reads and every form changes through the REST
//! API's own handlers, called in process with the signed-in session's bearer token
//! ([`api::Bridge`]): the same authentication (idle timeout included), the same permission
//! table, agency scoping, validation, audit records and refusals. The navigation shows a page
//! only when `crate::authz::allowed` lets the role read it; a page the role may not read answers
//! the API's 403.
//!
//! Sessions live in an `HttpOnly`, `SameSite=Strict` cookie scoped to `/console` (`Secure` over
//! TLS) holding the API session token; every change is a POST carrying a CSRF token derived from
//! the session, and a request another origin sent (`Origin` or `Sec-Fetch-Site`) is refused
//! ([`session`]). Every answer carries a strict Content-Security-Policy: no inline script, no
//! script at all, nothing loaded from anywhere but the console itself; charts are SVG drawn on the
//! server, templates and the stylesheet are compiled into the binary.
//!
//! What it may not do: load anything from outside (no CDN, no font), keep state of its own, or
//! reach the store but through the API's handlers.

pub mod api;
mod charts;
mod i18n;
mod pages;
mod render;
pub mod session;
mod tables;

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use crate::app::AppState;

/// The console's Content-Security-Policy: the console's own stylesheet and SVG, nothing else.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's routes, to be nested at `/console`. `api` is the REST API's router, which the
/// console calls in process.
pub fn router(app: AppState, api: Router) -> Router {
    let bridge = api::Bridge::new(app, api);
    Router::new()
        .route("/", get(pages::overview))
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/logout", post(pages::logout))
        .route("/assets/console.css", get(pages::stylesheet))
        .route(
            "/services/new",
            get(pages::service_form).post(pages::service_create),
        )
        .route("/services/{id}", get(pages::service))
        .route(
            "/services/{id}/edit",
            get(pages::service_edit_form).post(pages::service_edit),
        )
        .route("/services/{id}/routes", post(pages::route_create))
        .route("/services/{id}/{step}", post(pages::service_step))
        .route("/verifications/{id}", get(pages::verification))
        .route("/inspections/{id}", get(pages::inspection))
        .route("/audit", get(pages::audit))
        .route("/reports/{id}", get(pages::report))
        .route("/t/{table}", get(pages::table))
        .route("/t/{table}/new", post(pages::table_create))
        .route("/t/{table}/{id}/{step}", post(pages::table_step))
        .route("/exports", get(pages::exports))
        .route("/exports/{name}", get(pages::export))
        .fallback(pages::not_found)
        .layer(axum::middleware::from_fn(headers))
        .with_state(bridge)
}

/// Security headers on every console answer.
async fn headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    // A downloaded report sets its own (it styles itself inline, and runs no script either).
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(CSP));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // `same-origin`, not `no-referrer`: with `no-referrer` browsers send `Origin: null` on a
    // form post, and the console's own forms must show their origin to pass the CSRF checks.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}
