//! H5 services (H5 链接类型服务): the checks and the compiled form of `services[].kind: h5`,
//! `services[].h5` and the top-level `h5:` section.
//!
//! **Why.** Agencies' web pages open inside the WeChat, Alipay and Baidu mini-programs'
//! web-view, which only loads registered domains proved by a verification file at the domain's
//! root. The gateway serves every agency's pages under one shared H5 domain, each under its own
//! path prefix (`/h5/agency-a/*` → agency A's origin). That puts constraints on the routes (a
//! literal prefix that is stripped, so the origin keeps seeing its own paths, and the gateway
//! knows what to put back on the way out), and asks for values that are built once per
//! snapshot here — the verification files by name, the security headers per caller channel —
//! so the request path only looks them up. What the proxy does with them is in the gateway's
//! `h5` module; the operator's page is `docs/h5.md`.

use ahash::AHashMap;
use http::HeaderValue;

use crate::model::{FrameAncestors, H5Service, H5Settings};
use crate::router::{HostPattern, PathPattern};
use crate::ConfigError;

/// The policy of an h5 answer's `Content-Security-Policy` before its `frame-ancestors`.
pub const DEFAULT_CSP: &str = "default-src 'self'; img-src 'self' data: https:; \
     style-src 'self' 'unsafe-inline'; script-src 'self'; object-src 'none'; base-uri 'self'";

/// `frame-ancestors` when the caller's channel is not known (no verified identity).
pub const DEFAULT_FRAME_ANCESTORS: &str = "'self'";
/// WeChat's web-view opens the page top-level: nothing may frame it.
pub const DEFAULT_FRAME_WECHAT: &str = "'none'";
/// Alipay's web-view opens the page top-level: nothing may frame it.
pub const DEFAULT_FRAME_ALIPAY: &str = "'none'";
/// Baidu's web version of smart programs renders web-views in frames of its own sites.
pub const DEFAULT_FRAME_BAIDU: &str = "'self' https://*.baidu.com https://*.smartapps.cn";

/// Longest verification file name.
pub const MAX_FILE_NAME: usize = 128;
/// Largest verification file content.
pub const MAX_FILE_CONTENT: usize = 4096;

/// A caller's channel, as far as the H5 headers care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Unknown = 0,
    Wechat = 1,
    Alipay = 2,
    Baidu = 3,
}

impl Channel {
    /// The channel of a verified identity's `chn` (anything else: [`Channel::Unknown`]).
    pub fn of(chn: &str) -> Self {
        match chn {
            "wechat" => Channel::Wechat,
            "alipay" => Channel::Alipay,
            "baidu" => Channel::Baidu,
            _ => Channel::Unknown,
        }
    }
}

/// An h5 service's security headers, built once per snapshot.
#[derive(Debug, Clone)]
pub struct H5Headers {
    /// The whole `Content-Security-Policy` per [`Channel`] (indexed by its value).
    pub csp: [HeaderValue; 4],
}

impl H5Headers {
    pub fn csp(&self, channel: Channel) -> &HeaderValue {
        &self.csp[channel as usize]
    }
}

/// The top-level `h5:` section, checked.
#[derive(Debug, Clone, Default)]
pub struct H5Plan {
    /// Hosts verification files are served on; empty: every host. A wildcard matches as in
    /// routes (`*.example.com` covers `a.example.com` and `a.b.example.com`).
    pub hosts: Vec<HostPattern>,
    /// Verification files by name (without the leading `/`): their content.
    pub files: AHashMap<Box<str>, Box<str>>,
}

impl H5Plan {
    /// Whether verification files are served on `host` (the request's host, port allowed).
    pub fn serves_host(&self, host: Option<&str>) -> bool {
        if self.hosts.is_empty() {
            return true;
        }
        let Some(host) = host else { return false };
        let host = strip_port(host);
        self.hosts.iter().any(|p| match p {
            HostPattern::Exact(h) => h.eq_ignore_ascii_case(host),
            HostPattern::Wildcard(suffix) => {
                host.len() > suffix.len()
                    && host
                        .get(host.len() - suffix.len()..)
                        .is_some_and(|s| s.eq_ignore_ascii_case(suffix))
            }
        })
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..h.len() + 1]);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Checks the top-level `h5:` section.
pub fn plan(settings: Option<&H5Settings>) -> Result<H5Plan, ConfigError> {
    let Some(s) = settings else {
        return Ok(H5Plan::default());
    };
    let hosts = s
        .hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            h.parse::<HostPattern>()
                .map_err(|m| ConfigError::at(format!("h5.hosts[{i}]"), m))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut files = AHashMap::with_capacity(s.verification_files.len());
    for (i, f) in s.verification_files.iter().enumerate() {
        let path = format!("h5.verification_files[{i}]");
        if !fenfa_plugins::jwt_auth::CHANNELS.contains(&f.channel.as_str()) {
            return Err(ConfigError::at(
                format!("{path}.channel"),
                format!(
                    "`{}` is not a channel; expected one of wechat, alipay, baidu",
                    f.channel
                ),
            ));
        }
        check_file_name(&f.name).map_err(|m| ConfigError::at(format!("{path}.name"), m))?;
        check_file_content(&f.content)
            .map_err(|m| ConfigError::at(format!("{path}.content"), m))?;
        if files
            .insert(f.name.as_str().into(), f.content.as_str().into())
            .is_some()
        {
            return Err(ConfigError::at(
                format!("{path}.name"),
                format!("duplicate verification file `{}`", f.name),
            ));
        }
    }
    Ok(H5Plan { hosts, files })
}

/// A single file name at the domain's root: `[A-Za-z0-9_.-]+`, no leading dot, at most 128.
fn check_file_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_FILE_NAME {
        return Err(format!("expected 1 to {MAX_FILE_NAME} characters"));
    }
    if name.starts_with('.') {
        return Err("must not start with `.`".into());
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(format!(
            "`{name}` is not a single file name; expected characters from A-Z a-z 0-9 _ . -"
        ));
    }
    Ok(())
}

/// Printable text (tabs and line breaks allowed), at most 4 KiB.
fn check_file_content(content: &str) -> Result<(), String> {
    if content.len() > MAX_FILE_CONTENT {
        return Err(format!("at most {MAX_FILE_CONTENT} bytes"));
    }
    if content
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err("must be printable text".into());
    }
    Ok(())
}

/// Checks that a route of an h5 service has prefix paths of literal segments and strips them.
/// `path` is the route's field path (`routes[3]`).
pub fn check_route(
    path: &str,
    patterns: &[PathPattern],
    strip_prefix: bool,
) -> Result<(), ConfigError> {
    for (j, p) in patterns.iter().enumerate() {
        if !p.is_prefix() || p.param_names().next().is_some() || p.literal_prefix().is_empty() {
            return Err(ConfigError::at(
                format!("{path}.paths[{j}]"),
                "an h5 service's route must be a prefix path like /h5/agency/*",
            ));
        }
    }
    if !strip_prefix {
        return Err(ConfigError::at(
            format!("{path}.strip_prefix"),
            "an h5 service's route must set `strip_prefix: true` (its pages are served under the prefix)",
        ));
    }
    Ok(())
}

/// Builds an h5 service's headers from its overrides. `path` is the service's field path.
pub fn headers(path: &str, overrides: Option<&H5Service>) -> Result<H5Headers, ConfigError> {
    let default = H5Service::default();
    let o = overrides.unwrap_or(&default);
    let policy = match &o.csp {
        None => DEFAULT_CSP,
        Some(p) => {
            let p = p.trim().trim_end_matches(';').trim_end();
            if p.is_empty() {
                return Err(ConfigError::at(
                    format!("{path}.h5.csp"),
                    "must not be empty",
                ));
            }
            if p.to_ascii_lowercase().contains("frame-ancestors") {
                return Err(ConfigError::at(
                    format!("{path}.h5.csp"),
                    "leave `frame-ancestors` out: it is set per channel (`h5.frame_ancestors`)",
                ));
            }
            p
        }
    };
    let FrameAncestors {
        wechat,
        alipay,
        baidu,
    } = &o.frame_ancestors;
    let source = |name: &str, v: &Option<String>, default: &'static str| {
        let Some(v) = v else {
            return Ok(default.to_string());
        };
        let v = v.trim();
        if v.is_empty() || v.contains([';', ',']) {
            return Err(ConfigError::at(
                format!("{path}.h5.frame_ancestors.{name}"),
                "expected a source list such as `'self' https://*.example.com` or `'none'`",
            ));
        }
        Ok(v.to_string())
    };
    let lists = [
        DEFAULT_FRAME_ANCESTORS.to_string(),
        source("wechat", wechat, DEFAULT_FRAME_WECHAT)?,
        source("alipay", alipay, DEFAULT_FRAME_ALIPAY)?,
        source("baidu", baidu, DEFAULT_FRAME_BAIDU)?,
    ];
    let value = |list: &str| {
        HeaderValue::from_str(&format!("{policy}; frame-ancestors {list}")).map_err(|_| {
            ConfigError::at(
                format!("{path}.h5"),
                "the Content-Security-Policy is not a valid header value (visible ASCII only)",
            )
        })
    };
    Ok(H5Headers {
        csp: [
            value(&lists[0])?,
            value(&lists[1])?,
            value(&lists[2])?,
            value(&lists[3])?,
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::VerificationFile;

    fn file(name: &str, content: &str) -> VerificationFile {
        VerificationFile {
            channel: "wechat".into(),
            name: name.into(),
            content: content.into(),
        }
    }

    fn settings(files: Vec<VerificationFile>) -> H5Settings {
        H5Settings {
            hosts: vec!["h5.city.example".into()],
            verification_files: files,
        }
    }

    #[test]
    fn verification_files_are_checked_with_their_path() {
        let ok = plan(Some(&settings(vec![file(
            "MP_verify_abc123.txt",
            "abc123",
        )])))
        .unwrap();
        assert_eq!(&*ok.files["MP_verify_abc123.txt"], "abc123");
        for (name, content, path) in [
            ("../etc/passwd", "x", "h5.verification_files[0].name"),
            (".hidden", "x", "h5.verification_files[0].name"),
            ("a/b.txt", "x", "h5.verification_files[0].name"),
            ("", "x", "h5.verification_files[0].name"),
            ("a.txt", "bell\u{7}", "h5.verification_files[0].content"),
        ] {
            let e = plan(Some(&settings(vec![file(name, content)]))).unwrap_err();
            assert_eq!(e.path, path, "{name:?}: {e}");
        }
        let long = "x".repeat(129);
        assert!(plan(Some(&settings(vec![file(&long, "x")]))).is_err());
        let big = "x".repeat(4097);
        assert!(plan(Some(&settings(vec![file("a.txt", &big)]))).is_err());
        let e = plan(Some(&settings(vec![
            file("a.txt", "1"),
            file("a.txt", "2"),
        ])))
        .unwrap_err();
        assert_eq!(e.path, "h5.verification_files[1].name");
        let mut s = settings(vec![file("a.txt", "1")]);
        s.verification_files[0].channel = "weixin".into();
        assert_eq!(
            plan(Some(&s)).unwrap_err().path,
            "h5.verification_files[0].channel"
        );
    }

    #[test]
    fn hosts_match_without_port_and_case() {
        let p = plan(Some(&settings(vec![]))).unwrap();
        assert!(p.serves_host(Some("h5.city.example")));
        assert!(p.serves_host(Some("H5.City.Example:8443")));
        assert!(!p.serves_host(Some("api.city.example")));
        assert!(!p.serves_host(None));
        assert!(H5Plan::default().serves_host(None));
    }

    #[test]
    fn routes_must_be_stripped_literal_prefixes() {
        let pats =
            |s: &[&str]| -> Vec<PathPattern> { s.iter().map(|p| p.parse().unwrap()).collect() };
        assert!(check_route("routes[0]", &pats(&["/h5/a/*"]), true).is_ok());
        for bad in ["/h5/a", "/h5/{x}/*", "/*"] {
            let e = check_route("routes[3]", &pats(&[bad]), true).unwrap_err();
            assert_eq!(e.path, "routes[3].paths[0]", "{bad}");
            assert!(e.message.contains("prefix path like /h5/agency/*"));
        }
        let e = check_route("routes[0]", &pats(&["/h5/a/*"]), false).unwrap_err();
        assert_eq!(e.path, "routes[0].strip_prefix");
    }

    #[test]
    fn headers_have_a_frame_policy_per_channel() {
        let h = headers("services[0]", None).unwrap();
        let csp = |c| h.csp(c).to_str().unwrap().to_string();
        assert!(csp(Channel::Unknown).ends_with("; frame-ancestors 'self'"));
        assert!(csp(Channel::Wechat).ends_with("; frame-ancestors 'none'"));
        assert!(csp(Channel::Alipay).ends_with("; frame-ancestors 'none'"));
        assert!(csp(Channel::Baidu).contains("https://*.smartapps.cn"));
        assert!(csp(Channel::Wechat).starts_with("default-src 'self';"));
        let o = H5Service {
            csp: Some("default-src 'self' https://cdn.example".into()),
            frame_ancestors: FrameAncestors {
                wechat: Some("'self'".into()),
                ..Default::default()
            },
        };
        let h = headers("services[0]", Some(&o)).unwrap();
        assert_eq!(
            h.csp(Channel::Wechat).to_str().unwrap(),
            "default-src 'self' https://cdn.example; frame-ancestors 'self'"
        );
        let bad = H5Service {
            csp: Some("default-src 'self'; frame-ancestors *".into()),
            ..Default::default()
        };
        assert_eq!(
            headers("services[2]", Some(&bad)).unwrap_err().path,
            "services[2].h5.csp"
        );
        let bad = H5Service {
            frame_ancestors: FrameAncestors {
                baidu: Some("'self'; script-src *".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(
            headers("services[0]", Some(&bad)).unwrap_err().path,
            "services[0].h5.frame_ancestors.baidu"
        );
    }
}
