//! The plugin registry (name → factory) and a compiled plugin chain.

use std::collections::HashMap;
use std::sync::Arc;

use crate::contract::{Plugin, PluginFactory, SchemaError};

/// Every plugin kind the gateway knows, by config name.
pub struct Registry {
    factories: HashMap<&'static str, Box<dyn PluginFactory>>,
}

impl Registry {
    /// An empty registry (tests and embedders register their own).
    pub fn empty() -> Self {
        Self {
            factories: HashMap::new(),
        }
    }

    /// The built-in plugins.
    pub fn builtin() -> Self {
        #[allow(unused_mut)]
        let mut r = Self::empty();
        // One line per built-in plugin (keep sorted):
        r.register(Box::new(crate::channel_check::Factory));
        r.register(Box::new(crate::concurrency_limit::Factory::new()));
        r.register(Box::new(crate::cors::Factory));
        r.register(Box::new(crate::ip_restriction::Factory));
        r.register(Box::new(crate::jwt_auth::JwtAuthFactory));
        r.register(Box::new(crate::rate_limit::Factory::new()));
        r.register(Box::new(crate::request_size_limit::Factory));
        r.register(Box::new(crate::upstream_signature::Factory));
        r
    }

    pub fn register(&mut self, factory: Box<dyn PluginFactory>) {
        self.factories.insert(factory.name(), factory);
    }

    pub fn names(&self) -> Vec<&'static str> {
        let mut v: Vec<_> = self.factories.keys().copied().collect();
        v.sort_unstable();
        v
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

/// The plugins that run for one route, in execution order (descending priority).
#[derive(Debug, Clone, Default)]
pub struct Chain {
    plugins: Arc<[Arc<dyn Plugin>]>,
}

impl Chain {
    /// Orders plugins by descending priority; equal priorities keep the given order.
    pub fn new(mut plugins: Vec<Arc<dyn Plugin>>) -> Self {
        plugins.sort_by_key(|p| std::cmp::Reverse(p.priority()));
        Self {
            plugins: plugins.into(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Plugin>> {
        self.plugins.iter()
    }
}
