//! `redis-counter`: an example of a plugin with an async phase that calls out to Redis.
//!
//! Each request `INCR`s `<key>` in Redis and the client gets the new count in `x-redis-count`.
//! The call declares its budget and failure policy ([`CallOut`]); the gateway enforces both:
//! with Redis slow or down, the request goes on without the header (`on_failure: open`) or is
//! answered `503 counter_unavailable` (`on_failure: closed`) once `budget_ms` is spent.
//!
//! Config: `{ url: "redis://127.0.0.1:6379", key: "fenfa:example:hits", budget_ms: 100,
//! on_failure: open | closed }`. The URL is never echoed in errors (it may hold a password).
//! It runs on the proxy's tokio runtime (redis's async client with a connection manager, one
//! multiplexed connection per plugin instance); it never blocks a thread.

use std::sync::Arc;
use std::time::Duration;

use fenfa_plugin_api::{
    BoxFuture, CallError, CallOut, Flow, HeaderEdits, OnFailure, Plugin, PluginFactory, Reply,
    RequestCtx, RequestView, SchemaError,
};
use http::{HeaderName, HeaderValue, StatusCode};
use redis::aio::ConnectionManager;

pub const NAME: &str = "redis-counter";

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    url: String,
    key: String,
    budget_ms: u64,
    on_failure: Failure,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum Failure {
    Open,
    Closed,
}

pub struct RedisCounter {
    client: redis::Client,
    conn: tokio::sync::OnceCell<ConnectionManager>,
    key: String,
    call: CallOut,
}

impl std::fmt::Debug for RedisCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the client: its URL may hold a password.
        f.debug_struct("RedisCounter")
            .field("key", &self.key)
            .field("call", &self.call)
            .finish()
    }
}

/// The count this request got, for the response phase.
#[derive(Debug, Clone)]
struct Count(i64);

impl RedisCounter {
    async fn incr(&self) -> Result<i64, CallError> {
        let conn = self
            .conn
            .get_or_try_init(|| ConnectionManager::new(self.client.clone()))
            .await
            .map_err(|e| CallError::new("redis", format!("cannot connect: {}", e.kind_str())))?;
        let mut conn = conn.clone();
        redis::cmd("INCR")
            .arg(&self.key)
            .query_async::<i64>(&mut conn)
            .await
            .map_err(|e| CallError::new("redis", format!("INCR failed: {}", e.kind_str())))
    }
}

/// A short, secret-free name for a redis error.
trait KindStr {
    fn kind_str(&self) -> String;
}

impl KindStr for redis::RedisError {
    fn kind_str(&self) -> String {
        format!("{:?}", self.kind())
    }
}

impl Plugin for RedisCounter {
    fn name(&self) -> &'static str {
        NAME
    }

    fn priority(&self) -> i32 {
        900
    }

    fn call_out(&self) -> Option<CallOut> {
        Some(self.call.clone())
    }

    fn request_async<'a>(
        &'a self,
        _req: &'a RequestView<'a>,
        ctx: &'a mut RequestCtx,
    ) -> BoxFuture<'a, Result<Flow, CallError>> {
        Box::pin(async move {
            let n = self.incr().await?;
            ctx.vars.insert(Count(n));
            Ok(Flow::Continue)
        })
    }

    fn response(&self, ctx: &RequestCtx, _status: u16, headers: &mut dyn HeaderEdits) {
        if let Some(Count(n)) = ctx.vars.get::<Count>() {
            headers.insert(
                HeaderName::from_static("x-redis-count"),
                HeaderValue::from(*n),
            );
        }
    }
}

pub struct Factory;

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        NAME
    }

    fn build(&self, config: &serde_json::Value) -> Result<Arc<dyn Plugin>, SchemaError> {
        let c: Config = SchemaError::parse(config)?;
        let client = redis::Client::open(c.url.as_str())
            .map_err(|_| SchemaError::new("url", "not a valid redis:// URL"))?;
        if c.budget_ms == 0 || c.budget_ms > 10_000 {
            return Err(SchemaError::new("budget_ms", "must be between 1 and 10000"));
        }
        if c.key.is_empty() {
            return Err(SchemaError::new("key", "must not be empty"));
        }
        Ok(Arc::new(RedisCounter {
            client,
            conn: tokio::sync::OnceCell::new(),
            key: c.key,
            call: CallOut {
                budget: Duration::from_millis(c.budget_ms),
                on_failure: match c.on_failure {
                    Failure::Open => OnFailure::Open,
                    Failure::Closed => OnFailure::Closed(Reply::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "counter_unavailable",
                        "the request counter is unavailable; try again shortly",
                    )),
                },
            },
        }))
    }
}
