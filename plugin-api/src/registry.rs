//! The plugin registry (name → factory) and a compiled plugin chain.
//!
//! The registry is open: it holds no plugin of its own. `fenfa_plugins::builtin()` returns one
//! with the built-in plugins; an embedder registers its own factories next to them and passes
//! the registry to the gateway and to the control plane's config checker.

use std::collections::HashMap;
use std::sync::Arc;

use crate::contract::{BodyNeed, Host, OverLimit, Plugin, PluginFactory, SchemaError};

/// Every plugin kind the gateway knows, by config name. Cloning shares the factories (and the
/// state they own, such as rate-limit counters that survive reloads).
#[derive(Clone)]
pub struct Registry {
    factories: HashMap<&'static str, Arc<dyn PluginFactory>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("plugins", &self.names())
            .finish()
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::empty()
    }
}

impl Registry {
    /// An empty registry (tests and embedders register their own).
    pub fn empty() -> Self {
        Self {
            factories: HashMap::new(),
        }
    }

    /// Adds a plugin kind under [`PluginFactory::name`]; a kind already registered under that
    /// name is replaced (so an embedder may override a built-in).
    pub fn register(&mut self, factory: Box<dyn PluginFactory>) {
        self.factories.insert(factory.name(), Arc::from(factory));
    }

    pub fn contains(&self, name: &str) -> bool {
        self.factories.contains_key(name)
    }

    pub fn names(&self) -> Vec<&'static str> {
        let mut v: Vec<_> = self.factories.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Tells every factory that a gateway is running ([`PluginFactory::start`]): each gets
    /// `plugins_dir/<name>` as its data dir.
    pub fn start(
        &self,
        plugins_dir: &std::path::Path,
        write_private: fn(&std::path::Path, &[u8]) -> std::io::Result<()>,
    ) {
        for (name, f) in &self.factories {
            f.start(&Host {
                data_dir: plugins_dir.join(name),
                write_private,
            });
        }
    }

    /// Builds one plugin instance. An unknown name is a schema error on the `name` field.
    pub fn build(
        &self,
        name: &str,
        config: &serde_json::Value,
    ) -> Result<Arc<dyn Plugin>, BuildError> {
        let factory = self
            .factories
            .get(name)
            .ok_or_else(|| BuildError::UnknownPlugin {
                name: name.to_string(),
                known: self.names().join(", "),
            })?;
        factory.build(config).map_err(BuildError::Schema)
    }
}

/// Why a plugin instance could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("unknown plugin `{name}`; known plugins: [{known}]")]
    UnknownPlugin { name: String, known: String },
    #[error("{0}")]
    Schema(SchemaError),
}

/// The plugins that run for one route, in execution order (descending priority), with what
/// the gateway must do for them computed once when the chain is built (never per request).
#[derive(Debug, Clone, Default)]
pub struct Chain {
    plugins: Arc<[Arc<dyn Plugin>]>,
    /// Largest [`BodyNeed::Buffer`] limit in the chain; `None` when no plugin buffers.
    body_limit: Option<usize>,
    /// Whether a buffering plugin answers 413 when the body exceeds `body_limit`.
    body_reject_over_limit: bool,
    /// Largest response-body [`BodyNeed::Buffer`] limit; `None` when no plugin reads responses.
    response_limit: Option<usize>,
    /// Whether some response-body plugin declared [`OverLimit::Reject`].
    response_reject_over_limit: bool,
    /// Whether some plugin has an async phase ([`Plugin::call_out`]).
    calls_out: bool,
}

impl Chain {
    /// Orders plugins by descending priority; equal priorities keep the given order.
    pub fn new(mut plugins: Vec<Arc<dyn Plugin>>) -> Self {
        plugins.sort_by_key(|p| std::cmp::Reverse(p.priority()));
        let mut body_limit: Option<usize> = None;
        let mut body_reject_over_limit = false;
        for p in &plugins {
            if let BodyNeed::Buffer { limit, over_limit } = p.request_body_need() {
                body_limit = Some(body_limit.map_or(limit, |l| l.max(limit)));
                body_reject_over_limit |= over_limit == OverLimit::Reject;
            }
        }
        let mut response_limit: Option<usize> = None;
        let mut response_reject_over_limit = false;
        for p in &plugins {
            if let BodyNeed::Buffer { limit, over_limit } = p.response_body_need() {
                response_limit = Some(response_limit.map_or(limit, |l| l.max(limit)));
                response_reject_over_limit |= over_limit == OverLimit::Reject;
            }
        }
        let calls_out = plugins.iter().any(|p| p.call_out().is_some());
        Self {
            calls_out,
            plugins: plugins.into(),
            body_limit,
            body_reject_over_limit,
            response_limit,
            response_reject_over_limit,
        }
    }

    /// Whether the gateway must run the async phase for this chain.
    pub fn calls_out(&self) -> bool {
        self.calls_out
    }

    /// How many response-body bytes the gateway buffers for this chain (`None`: responses
    /// stream through untouched).
    pub fn response_limit(&self) -> Option<usize> {
        self.response_limit
    }

    /// Whether a response body over [`Chain::response_limit`] is aborted rather than passed.
    pub fn response_rejects_over_limit(&self) -> bool {
        self.response_reject_over_limit
    }

    /// How many request-body bytes the gateway buffers for this chain: the largest
    /// [`BodyNeed::Buffer`] limit of its plugins, or `None` when no plugin asks for the body
    /// (the body then streams through untouched and unbuffered).
    pub fn body_limit(&self) -> Option<usize> {
        self.body_limit
    }

    /// Whether some buffering plugin declared [`OverLimit::Reject`]: a body longer than
    /// [`Chain::body_limit`] is then answered with 413 instead of passing uninspected.
    pub fn rejects_over_limit(&self) -> bool {
        self.body_reject_over_limit
    }

    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Plugin>> {
        self.plugins.iter()
    }
}
