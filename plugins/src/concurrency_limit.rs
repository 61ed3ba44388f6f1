//! `concurrency-limit` (priority 1010): caps the requests in flight to one service.
//!
//! Why it exists: an agency backend that slows down must not collect an unbounded queue of
//! waiting requests (and gateway connections). Beyond `max` requests in flight to a service, a new
//! request is answered at once with 503 `upstream_busy` and `Retry-After: 1`.
//!
//! The counters live in an [`InFlight`] store owned by [`ConcurrencyLimitFactory`], keyed by
//! service name, so they are shared by every route of the service and survive config reloads
//! (requests in flight across a reload stay counted). Each instance compares the shared count with
//! its own `max`.
//!
//! A slot is taken at the request phase and given back at the log phase, which runs exactly once
//! for every request that reached the request phase — also when a later plugin denied it. The slot
//! is held by a guard stored in `ctx.vars`: only requests that took a slot give one back, a slot is
//! given back at most once, and if the request context is dropped without a log phase the guard
//! gives the slot back anyway.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use http::{HeaderValue, StatusCode};
use serde::Deserialize;

use crate::contract::{
    Flow, LogView, Plugin, PluginFactory, Reply, RequestCtx, RequestView, SchemaError,
};

pub const NAME: &str = "concurrency-limit";
pub const PRIORITY: i32 = 1010;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    max: u32,
}

/// In-flight counters per service, shared by every instance of one factory.
///
/// The map only grows by services that were ever configured with this plugin (a counter is a few
/// dozen bytes); a lookup takes a read lock that is only ever contended by the first request of a
/// new service.
#[derive(Debug, Default)]
pub struct InFlight {
    services: RwLock<HashMap<Arc<str>, Arc<AtomicU32>>>,
}

impl InFlight {
    pub fn new() -> Self {
        Self::default()
    }

    /// The counter of `service` (created at 0 on first use).
    pub fn counter(&self, service: &Arc<str>) -> Arc<AtomicU32> {
        {
            let map = self.services.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(c) = map.get(service) {
                return c.clone();
            }
        }
        let mut map = self
            .services
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        map.entry(service.clone()).or_default().clone()
    }

    /// Requests in flight to `service` right now.
    pub fn in_flight(&self, service: &str) -> u32 {
        let map = self.services.read().unwrap_or_else(PoisonError::into_inner);
        map.get(service).map_or(0, |c| c.load(Ordering::Acquire))
    }
}

/// Gives its slot back exactly once: on [`SlotGuard::release`] or when dropped.
#[derive(Debug)]
struct SlotGuard {
    counter: Arc<AtomicU32>,
    released: AtomicBool,
}

impl SlotGuard {
    fn release(&self) {
        if !self.released.swap(true, Ordering::AcqRel) {
            self.counter.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.release();
    }
}

/// The marker in `ctx.vars`: this request holds a slot of its service.
#[derive(Debug, Clone)]
struct HeldSlot(Arc<SlotGuard>);

/// A configured `concurrency-limit` instance.
#[derive(Debug)]
pub struct ConcurrencyLimit {
    max: u32,
    store: Arc<InFlight>,
}

fn busy() -> Flow {
    Flow::Respond(
        Reply::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream_busy",
            "the service has too many requests in flight; retry shortly",
        )
        .with_header(http::header::RETRY_AFTER, HeaderValue::from_static("1")),
    )
}

impl Plugin for ConcurrencyLimit {
    fn name(&self) -> &'static str {
        NAME
    }

    fn priority(&self) -> i32 {
        PRIORITY
    }

    fn request(&self, _req: &RequestView<'_>, ctx: &mut RequestCtx) -> Flow {
        if let Some(held) = ctx.vars.get::<HeldSlot>() {
            // A second instance on the same request (e.g. service- and route-level): the request
            // is already counted; only check this instance's own maximum.
            return if held.0.counter.load(Ordering::Acquire) <= self.max {
                Flow::Continue
            } else {
                busy()
            };
        }
        let counter = self.store.counter(&ctx.service);
        let max = self.max;
        let taken = counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if !taken {
            return busy();
        }
        ctx.vars.insert(HeldSlot(Arc::new(SlotGuard {
            counter,
            released: AtomicBool::new(false),
        })));
        Flow::Continue
    }

    fn log(&self, ctx: &RequestCtx, _view: &LogView<'_>) {
        if let Some(held) = ctx.vars.get::<HeldSlot>() {
            held.0.release();
        }
    }
}

/// The registry's name for [`ConcurrencyLimitFactory`].
pub type Factory = ConcurrencyLimitFactory;

/// Builds `concurrency-limit` instances; owns the process-wide [`InFlight`] counters.
#[derive(Debug, Default)]
pub struct ConcurrencyLimitFactory {
    store: Arc<InFlight>,
}

impl ConcurrencyLimitFactory {
    pub fn new() -> Self {
        Self::default()
    }

    /// The counters shared by every instance this factory builds.
    pub fn store(&self) -> &Arc<InFlight> {
        &self.store
    }
}

impl PluginFactory for ConcurrencyLimitFactory {
    fn name(&self) -> &'static str {
        NAME
    }

    fn build(&self, config: &serde_json::Value) -> Result<Arc<dyn Plugin>, SchemaError> {
        let cfg: Config = SchemaError::parse(config)?;
        if cfg.max == 0 {
            return Err(SchemaError::new("max", "must be greater than 0"));
        }
        Ok(Arc::new(ConcurrencyLimit {
            max: cfg.max,
            store: self.store.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, Method};
    use serde_json::json;

    fn ctx(service: &str, route: &str) -> RequestCtx {
        RequestCtx {
            service: Arc::from(service),
            route: Arc::from(route),
            ..RequestCtx::default()
        }
    }

    fn request(p: &dyn Plugin, ctx: &mut RequestCtx) -> Flow {
        let headers = HeaderMap::new();
        let req = RequestView {
            method: &Method::GET,
            path: "/",
            query: None,
            headers: &headers,
            client_ip: ctx.client_ip,
            tls: false,
        };
        p.request(&req, ctx)
    }

    fn log(p: &dyn Plugin, ctx: &RequestCtx) {
        let view = LogView {
            method: &Method::GET,
            path: "/",
            status: 200,
            upstream: None,
            upstream_status: None,
            latency_us: 0,
            bytes_sent: 0,
        };
        p.log(ctx, &view);
    }

    fn denial(flow: Flow) -> Reply {
        match flow {
            Flow::Respond(r) => r,
            Flow::Continue => panic!("expected a denial"),
        }
    }

    #[test]
    fn requests_beyond_max_get_503_upstream_busy_with_retry_after_1() {
        let f = ConcurrencyLimitFactory::new();
        let p = f.build(&json!({"max": 2})).unwrap();
        let (mut a, mut b, mut c) = (ctx("svc", "r"), ctx("svc", "r"), ctx("svc", "r"));
        assert!(matches!(request(&*p, &mut a), Flow::Continue));
        assert!(matches!(request(&*p, &mut b), Flow::Continue));
        let r = denial(request(&*p, &mut c));
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.code, "upstream_busy");
        assert_eq!(
            r.headers,
            vec![(http::header::RETRY_AFTER, HeaderValue::from_static("1"))]
        );
        assert_eq!(f.store().in_flight("svc"), 2);
    }

    #[test]
    fn concurrency_slots_are_released_on_log() {
        let f = ConcurrencyLimitFactory::new();
        let p = f.build(&json!({"max": 1})).unwrap();
        let mut a = ctx("svc", "r");
        assert!(matches!(request(&*p, &mut a), Flow::Continue));
        let mut b = ctx("svc", "r");
        assert!(matches!(request(&*p, &mut b), Flow::Respond(_)));
        // b never took a slot: its log phase must not give one back.
        log(&*p, &b);
        assert_eq!(f.store().in_flight("svc"), 1);
        log(&*p, &a);
        assert_eq!(f.store().in_flight("svc"), 0);
        // Logging twice, then dropping the context, gives back nothing more.
        log(&*p, &a);
        drop(a);
        assert_eq!(f.store().in_flight("svc"), 0);
        let mut c = ctx("svc", "r");
        assert!(matches!(request(&*p, &mut c), Flow::Continue));
    }

    #[test]
    fn slot_is_released_when_a_later_plugin_denies() {
        let f = ConcurrencyLimitFactory::new();
        let p = f.build(&json!({"max": 1})).unwrap();
        let mut a = ctx("svc", "r");
        assert!(matches!(request(&*p, &mut a), Flow::Continue));
        // A later plugin (e.g. rate-limit) denies; the gateway still runs the log phase.
        a.denied_by = Some(("rate-limit", "rate_limited"));
        log(&*p, &a);
        assert_eq!(f.store().in_flight("svc"), 0);
    }

    #[test]
    fn slot_is_released_if_the_context_is_dropped_without_log() {
        let f = ConcurrencyLimitFactory::new();
        let p = f.build(&json!({"max": 1})).unwrap();
        let mut a = ctx("svc", "r");
        assert!(matches!(request(&*p, &mut a), Flow::Continue));
        drop(a);
        assert_eq!(f.store().in_flight("svc"), 0);
    }

    #[test]
    fn cap_is_shared_by_the_routes_of_a_service_and_survives_reload() {
        let f = ConcurrencyLimitFactory::new();
        let r1 = f.build(&json!({"max": 2})).unwrap();
        let mut a = ctx("svc", "r1");
        assert!(matches!(request(&*r1, &mut a), Flow::Continue));
        // Reload: new instances, one per route.
        drop(r1);
        let r1 = f.build(&json!({"max": 2})).unwrap();
        let r2 = f.build(&json!({"max": 2})).unwrap();
        let mut b = ctx("svc", "r2");
        assert!(matches!(request(&*r2, &mut b), Flow::Continue));
        let mut c = ctx("svc", "r1");
        assert!(matches!(request(&*r1, &mut c), Flow::Respond(_)));
        // Another service is not affected.
        let mut d = ctx("other", "r1");
        assert!(matches!(request(&*r1, &mut d), Flow::Continue));
        // The request from before the reload finishes and frees its slot.
        log(&*r1, &a);
        let mut e = ctx("svc", "r1");
        assert!(matches!(request(&*r1, &mut e), Flow::Continue));
    }

    #[test]
    fn second_instance_on_one_request_does_not_take_a_second_slot() {
        let f = ConcurrencyLimitFactory::new();
        let service_level = f.build(&json!({"max": 3})).unwrap();
        let route_level = f.build(&json!({"max": 1})).unwrap();
        let mut a = ctx("svc", "r");
        assert!(matches!(request(&*service_level, &mut a), Flow::Continue));
        assert!(matches!(request(&*route_level, &mut a), Flow::Continue));
        assert_eq!(f.store().in_flight("svc"), 1);
        let mut b = ctx("svc", "r");
        assert!(matches!(request(&*service_level, &mut b), Flow::Continue));
        assert!(matches!(request(&*route_level, &mut b), Flow::Respond(_)));
        log(&*service_level, &a);
        log(&*route_level, &a);
        log(&*service_level, &b);
        log(&*route_level, &b);
        assert_eq!(f.store().in_flight("svc"), 0);
    }

    #[test]
    fn config_errors_name_the_field() {
        let f = ConcurrencyLimitFactory::new();
        assert_eq!(f.build(&json!({"max": 0})).unwrap_err().path, "max");
        assert_eq!(f.build(&json!({"max": -1})).unwrap_err().path, "max");
        let e = f.build(&json!({"max": 1, "queue": 5})).unwrap_err();
        assert!(e.message.contains("queue"), "{e}");
        assert!(f.build(&json!({})).unwrap_err().message.contains("max"));
    }
}
