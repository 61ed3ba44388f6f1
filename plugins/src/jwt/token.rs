//! The compact JWS form of a token: splitting, strict base64url, and the JSON of header and claims.
//!
//! Why a module of its own: this is the only code that reads attacker-controlled bytes before the
//! signature is checked, so it is small, allocation-light, and never panics. It decides nothing
//! about trust — that is `jwt_auth`'s job — and its errors never carry token content (claim
//! *names* from a fixed list only), because denial messages reach clients and logs.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::{self, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// The three segments of `header.payload.signature`, still encoded.
#[derive(Debug)]
pub struct Parts<'a> {
    /// `header.payload`: the bytes the signature covers.
    pub signing_input: &'a [u8],
    pub header: &'a str,
    pub payload: &'a str,
    pub signature: &'a str,
}

/// Splits a compact JWS into exactly three segments of the base64url alphabet (padding refused).
/// `None` when it is anything else.
pub fn split(token: &str) -> Option<Parts<'_>> {
    let bytes = token.as_bytes();
    if !bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return None;
    }
    let mut dots = token.match_indices('.').map(|(i, _)| i);
    let (first, second) = (dots.next()?, dots.next()?);
    if dots.next().is_some() || first == 0 || second == first + 1 {
        return None;
    }
    Some(Parts {
        signing_input: &bytes[..second],
        header: &token[..first],
        payload: &token[first + 1..second],
        signature: &token[second + 1..],
    })
}

/// Strict base64url without padding; non-canonical trailing bits are refused.
pub fn decode(segment: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(segment).ok()
}

/// Decodes into `buf`, returning the used prefix. `None` if invalid or longer than `buf`.
pub fn decode_into<'b>(segment: &str, buf: &'b mut [u8]) -> Option<&'b [u8]> {
    let n = URL_SAFE_NO_PAD.decode_slice(segment, buf).ok()?;
    buf.get(..n)
}

/// The JOSE header members `jwt-auth` reads. Unknown members are ignored except `crit`.
#[derive(Debug, Deserialize)]
pub struct Header {
    #[serde(default)]
    pub alg: Option<String>,
    #[serde(default)]
    pub kid: Option<String>,
    /// RFC 7515 §4.1.11: extensions the recipient must understand. We understand none.
    #[serde(default)]
    pub crit: Option<IgnoredAny>,
}

/// The registered and Fenfa claims. Other claims are ignored; a duplicated known claim is refused
/// (serde rejects duplicate fields), so two parsers can never disagree about which `sub` counts.
#[derive(Debug, Default, Deserialize)]
pub struct Claims {
    #[serde(default)]
    pub sub: Option<String>,
    #[serde(default)]
    pub chn: Option<String>,
    #[serde(default)]
    pub app: Option<String>,
    #[serde(default)]
    pub iss: Option<String>,
    #[serde(default)]
    pub aud: Option<Audience>,
    #[serde(default)]
    pub exp: Option<NumericDate>,
    #[serde(default)]
    pub nbf: Option<NumericDate>,
    #[serde(default)]
    pub jti: Option<String>,
}

/// Why the claims could not be read. `BadClaim` names the claim (from a fixed list), never its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimsError {
    NotAnObject,
    BadClaim(&'static str),
}

const CLAIM_NAMES: [&str; 8] = ["sub", "chn", "app", "iss", "aud", "exp", "nbf", "jti"];

impl Claims {
    pub fn parse(json: &[u8]) -> Result<Self, ClaimsError> {
        match serde_json::from_slice(json) {
            Ok(claims) => Ok(claims),
            // Slow path, for the error only: find which claim was wrong.
            Err(_) => {
                let mut de = serde_json::Deserializer::from_slice(json);
                let err = match serde_path_to_error::deserialize::<_, Claims>(&mut de) {
                    Ok(_) => return Err(ClaimsError::NotAnObject), // trailing data
                    Err(e) => e,
                };
                let path = err.path().to_string();
                let first = path.split(['.', '[']).next().unwrap_or("");
                match CLAIM_NAMES.iter().find(|name| **name == first) {
                    Some(name) if !err.inner().is_syntax() && !err.inner().is_eof() => {
                        Err(ClaimsError::BadClaim(name))
                    }
                    _ => Err(ClaimsError::NotAnObject),
                }
            }
        }
    }
}

/// `aud`: one string or an array of strings (RFC 7519 §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub fn contains(&self, audience: &str) -> bool {
        match self {
            Self::One(a) => a == audience,
            Self::Many(list) => list.iter().any(|a| a == audience),
        }
    }
}

impl<'de> Deserialize<'de> for Audience {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        OneOrMany::deserialize(d).map(|v| match v {
            OneOrMany::One(s) => Self::One(s),
            OneOrMany::Many(list) => Self::Many(list),
        })
    }
}

/// A string or a list of strings (`aud` claims; the plugin's `issuer` attribute).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s],
            Self::Many(list) => list,
        }
    }
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16));
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(OneOrMany::Many(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// Seconds since the epoch (RFC 7519 §2). Fractions are truncated; negative values are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NumericDate(pub u64);

impl<'de> Deserialize<'de> for NumericDate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = NumericDate;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a non-negative number of seconds since the epoch")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<NumericDate, E> {
                Ok(NumericDate(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<NumericDate, E> {
                u64::try_from(v)
                    .map(NumericDate)
                    .map_err(|_| E::custom("negative time"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<NumericDate, E> {
                if v.is_finite() && v >= 0.0 {
                    // `as` saturates for floats beyond u64::MAX.
                    Ok(NumericDate(v.trunc() as u64))
                } else {
                    Err(E::custom("not a finite non-negative time"))
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_needs_exactly_three_segments_of_base64url() {
        assert!(split("a.b.c").is_some());
        assert!(
            split("a.b.").is_some(),
            "empty signature is structurally fine"
        );
        assert!(split("a.b").is_none());
        assert!(split("a.b.c.d").is_none());
        assert!(split(".b.c").is_none());
        assert!(split("a..c").is_none());
        assert!(split("a.b=.c").is_none());
        assert!(split("a.b.c d").is_none());
        assert!(split("a+b.c.d").is_none());
    }

    #[test]
    fn decoding_refuses_padding_and_overlong_output() {
        assert_eq!(decode("YQ"), Some(b"a".to_vec()));
        assert_eq!(decode("YQ=="), None);
        assert_eq!(decode("YR"), None, "non-canonical trailing bits");
        let mut buf = [0u8; 2];
        assert_eq!(
            decode_into("YWJj", &mut buf),
            None,
            "too long for the buffer"
        );
        let mut buf = [0u8; 8];
        assert_eq!(decode_into("YWJj", &mut buf), Some(&b"abc"[..]));
    }

    #[test]
    fn claim_errors_name_the_claim_but_not_the_value() {
        assert_eq!(
            Claims::parse(br#"{"sub": 1234567}"#).err(),
            Some(ClaimsError::BadClaim("sub"))
        );
        assert_eq!(
            Claims::parse(br#"{"exp": -5}"#).err(),
            Some(ClaimsError::BadClaim("exp"))
        );
        assert_eq!(
            Claims::parse(br#"{"sub": "a", "sub": "b"}"#).err(),
            Some(ClaimsError::NotAnObject),
            "duplicate claims are refused"
        );
        assert_eq!(Claims::parse(b"[1]").err(), Some(ClaimsError::NotAnObject));
        assert_eq!(Claims::parse(b"{} x").err(), Some(ClaimsError::NotAnObject));
    }

    #[test]
    fn numeric_dates_and_audiences_take_both_shapes() {
        let c = Claims::parse(br#"{"exp": 10.9, "nbf": 3, "aud": ["x", "y"]}"#).expect("ok");
        assert_eq!(c.exp, Some(NumericDate(10)));
        assert_eq!(c.nbf, Some(NumericDate(3)));
        assert!(c.aud.as_ref().is_some_and(|a| a.contains("y")));
        let c = Claims::parse(br#"{"aud": "x"}"#).expect("ok");
        assert!(c.aud.is_some_and(|a| a.contains("x") && !a.contains("y")));
    }
}
