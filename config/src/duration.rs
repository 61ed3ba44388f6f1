//! Human durations in config files: `250ms`, `2s`, `1m`, `1h`.
//!
//! A bare number is rejected on purpose: `timeout: 30` is ambiguous (seconds? milliseconds?) and an
//! operator who guesses wrong gets a gateway that behaves a thousand times off.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A duration written as a number followed by a unit (`ms`, `s`, `m`, `h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn from_millis(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }
    pub const fn from_secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }
}

impl std::str::FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("`{s}` has no unit; expected e.g. `500ms`, `2s`, `1m`, `1h`"))?;
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("`{s}` is not a duration; expected e.g. `500ms`, `2s`, `1m`"))?;
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            _ => {
                return Err(format!(
                    "`{s}` has unknown unit `{unit}`; expected one of ms, s, m, h"
                ))
            }
        };
        Ok(Self(d))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms % 1000 == 0 {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as `500ms`, `2s`, `1m`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "`{v}` has no unit; expected e.g. `{v}ms` or `{v}s`"
                )))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<HumanDuration, E> {
                self.visit_u64(v.unsigned_abs())
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_parse() {
        assert_eq!(
            "250ms".parse::<HumanDuration>().unwrap().0,
            Duration::from_millis(250)
        );
        assert_eq!(
            "2s".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(2)
        );
        assert_eq!(
            "3m".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(180)
        );
        assert_eq!(
            "1h".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn bare_numbers_and_unknown_units_are_rejected_with_a_hint() {
        let e = "30".parse::<HumanDuration>().unwrap_err();
        assert!(e.contains("no unit"), "{e}");
        let e = "3d".parse::<HumanDuration>().unwrap_err();
        assert!(e.contains("unknown unit `d`"), "{e}");
        let e: Result<HumanDuration, _> = serde_saphyr::from_str("30");
        assert!(e.unwrap_err().to_string().contains("no unit"));
    }
}
