//! Secrets in receiver configs: kept out of `Debug`, errors and rendered requests.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// What every secret is shown as.
pub const REDACTED: &str = "<redacted>";

/// A configuration value that must never be shown: an API key, a webhook token, a
/// password. `Debug` prints `<redacted>`; there is no `Display` and no `Serialize`, so the
/// value only leaves through [`Secret::expose`], at the point of use.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// Deserializes from a string only; a value of another type (an unquoted number would
/// lose its leading zeros) is refused without being echoed in the error (serde's own
/// message would quote it).
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SecretVisitor;

        impl Visitor<'_> for SecretVisitor {
            type Value = Secret;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret::new(v))
            }

            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Secret, E> {
                Err(E::custom(NOT_A_STRING))
            }

            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Secret, E> {
                Err(E::custom(NOT_A_STRING))
            }

            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Secret, E> {
                Err(E::custom(NOT_A_STRING))
            }

            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Secret, E> {
                Err(E::custom(NOT_A_STRING))
            }
        }

        deserializer.deserialize_any(SecretVisitor)
    }
}

const NOT_A_STRING: &str = "a secret must be a string (quote it)";

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the request that needs it (and for the [`Redactor`]).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Replaces every occurrence of a receiver's secrets with `<redacted>`: applied to
/// rendered requests and to every error text (a server may echo a key in its reply).
#[derive(Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret containing another is replaced whole.
    secrets: Vec<String>,
}

impl Redactor {
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Redactor { secrets }
    }

    /// `text` with every secret replaced.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), REDACTED);
            }
        }
        out
    }

    /// Scrubs every string (keys included) of a JSON value in place.
    pub fn scrub_json(&self, value: &mut serde_json::Value) {
        use serde_json::Value;
        match value {
            Value::String(s) => *s = self.scrub(s),
            Value::Array(items) => items.iter_mut().for_each(|v| self.scrub_json(v)),
            Value::Object(map) => {
                let entries = std::mem::take(map);
                for (key, mut v) in entries {
                    self.scrub_json(&mut v);
                    map.insert(self.scrub(&key), v);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_value() {
        let s = Secret::new("hunter2-hunter2");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(s.expose(), "hunter2-hunter2");
    }

    #[test]
    fn a_non_string_secret_is_refused_without_echoing_it() {
        let err = serde_yaml_ng::from_str::<Secret>("123456789")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("123456789"), "{err}");
        assert!(err.contains("quote it"));
        let value: serde_yaml_ng::Value = serde_yaml_ng::from_str("123456789").unwrap();
        let err = serde_yaml_ng::from_value::<Secret>(value)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("123456789"), "{err}");
        let s: Secret = serde_yaml_ng::from_str("'123456789'").unwrap();
        assert_eq!(s.expose(), "123456789");
    }

    #[test]
    fn scrubs_text_and_json_longest_first() {
        let r = Redactor::new(["abc", "abcdef", ""]);
        assert_eq!(r.scrub("x abcdef y abc"), "x <redacted> y <redacted>");
        let mut v = serde_json::json!({"k": ["abcdef"], "abc": 1});
        r.scrub_json(&mut v);
        assert_eq!(v, serde_json::json!({"k": ["<redacted>"], "<redacted>": 1}));
        assert!(!format!("{r:?}").contains("abc"));
    }
}
