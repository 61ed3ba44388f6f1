//! The one error type of the API and the one place it becomes an HTTP answer.
//!
//! Every answer the control plane produces on failure is
//! `{"error":{"code":"…","message":"…"}}`, plus `fields: [{path, message}]` for `422 invalid`.
//! Handlers return `Result<_, ApiError>`; nothing else writes error bodies.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// One offending input field: where (`upstream.targets[0].addr`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl FieldError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 422: the input is not acceptable; nothing changed.
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    /// 400: the request itself is malformed (not JSON, bad query string).
    #[error("{0}")]
    BadRequest(String),
    /// 401 with a machine code (`unauthenticated`, `session_expired`, `bad_credentials`, …).
    #[error("{1}")]
    Unauthorized(&'static str, String),
    /// 403: authenticated, but the role may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// 403 `account_locked`, with the seconds left.
    #[error("account locked")]
    Locked(i64),
    /// 404: no such resource (or not one the caller may know of).
    #[error("{0}")]
    NotFound(String),
    /// 405: the method is not defined on this path (audit records, for instance, are read-only).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 413: the body is over the endpoint's limit (named, e.g. `2 MiB`).
    #[error("the request body is larger than the limit of {0}")]
    TooLarge(String),
    /// 415: the body is not sent as JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 409: the resource is in a state that forbids this (e.g. editing a published service).
    #[error("{0}")]
    Conflict(String),
    /// 500: a failure of ours; logged, never detailed to the client.
    #[error("{0}")]
    Internal(String),
    /// 503 `database_unavailable`: the store cannot be reached (connection lost or refused, no
    /// connection free in time); nothing changed, and the same request can be sent again.
    /// Logged with the driver's error, which the client never sees.
    #[error("{0}")]
    DatabaseUnavailable(String),
    /// 202: a two-person account change was registered and waits for the second person
    /// (`crate::approvals`); nothing changed yet. Not a failure, but it ends the handler early.
    #[error("awaiting approval")]
    AwaitingApproval(serde_json::Value),
}

impl ApiError {
    pub fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldError::new(path, message)])
    }

    pub fn not_found(what: &str) -> Self {
        Self::NotFound(format!("no such {what}"))
    }

    pub fn forbidden() -> Self {
        Self::Forbidden("your role may not do this".into())
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::Internal(e.to_string())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(..) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::Locked(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::DatabaseUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::AwaitingApproval(_) => StatusCode::ACCEPTED,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid",
            Self::BadRequest(_) => "bad_request",
            Self::Unauthorized(code, _) => code,
            Self::Forbidden(_) => "forbidden",
            Self::Locked(_) => "account_locked",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict(_) => "conflict",
            Self::TooLarge(_) => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::Internal(_) => "internal_error",
            Self::DatabaseUnavailable(_) => "database_unavailable",
            Self::AwaitingApproval(_) => "awaiting_approval",
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            // The database is out of reach, not wrong: the request may simply be sent again.
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => Self::DatabaseUnavailable(format!("store: {e}")),
            e => Self::Internal(format!("store: {e}")),
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fields: Option<&'a [FieldError]>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::AwaitingApproval(approval) = self {
            let body = serde_json::json!({"status": "awaiting_approval", "approval": approval});
            return (StatusCode::ACCEPTED, axum::Json(body)).into_response();
        }
        let message = match &self {
            Self::Internal(detail) => {
                tracing::error!(error = %detail, "request failed");
                "the control plane failed to handle the request".to_string()
            }
            Self::DatabaseUnavailable(detail) => {
                tracing::warn!(error = %detail, "database unavailable");
                "the control plane's database cannot be reached; nothing was changed — try again \
                 shortly"
                    .to_string()
            }
            Self::Invalid(fields) => match fields.first() {
                Some(f) if fields.len() == 1 && !f.path.is_empty() => {
                    format!("{}: {}", f.path, f.message)
                }
                Some(f) if fields.len() == 1 => f.message.clone(),
                _ => "the input is invalid; see fields".to_string(),
            },
            Self::Locked(secs) => format!(
                "too many failed sign-ins; the account is locked for another {} minute(s)",
                (secs + 59) / 60
            ),
            Self::MethodNotAllowed => "this method is not allowed on this resource".to_string(),
            other => other.to_string(),
        };
        let fields = match &self {
            Self::Invalid(f) => Some(f.as_slice()),
            _ => None,
        };
        let body = Body {
            error: Inner {
                code: self.code(),
                message,
                fields,
            },
        };
        let mut resp = (self.status(), axum::Json(body)).into_response();
        match &self {
            Self::Unauthorized(..) => {
                resp.headers_mut().insert(
                    axum::http::header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"fenfa-admin\""),
                );
            }
            Self::Locked(secs) => {
                if let Ok(v) = HeaderValue::from_str(&(*secs).max(1).to_string()) {
                    resp.headers_mut()
                        .insert(axum::http::header::RETRY_AFTER, v);
                }
            }
            _ => {}
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
