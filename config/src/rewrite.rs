//! Route `rewrite` templates: `/v2/users/{id}` or `/internal/{*}`, checked when the config is
//! checked and applied per request by the proxy.

/// Why a `rewrite` template is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    #[error("`{0}` must start with `/`")]
    NoLeadingSlash(String),
    #[error("`{0}` must be a path only: no `?`, `#`, spaces or control characters (the query string is passed through unchanged)")]
    NotAPath(String),
    #[error("`{0}` has an unclosed `{{`")]
    Unclosed(String),
    #[error("`{{{name}}}` in `{template}` is not a parameter name or `{{*}}`")]
    BadParameter { name: String, template: String },
}

/// A parsed `rewrite` template.
#[derive(Debug, Clone)]
pub struct Rewrite {
    pub(crate) parts: Vec<RewritePart>,
}

#[derive(Debug, Clone)]
pub(crate) enum RewritePart {
    Literal(String),
    Param(String),
    Rest,
}

impl Rewrite {
    pub fn parse(s: &str) -> Result<Self, RewriteError> {
        if !s.starts_with('/') {
            return Err(RewriteError::NoLeadingSlash(s.to_string()));
        }
        if s.contains(['?', '#']) || s.chars().any(|c| c.is_ascii_control() || c == ' ') {
            return Err(RewriteError::NotAPath(s.to_string()));
        }
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(RewritePart::Literal(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| RewriteError::Unclosed(s.to_string()))?
                + open;
            let name = &rest[open + 1..close];
            if name == "*" {
                parts.push(RewritePart::Rest);
            } else if !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                parts.push(RewritePart::Param(name.to_string()));
            } else {
                return Err(RewriteError::BadParameter {
                    name: name.to_string(),
                    template: s.to_string(),
                });
            }
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(RewritePart::Literal(rest.to_string()));
        }
        Ok(Self { parts })
    }

    /// Builds the upstream path. `rest` is what followed the literal prefix of a prefix match.
    pub fn apply(&self, params: &crate::router::Params<'_>, rest: &str, out: &mut String) {
        for p in &self.parts {
            match p {
                RewritePart::Literal(l) => out.push_str(l),
                RewritePart::Param(name) => out.push_str(params.get(name).unwrap_or("")),
                RewritePart::Rest => out.push_str(rest.trim_start_matches('/')),
            }
        }
    }
}
