//! The registry of built-in plugins. The [`Registry`] type itself lives in `fenfa-plugin-api`;
//! this module only knows which plugins ship with Fenfa.
pub use fenfa_plugin_api::registry::*;

/// A registry holding every built-in plugin. Embedders add their own with
/// [`Registry::register`] (or start from [`Registry::empty`] and call [`register_builtins`]).
pub fn builtin() -> Registry {
    let mut r = Registry::empty();
    register_builtins(&mut r);
    r
}

/// Adds every built-in plugin to `r` (a plugin registered earlier under the same name is replaced).
pub fn register_builtins(r: &mut Registry) {
    // One line per built-in plugin (keep sorted):
    r.register(Box::new(crate::channel_check::Factory));
    r.register(Box::new(crate::concurrency_limit::Factory::new()));
    r.register(Box::new(crate::cors::Factory));
    r.register(Box::new(crate::ip_restriction::Factory));
    r.register(Box::new(crate::jwt_auth::JwtAuthFactory::new()));
    r.register(Box::new(crate::leak_guard::Factory));
    r.register(Box::new(crate::rate_limit::Factory::new()));
    r.register(Box::new(crate::request_size_limit::Factory));
    r.register(Box::new(crate::response_masking::Factory));
    r.register(Box::new(crate::upstream_signature::Factory));
    r.register(Box::new(crate::waf::Factory));
}
