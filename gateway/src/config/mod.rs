//! Configuration: the declarative model ([`model`]), its parser, and the error type that names the
//! offending field. Compiling a config into a runtime lives in `crate::compile`.

pub mod duration;
pub mod model;

pub use duration::HumanDuration;
pub use model::{parse, Config};

/// A configuration that cannot take effect, with the path of the field at fault
/// (e.g. `services[0].upstream.targets[1].addr`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", if path.is_empty() { String::new() } else { format!("{path}: ") })]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}
