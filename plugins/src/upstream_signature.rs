//! `upstream-signature`: sign what an agency backend receives, so it can prove the call came
//! through Fenfa.
//!
//! Config: `{ "keys": [ { "id": "k2026a", "secret": "<base64 of ≥ 32 bytes>" }, … ] }` — one
//! agency's keys. The first key signs; the others are only listed so that an agency can switch
//! keys with an overlap (its backend accepts both while it rotates). The gateway normally builds
//! this config from `agencies[].signing_keys` and attaches the plugin to every route of that
//! agency's services.
//!
//! In the upstream-request phase (after `jwt-auth` set the identity headers) it adds
//! `X-Fenfa-Timestamp`, `X-Fenfa-Key-Id`, `X-Fenfa-Signature-Algorithm` and `X-Fenfa-Signature`:
//! base64 (standard alphabet, padded) of the HMAC under the key's decoded bytes over the
//! [canonical string](canonical). `"algorithm": "hmac-sha256"` (default) or `"hmac-sm3"` (国密
//! SM3, GB/T 32905); the canonical string's first line names the scheme (`FENFA-HMAC-SHA256`,
//! `FENFA-HMAC-SM3`), so the algorithm is itself signed.
//! `docs/upstream-signature.md` is the agencies' reference; keep the two in step (a test checks
//! the doc's worked example).
//!
//! Secrets never appear in `Debug` output or in configuration errors.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use http::{HeaderName, HeaderValue};
use serde::Deserialize;

use crate::contract::{HeaderEdits, Plugin, PluginFactory, RequestCtx, SchemaError, UpstreamView};

/// Runs late in the upstream-request phase, after every plugin that sets headers it signs.
pub const PRIORITY: i32 = 500;

/// The first line of the canonical string: names the scheme and its version.
pub const SCHEME: &str = "FENFA-HMAC-SHA256";
/// The first line of the canonical string with `algorithm: hmac-sm3`.
pub const SCHEME_SM3: &str = "FENFA-HMAC-SM3";

pub const ALGORITHM_HEADER: HeaderName = HeaderName::from_static("x-fenfa-signature-algorithm");

/// The MAC an agency's backend checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    #[default]
    HmacSha256,
    /// HMAC (RFC 2104) over SM3 (GB/T 32905), 32-byte tags.
    HmacSm3,
}

impl Algorithm {
    /// The canonical string's first line.
    pub fn scheme(self) -> &'static str {
        match self {
            Algorithm::HmacSha256 => SCHEME,
            Algorithm::HmacSm3 => SCHEME_SM3,
        }
    }

    /// `X-Fenfa-Signature-Algorithm`.
    pub fn header(self) -> &'static str {
        match self {
            Algorithm::HmacSha256 => "HMAC-SHA256",
            Algorithm::HmacSm3 => "HMAC-SM3",
        }
    }
}

pub const TIMESTAMP_HEADER: HeaderName = HeaderName::from_static("x-fenfa-timestamp");
pub const KEY_ID_HEADER: HeaderName = HeaderName::from_static("x-fenfa-key-id");
pub const SIGNATURE_HEADER: HeaderName = HeaderName::from_static("x-fenfa-signature");

/// The identity headers set by `jwt-auth`, in canonical-string order, then the request id.
pub const SIGNED_HEADERS: [&str; 4] = [
    "x-fenfa-user",
    "x-fenfa-channel",
    "x-fenfa-app",
    "x-request-id",
];

/// Shortest secret accepted, in bytes (the HMAC-SHA256 output size).
pub const MIN_SECRET_BYTES: usize = 32;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    keys: Vec<KeyConfig>,
    #[serde(default)]
    algorithm: Algorithm,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyConfig {
    id: String,
    secret: String,
}

/// What one request's signature is computed over, as sent upstream.
#[derive(Debug, Clone, Copy)]
pub struct Canonical<'a> {
    /// Unix seconds, as sent in `X-Fenfa-Timestamp`.
    pub timestamp: u64,
    /// The method (upper-cased when the string is built).
    pub method: &'a str,
    /// The path as sent upstream (after rewrites), still percent-encoded.
    pub path: &'a str,
    /// The query as sent upstream, without `?`; empty if none.
    pub query: &'a str,
    /// Raw values of [`SIGNED_HEADERS`] as sent upstream; empty if absent.
    pub headers: [&'a [u8]; 4],
}

/// The canonical string: these lines joined by `\n`, with no trailing newline —
/// `FENFA-HMAC-SHA256`, timestamp, METHOD, path, query, `x-fenfa-user`, `x-fenfa-channel`,
/// `x-fenfa-app`, `x-request-id`. No field can contain a newline (HTTP forbids it in paths and
/// header values), so the string is unambiguous.
pub fn canonical(c: &Canonical<'_>) -> Vec<u8> {
    canonical_for(Algorithm::HmacSha256, c)
}

/// [`canonical`] for `algorithm` (its scheme on the first line).
pub fn canonical_for(algorithm: Algorithm, c: &Canonical<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + c.path.len() + c.query.len());
    out.extend_from_slice(algorithm.scheme().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(c.timestamp.to_string().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(c.method.to_ascii_uppercase().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(c.path.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(c.query.as_bytes());
    for h in c.headers {
        out.push(b'\n');
        out.extend_from_slice(h);
    }
    out
}

/// A keyed MAC, ready to sign.
enum Signer {
    Sha256(ring::hmac::Key),
    /// Keyed once; each signature clones the keyed state.
    Sm3(hmac::Hmac<sm3::Sm3>),
}

pub struct UpstreamSignature {
    /// The signing key's id (`X-Fenfa-Key-Id`).
    key_id: HeaderValue,
    algorithm: Algorithm,
    key: Signer,
    /// Ids of the keys listed after the first (still accepted by the backend; not used here).
    other_key_ids: Vec<String>,
}

impl fmt::Debug for UpstreamSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamSignature")
            .field("key_id", &self.key_id)
            .field("algorithm", &self.algorithm)
            .field("secret", &"<redacted>")
            .field("other_key_ids", &self.other_key_ids)
            .finish()
    }
}

impl UpstreamSignature {
    /// The signature (base64, standard alphabet, padded) of one canonical string.
    pub fn sign(&self, c: &Canonical<'_>) -> String {
        let text = canonical_for(self.algorithm, c);
        let b64 = &base64::engine::general_purpose::STANDARD;
        match &self.key {
            Signer::Sha256(k) => b64.encode(ring::hmac::sign(k, &text).as_ref()),
            Signer::Sm3(k) => {
                use hmac::Mac;
                let mut mac = k.clone();
                mac.update(&text);
                b64.encode(mac.finalize().into_bytes())
            }
        }
    }
}

impl Plugin for UpstreamSignature {
    fn name(&self) -> &'static str {
        "upstream-signature"
    }

    fn priority(&self) -> i32 {
        PRIORITY
    }

    fn upstream_request(
        &self,
        req: &UpstreamView<'_>,
        ctx: &RequestCtx,
        headers: &mut dyn HeaderEdits,
    ) {
        // Without a verified identity nothing vouches for identity headers: whatever is there
        // came from the client, so it is dropped rather than signed.
        if ctx.identity.is_none() {
            for name in &SIGNED_HEADERS[..3] {
                headers.remove(name);
            }
        }
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let signature = {
            let value = |name: &str| headers.get(name).map_or(&b""[..], |v| v.as_bytes());
            self.sign(&Canonical {
                timestamp,
                method: req.method.as_str(),
                path: req.path,
                query: req.query.unwrap_or(""),
                headers: SIGNED_HEADERS.map(value),
            })
        };
        headers.insert(TIMESTAMP_HEADER, HeaderValue::from(timestamp));
        headers.insert(KEY_ID_HEADER, self.key_id.clone());
        headers.insert(
            ALGORITHM_HEADER,
            HeaderValue::from_static(self.algorithm.header()),
        );
        if let Ok(v) = HeaderValue::from_str(&signature) {
            headers.insert(SIGNATURE_HEADER, v);
        }
    }
}

pub struct Factory;

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        "upstream-signature"
    }

    fn build(&self, config: &serde_json::Value) -> Result<Arc<dyn Plugin>, SchemaError> {
        Ok(Arc::new(build(config)?))
    }
}

/// The plugin a config describes (secrets never in its errors).
fn build(config: &serde_json::Value) -> Result<UpstreamSignature, SchemaError> {
    const FIELDS: [&str; 4] = ["keys", "id", "secret", "algorithm"];
    let c: Config = SchemaError::parse(config).map_err(|e| SchemaError {
        path: redact_path(&e.path, &FIELDS),
        message: redact(&e.message, &FIELDS),
    })?;
    if c.keys.is_empty() {
        return Err(SchemaError::new(
            "keys",
            "list at least one key `{id, secret}`; the first one signs",
        ));
    }
    let mut signing = None;
    let mut other_key_ids = Vec::new();
    for (i, k) in c.keys.iter().enumerate() {
        check_key_id(&k.id).map_err(|m| SchemaError::new(format!("keys[{i}].id"), m))?;
        if c.keys[..i].iter().any(|o| o.id == k.id) {
            return Err(SchemaError::new(
                format!("keys[{i}].id"),
                format!("duplicate key id `{}`", k.id),
            ));
        }
        let secret = decode_secret(&k.secret)
            .map_err(|m| SchemaError::new(format!("keys[{i}].secret"), m))?;
        if i == 0 {
            let key_id = HeaderValue::from_str(&k.id)
                .map_err(|_| SchemaError::new("keys[0].id", "not a valid header value"))?;
            let key = match c.algorithm {
                Algorithm::HmacSha256 => {
                    Signer::Sha256(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret))
                }
                Algorithm::HmacSm3 => Signer::Sm3(
                    <hmac::Hmac<sm3::Sm3> as hmac::Mac>::new_from_slice(&secret).map_err(|_| {
                        SchemaError::new(format!("keys[{i}].secret"), "unusable key")
                    })?,
                ),
            };
            signing = Some((key_id, key));
        } else {
            other_key_ids.push(k.id.clone());
        }
    }
    let Some((key_id, key)) = signing else {
        return Err(SchemaError::new("keys", "list at least one key"));
    };
    Ok(UpstreamSignature {
        key_id,
        algorithm: c.algorithm,
        key,
        other_key_ids,
    })
}

fn check_key_id(id: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err("expected 1–64 characters from `A-Z a-z 0-9 - _ .` (e.g. `k2026a`)".into())
    }
}

/// Decodes a secret; messages never echo it.
fn decode_secret(secret: &str) -> Result<Vec<u8>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(secret.trim())
        .map_err(|_| {
            "not base64 (standard alphabet, padded); generate one with `openssl rand -base64 32`"
                .to_string()
        })?;
    if bytes.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "decodes to {} bytes; at least {MIN_SECRET_BYTES} random bytes are needed \
             (`openssl rand -base64 32`)",
            bytes.len()
        ));
    }
    Ok(bytes)
}

/// Replaces every quoted (`"…"`) or back-quoted part of a serde message with `…`, except the
/// schema's own field names: a misplaced secret must not end up in a log or an API answer.
fn redact(message: &str, keep: &[&str]) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find(['"', '`']) {
        let quote = rest[start..].chars().next().unwrap_or('"');
        out.push_str(&rest[..=start]);
        let after = &rest[start + 1..];
        match after.find(quote) {
            Some(end) => {
                let inner = &after[..end];
                out.push_str(if keep.contains(&inner) { inner } else { "…" });
                out.push(quote);
                rest = &after[end + 1..];
            }
            None => {
                out.push('…');
                return out;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Replaces path segments that are not the schema's field names (an unknown key could be a
/// misplaced secret) with `…`, keeping list indices: `keys[0].…`.
fn redact_path(path: &str, keep: &[&str]) -> String {
    path.split('.')
        .map(|seg| {
            let (name, index) = seg.split_at(seg.find('[').unwrap_or(seg.len()));
            if name.is_empty() || keep.contains(&name) {
                seg.to_string()
            } else {
                format!("…{index}")
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Identity;
    use serde_json::json;

    /// The worked example of `docs/upstream-signature.md`.
    const SECRET: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const EXAMPLE: Canonical<'static> = Canonical {
        timestamp: 1767225600,
        method: "POST",
        path: "/api/v2/account/123/statement",
        query: "month=5&lang=zh-CN",
        headers: [
            b"u_8f3a2c91",
            b"wechat",
            b"wx1234567890abcdef",
            b"5f0c3a9e-7b1d-4c2e-9a8f-1d2e3f4a5b6c",
        ],
    };
    /// Computed by Python's `hmac` (see the doc), pinned here so a change is noticed.
    const EXAMPLE_SIGNATURE: &str = "T9qysj7XJ/YZs0J8Jr5p8ECXL3DAXboutx/fbqvkUDo=";

    struct Headers(http::HeaderMap);

    impl HeaderEdits for Headers {
        fn get(&self, name: &str) -> Option<&HeaderValue> {
            self.0.get(name)
        }
        fn insert(&mut self, name: HeaderName, value: HeaderValue) {
            self.0.insert(name, value);
        }
        fn remove(&mut self, name: &str) {
            self.0.remove(name);
        }
    }

    fn plugin(config: serde_json::Value) -> UpstreamSignature {
        // What the factory builds (as the gateway does), as the concrete type.
        build(&config).unwrap()
    }

    fn example_plugin() -> UpstreamSignature {
        plugin(json!({"keys": [{"id": "k2026a", "secret": SECRET}]}))
    }

    fn err(config: serde_json::Value) -> SchemaError {
        Factory.build(&config).unwrap_err()
    }

    /// Signs the worked example with Python's standard library, independently of this crate.
    fn python_signature(c: &Canonical<'_>, secret_b64: &str) -> String {
        let script = r#"
import base64, hashlib, hmac, sys
secret_b64, ts, method, path, query, user, channel, app, request_id = sys.argv[1:]
canonical = "\n".join(["FENFA-HMAC-SHA256", ts, method.upper(), path, query,
                       user, channel, app, request_id])
key = base64.b64decode(secret_b64, validate=True)
mac = hmac.new(key, canonical.encode("utf-8"), hashlib.sha256).digest()
print(base64.b64encode(mac).decode("ascii"), end="")
"#;
        let h = |i: usize| std::str::from_utf8(c.headers[i]).unwrap().to_string();
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(secret_b64)
            .arg(c.timestamp.to_string())
            .arg(c.method)
            .arg(c.path)
            .arg(c.query)
            .args([h(0), h(1), h(2), h(3)])
            .output()
            .expect("python3 is needed to check the signature independently");
        assert!(
            out.status.success(),
            "python3 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn worked_example_signature_matches_an_independent_python_implementation() {
        let rust = example_plugin().sign(&EXAMPLE);
        let python = python_signature(&EXAMPLE, SECRET);
        assert_eq!(rust, python);
        assert_eq!(rust, EXAMPLE_SIGNATURE);
    }

    #[test]
    fn worked_example_in_the_doc_matches_the_code() {
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/upstream-signature.md"
        ))
        .expect("docs/upstream-signature.md");
        let canonical = String::from_utf8(canonical(&EXAMPLE)).unwrap();
        assert!(
            doc.contains(&canonical),
            "the doc shows another canonical string"
        );
        assert!(doc.contains(SECRET));
        assert!(
            doc.contains(EXAMPLE_SIGNATURE),
            "the doc shows another signature"
        );
        assert!(
            doc.contains(EXAMPLE_SM3_SIGNATURE),
            "the doc shows another HMAC-SM3 signature"
        );
    }

    #[test]
    fn canonical_string_is_nine_lines_without_trailing_newline() {
        let s = String::from_utf8(canonical(&Canonical {
            method: "get",
            query: "",
            headers: [b"", b"", b"", b"r1"],
            ..EXAMPLE
        }))
        .unwrap();
        assert_eq!(
            s,
            "FENFA-HMAC-SHA256\n1767225600\nGET\n/api/v2/account/123/statement\n\n\n\n\nr1"
        );
    }

    #[test]
    fn signature_changes_with_every_signed_field() {
        let p = example_plugin();
        let base = p.sign(&EXAMPLE);
        let variants = [
            Canonical {
                timestamp: 1767225601,
                ..EXAMPLE
            },
            Canonical {
                method: "PUT",
                ..EXAMPLE
            },
            Canonical {
                path: "/api/v2/account/124/statement",
                ..EXAMPLE
            },
            Canonical {
                query: "month=6&lang=zh-CN",
                ..EXAMPLE
            },
            Canonical {
                headers: [
                    b"u_other",
                    EXAMPLE.headers[1],
                    EXAMPLE.headers[2],
                    EXAMPLE.headers[3],
                ],
                ..EXAMPLE
            },
            Canonical {
                headers: [
                    EXAMPLE.headers[0],
                    b"alipay",
                    EXAMPLE.headers[2],
                    EXAMPLE.headers[3],
                ],
                ..EXAMPLE
            },
            Canonical {
                headers: [
                    EXAMPLE.headers[0],
                    EXAMPLE.headers[1],
                    b"wx0",
                    EXAMPLE.headers[3],
                ],
                ..EXAMPLE
            },
            Canonical {
                headers: [
                    EXAMPLE.headers[0],
                    EXAMPLE.headers[1],
                    EXAMPLE.headers[2],
                    b"r2",
                ],
                ..EXAMPLE
            },
        ];
        for v in variants {
            assert_ne!(p.sign(&v), base, "{v:?}");
        }
    }

    fn identity() -> Identity {
        Identity {
            user: "u_8f3a2c91".into(),
            channel: "wechat".into(),
            app: "wx1234567890abcdef".into(),
            token_id: None,
            expires_at: u64::MAX,
        }
    }

    #[test]
    fn upstream_request_gets_timestamp_key_id_and_a_signature_over_what_is_sent() {
        let p: Arc<dyn Plugin> = Factory
            .build(&json!({"keys": [{"id": "k2026a", "secret": SECRET}]}))
            .unwrap();
        let mut h = Headers(http::HeaderMap::new());
        for (name, value) in SIGNED_HEADERS.iter().zip(EXAMPLE.headers) {
            h.0.insert(*name, HeaderValue::from_bytes(value).unwrap());
        }
        let ctx = RequestCtx {
            identity: Some(identity()),
            ..RequestCtx::default()
        };
        let view = UpstreamView {
            method: &http::Method::POST,
            path: EXAMPLE.path,
            query: Some(EXAMPLE.query),
        };
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        p.upstream_request(&view, &ctx, &mut h);
        let ts: u64 = h.0["x-fenfa-timestamp"].to_str().unwrap().parse().unwrap();
        assert!(ts >= before && ts <= before + 5);
        assert_eq!(h.0["x-fenfa-key-id"], "k2026a");
        assert_eq!(h.0["x-fenfa-signature-algorithm"], "HMAC-SHA256");
        let expected = python_signature(
            &Canonical {
                timestamp: ts,
                ..EXAMPLE
            },
            SECRET,
        );
        assert_eq!(h.0["x-fenfa-signature"], expected.as_str());
    }

    /// GB/T 32905-2016 appendix A: SM3 of `abc` and of `abcd` × 16, before trusting the crate.
    #[test]
    fn sm3_matches_the_standards_test_vectors() {
        use sm3::Digest;
        let hex = |d: &[u8]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(
            hex(&sm3::Sm3::digest(b"abc")),
            "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
        );
        assert_eq!(
            hex(&sm3::Sm3::digest("abcd".repeat(16).as_bytes())),
            "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"
        );
    }

    /// HMAC-SM3 of the worked example by Python's `gmssl` SM3 and an HMAC written out in the
    /// test (RFC 2104, 64-byte blocks), independently of this crate.
    fn python_sm3_signature(c: &Canonical<'_>, secret_b64: &str) -> String {
        let script = r#"
import base64, sys
from gmssl import sm3, func
def h(b): return bytes.fromhex(sm3.sm3_hash(func.bytes_to_list(b)))
secret_b64, ts, method, path, query, user, channel, app, request_id = sys.argv[1:]
canonical = "\n".join(["FENFA-HMAC-SM3", ts, method.upper(), path, query,
                       user, channel, app, request_id]).encode("utf-8")
key = base64.b64decode(secret_b64, validate=True)
if len(key) > 64: key = h(key)
key = key.ljust(64, b"\0")
inner = h(bytes(k ^ 0x36 for k in key) + canonical)
mac = h(bytes(k ^ 0x5c for k in key) + inner)
print(base64.b64encode(mac).decode("ascii"), end="")
"#;
        let h = |i: usize| std::str::from_utf8(c.headers[i]).unwrap().to_string();
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(secret_b64)
            .arg(c.timestamp.to_string())
            .arg(c.method)
            .arg(c.path)
            .arg(c.query)
            .args([h(0), h(1), h(2), h(3)])
            .output()
            .expect("python3 is needed to check the signature independently");
        assert!(
            out.status.success(),
            "python3 with gmssl (pip install gmssl) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The SM3 worked example of `docs/upstream-signature.md`, pinned.
    const EXAMPLE_SM3_SIGNATURE: &str = "TnHsP1NAZfjYLaKzhHzC1iS9uAzjnIJnI4wO7/28jQ8=";

    #[test]
    fn hmac_sm3_signature_matches_an_independent_gmssl_implementation() {
        let p =
            plugin(json!({"keys": [{"id": "k2026a", "secret": SECRET}], "algorithm": "hmac-sm3"}));
        let rust = p.sign(&EXAMPLE);
        assert_eq!(rust, python_sm3_signature(&EXAMPLE, SECRET));
        assert_eq!(rust, EXAMPLE_SM3_SIGNATURE);
        assert_ne!(rust, EXAMPLE_SIGNATURE);
        // The algorithm is named in what is signed and in a header.
        assert!(canonical_for(Algorithm::HmacSm3, &EXAMPLE).starts_with(b"FENFA-HMAC-SM3\n"));
        let mut h = Headers(http::HeaderMap::new());
        let ctx = RequestCtx {
            identity: Some(identity()),
            ..RequestCtx::default()
        };
        let view = UpstreamView {
            method: &http::Method::GET,
            path: "/x",
            query: None,
        };
        p.upstream_request(&view, &ctx, &mut h);
        assert_eq!(h.0["x-fenfa-signature-algorithm"], "HMAC-SM3");
        let e = err(json!({"keys": [{"id": "k", "secret": SECRET}], "algorithm": "hmac-md5"}));
        assert_eq!(e.path, "algorithm");
    }

    #[test]
    fn first_key_signs_and_later_keys_are_only_listed() {
        let other = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let p = plugin(json!({"keys": [
            {"id": "k2026a", "secret": SECRET},
            {"id": "k2025b", "secret": other},
        ]}));
        assert_eq!(p.key_id, "k2026a");
        assert_eq!(p.sign(&EXAMPLE), EXAMPLE_SIGNATURE);
        assert_eq!(p.other_key_ids, ["k2025b"]);
    }

    #[test]
    fn client_supplied_identity_headers_are_dropped_when_no_one_is_signed_in() {
        let p: Arc<dyn Plugin> = Factory
            .build(&json!({"keys": [{"id": "k2026a", "secret": SECRET}]}))
            .unwrap();
        let mut h = Headers(http::HeaderMap::new());
        h.0.insert("x-fenfa-user", HeaderValue::from_static("forged"));
        h.0.insert("x-fenfa-channel", HeaderValue::from_static("wechat"));
        h.0.insert("x-request-id", HeaderValue::from_static("r1"));
        let view = UpstreamView {
            method: &http::Method::GET,
            path: "/a",
            query: None,
        };
        p.upstream_request(&view, &RequestCtx::default(), &mut h);
        assert!(h.0.get("x-fenfa-user").is_none());
        assert!(h.0.get("x-fenfa-channel").is_none());
        let ts: u64 = h.0["x-fenfa-timestamp"].to_str().unwrap().parse().unwrap();
        let expected = example_plugin().sign(&Canonical {
            timestamp: ts,
            method: "GET",
            path: "/a",
            query: "",
            headers: [b"", b"", b"", b"r1"],
        });
        assert_eq!(h.0["x-fenfa-signature"], expected.as_str());
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let p = example_plugin();
        let dbg = format!("{p:?}");
        assert!(dbg.contains("k2026a"));
        assert!(dbg.contains("<redacted>"));
        assert!(!dbg.contains(SECRET));
        assert!(!dbg.contains("AAECAw"));
        let built = Factory
            .build(&json!({"keys": [{"id": "k2026a", "secret": SECRET}]}))
            .unwrap();
        assert!(!format!("{built:?}").contains("AAECAw"));
    }

    #[test]
    fn empty_key_list_is_a_config_error() {
        let e = err(json!({"keys": []}));
        assert_eq!(e.path, "keys");
        let e = err(json!({}));
        assert!(e.message.contains("missing field `keys`"), "{e}");
    }

    #[test]
    fn short_secret_is_rejected_without_echoing_it() {
        let short = base64::engine::general_purpose::STANDARD.encode([9u8; 16]);
        let e = err(json!({"keys": [
            {"id": "k1", "secret": SECRET},
            {"id": "k2", "secret": short},
        ]}));
        assert_eq!(e.path, "keys[1].secret");
        assert!(e.message.contains("16 bytes"), "{e}");
        assert!(!e.to_string().contains(&short));
    }

    #[test]
    fn non_base64_secret_is_rejected_without_echoing_it() {
        let e = err(json!({"keys": [{"id": "k1", "secret": "correct horse battery staple!!"}]}));
        assert_eq!(e.path, "keys[0].secret");
        assert!(!e.to_string().contains("horse"), "{e}");
    }

    #[test]
    fn misplaced_secret_is_not_echoed_in_a_type_error() {
        let e = err(json!({"keys": SECRET}));
        assert_eq!(e.path, "keys");
        assert!(!e.to_string().contains("AAECAw"), "{e}");
        let e = err(json!({"keys": [{"id": "k1", "secret": SECRET, SECRET: 1}]}));
        assert!(!e.to_string().contains("AAECAw"), "{e}");
        assert!(e.message.contains("`id`"), "{e}");
    }

    #[test]
    fn bad_and_duplicate_key_ids_are_rejected_with_their_path() {
        let e = err(json!({"keys": [{"id": "k 1", "secret": SECRET}]}));
        assert_eq!(e.path, "keys[0].id");
        let e =
            err(json!({"keys": [{"id": "k1", "secret": SECRET}, {"id": "k1", "secret": SECRET}]}));
        assert_eq!(e.path, "keys[1].id");
        assert!(e.message.contains("duplicate"), "{e}");
    }

    #[test]
    fn redact_keeps_field_names_and_hides_everything_else_quoted() {
        assert_eq!(
            redact(
                "invalid type: string \"s3cret\", expected a sequence",
                &["keys"]
            ),
            "invalid type: string \"…\", expected a sequence"
        );
        assert_eq!(
            redact(
                "unknown field `s3cret`, expected `id` or `secret`",
                &["id", "secret"]
            ),
            "unknown field `…`, expected `id` or `secret`"
        );
        assert_eq!(redact("unterminated \"s3cret", &[]), "unterminated \"…");
        assert_eq!(redact_path("keys[1].s3cret", &["keys"]), "keys[1].…");
        assert_eq!(redact_path("keys[1].id", &["keys", "id"]), "keys[1].id");
    }
}
