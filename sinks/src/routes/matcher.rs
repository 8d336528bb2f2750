//! Matchers: `severity = P1`, `server =~ "search|files"`, `class != latency`,
//! `tenant !~ "test-.*"`, and the list form `{severity: [P1, P2]}`.
//!
//! Regular expressions are anchored at both ends, as in Alertmanager. In a quoted value
//! `\"` and `\\` are escapes; every other backslash is kept, so `"a\.b"` is the regex
//! `a\.b`. Values of enumerated fields (severity, action, status) are checked.

use std::fmt;

use mcpulse_schemas::AlertEvent;
use regex::Regex;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::fields::Field;

/// How a matcher compares the field with its value.
#[derive(Clone, Debug)]
pub enum MatchOp {
    /// `field = value`
    Equal(String),
    /// `field != value`
    NotEqual(String),
    /// `field =~ "regex"` (anchored)
    Regex(Pattern),
    /// `field !~ "regex"` (anchored)
    NotRegex(Pattern),
    /// `{field: [a, b]}`: equal to one of the values.
    OneOf(Vec<String>),
}

/// A compiled, anchored regular expression and the text it was written as.
#[derive(Clone, Debug)]
pub struct Pattern {
    pub source: String,
    regex: Regex,
}

impl Pattern {
    pub fn new(source: &str) -> Result<Pattern, String> {
        let regex = Regex::new(&format!("^(?:{source})$"))
            .map_err(|e| format!("bad regex {source:?}: {}", regex_error_line(&e)))?;
        Ok(Pattern {
            source: source.to_string(),
            regex,
        })
    }

    pub fn is_match(&self, value: &str) -> bool {
        self.regex.is_match(value)
    }
}

/// The one line of a regex error that says what is wrong.
fn regex_error_line(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .unwrap_or(text.lines().last().unwrap_or(""))
        .trim()
        .to_string()
}

/// One condition on one field of an event.
#[derive(Clone, Debug)]
pub struct Matcher {
    pub field: Field,
    pub op: MatchOp,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Matcher {
    /// Parses the string form `field op value` (`op` one of `=`, `!=`, `=~`, `!~`).
    pub fn parse(text: &str) -> Result<Matcher, String> {
        let text = text.trim();
        // The name runs to the operator, so an error quotes it whole (a secret put there
        // is then scrubbed whole, not in part).
        let name_end = text
            .find(|c: char| c.is_whitespace() || "=!~".contains(c))
            .unwrap_or(text.len());
        let field: Field = text[..name_end].parse()?;
        let rest = text[name_end..].trim_start();
        let (op, rest) = ["=~", "!~", "!=", "="]
            .iter()
            .find_map(|op| rest.strip_prefix(op).map(|r| (*op, r.trim())))
            .ok_or_else(|| {
                format!("matcher {text:?}: expected `field op value` with op one of =, !=, =~, !~")
            })?;
        let value = parse_value(rest).map_err(|e| format!("matcher {text:?}: {e}"))?;
        let op = match op {
            "=" => MatchOp::Equal(value),
            "!=" => MatchOp::NotEqual(value),
            "=~" => MatchOp::Regex(Pattern::new(&value)?),
            _ => MatchOp::NotRegex(Pattern::new(&value)?),
        };
        Matcher::checked(field, op)
    }

    /// The list form: `field` equal to one of `values`.
    pub fn one_of(field: Field, values: Vec<String>) -> Result<Matcher, String> {
        if values.is_empty() {
            return Err(format!("{field}: the list of values is empty"));
        }
        Matcher::checked(field, MatchOp::OneOf(values))
    }

    /// Refuses a value an enumerated field can never have (`severity = P5`).
    fn checked(field: Field, op: MatchOp) -> Result<Matcher, String> {
        if let Some(allowed) = field.allowed_values() {
            let literals: &[String] = match &op {
                MatchOp::Equal(v) | MatchOp::NotEqual(v) => std::slice::from_ref(v),
                MatchOp::OneOf(vs) => vs,
                MatchOp::Regex(_) | MatchOp::NotRegex(_) => &[],
            };
            if let Some(bad) = literals.iter().find(|v| !allowed.contains(&v.as_str())) {
                return Err(format!(
                    "{field} is never {bad:?} (one of {})",
                    allowed.join(", ")
                ));
            }
        }
        Ok(Matcher { field, op })
    }

    /// Whether the matcher holds for a single value of its field.
    pub fn matches_value(&self, value: &str) -> bool {
        match &self.op {
            MatchOp::Equal(v) => value == v,
            MatchOp::NotEqual(v) => value != v,
            MatchOp::Regex(p) => p.is_match(value),
            MatchOp::NotRegex(p) => !p.is_match(value),
            MatchOp::OneOf(vs) => vs.iter().any(|v| v == value),
        }
    }

    /// Whether the matcher holds for `event`. On the multi-valued `region`, a positive
    /// matcher needs one region to match and a negative one needs none to.
    pub fn matches(&self, event: &AlertEvent) -> bool {
        match &self.op {
            MatchOp::NotEqual(v) => !self.field.any_value(event, |x| x == v),
            MatchOp::NotRegex(p) => !self.field.any_value(event, |x| p.is_match(x)),
            _ => self.field.any_value(event, |x| self.matches_value(x)),
        }
    }

    /// Whether the matcher holds for the empty value (a silence needs one that does not).
    pub fn matches_empty(&self) -> bool {
        self.matches_value("")
    }
}

/// Parses a bare or double-quoted value.
fn parse_value(text: &str) -> Result<String, String> {
    let Some(inner) = text.strip_prefix('"') else {
        if text.is_empty() {
            return Err("missing value (write \"\" for the empty string)".into());
        }
        return Ok(text.to_string());
    };
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' if chars.as_str().trim().is_empty() => return Ok(out),
            '"' => return Err("text after the closing quote".into()),
            '\\' => match chars.next() {
                Some(e @ ('"' | '\\')) => out.push(e),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => break,
            },
            c => out.push(c),
        }
    }
    Err("unterminated quoted value".into())
}

/// Writes a value quoted when it would not read back bare.
fn write_value(f: &mut fmt::Formatter<'_>, value: &str, always_quote: bool) -> fmt::Result {
    let bare = !always_quote
        && !value.is_empty()
        && !value.starts_with('"')
        && !value.contains(|c: char| c.is_whitespace() || c == '#');
    if bare {
        return f.write_str(value);
    }
    f.write_str("\"")?;
    for c in value.chars() {
        if c == '"' || c == '\\' {
            f.write_str("\\")?;
        }
        write!(f, "{c}")?;
    }
    f.write_str("\"")
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let field = &self.field;
        match &self.op {
            MatchOp::Equal(v) => {
                write!(f, "{field} = ")?;
                write_value(f, v, false)
            }
            MatchOp::NotEqual(v) => {
                write!(f, "{field} != ")?;
                write_value(f, v, false)
            }
            MatchOp::Regex(p) => {
                write!(f, "{field} =~ ")?;
                write_value(f, &p.source, true)
            }
            MatchOp::NotRegex(p) => {
                write!(f, "{field} !~ ")?;
                write_value(f, &p.source, true)
            }
            MatchOp::OneOf(vs) => write!(f, "{{{field}: [{}]}}", vs.join(", ")),
        }
    }
}

/// A list of matchers, all of which must hold. In YAML (and JSON) each item is a string
/// matcher or a map of `field: value` / `field: [values]` (every entry a matcher).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Matchers(pub Vec<Matcher>);

impl Matchers {
    /// Whether every matcher holds for `event` (true for an empty list).
    pub fn matches(&self, event: &AlertEvent) -> bool {
        self.0.iter().all(|m| m.matches(event))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Matcher> {
        self.0.iter()
    }
}

impl fmt::Display for Matchers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, m) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            m.fmt(f)?;
        }
        Ok(())
    }
}

impl Serialize for Matchers {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Item<'a>(&'a Matcher);
        impl Serialize for Item<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                match &self.0.op {
                    MatchOp::OneOf(values) => {
                        let mut map = serializer.serialize_map(Some(1))?;
                        map.serialize_entry(&self.0.field.to_string(), values)?;
                        map.end()
                    }
                    _ => serializer.collect_str(self.0),
                }
            }
        }
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for m in &self.0 {
            seq.serialize_element(&Item(m))?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Matchers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SeqVisitor;
        impl<'de> Visitor<'de> for SeqVisitor {
            type Value = Matchers;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of matchers")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Matchers, A::Error> {
                let mut out = Vec::new();
                while let Some(MatcherItem(items)) = seq.next_element()? {
                    out.extend(items);
                }
                Ok(Matchers(out))
            }
        }
        deserializer.deserialize_seq(SeqVisitor)
    }
}

/// One list item: a string matcher, or a map of list-form matchers.
struct MatcherItem(Vec<Matcher>);

impl<'de> Deserialize<'de> for MatcherItem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ItemVisitor;
        impl<'de> Visitor<'de> for ItemVisitor {
            type Value = MatcherItem;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a matcher such as `severity = P1` or a map such as {severity: [P1, P2]}",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<MatcherItem, E> {
                Matcher::parse(v)
                    .map(|m| MatcherItem(vec![m]))
                    .map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MatcherItem, A::Error> {
                let mut out = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    let field: Field = name.parse().map_err(de::Error::custom)?;
                    let OneOrMany(values) = map.next_value()?;
                    out.push(Matcher::one_of(field, values).map_err(de::Error::custom)?);
                }
                Ok(MatcherItem(out))
            }
        }
        deserializer.deserialize_any(ItemVisitor)
    }
}

/// A value or a list of values (scalars read as strings: `severity: [P1]`, `server: 42`).
struct OneOrMany(Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ValuesVisitor;
        impl<'de> Visitor<'de> for ValuesVisitor {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a value or a list of values")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_string()]))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_string()]))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_string()]))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_string()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut out = Vec::new();
                while let Some(OneOrMany(v)) = seq.next_element()? {
                    if v.len() != 1 {
                        return Err(de::Error::custom("nested lists are not values"));
                    }
                    out.extend(v);
                }
                Ok(OneOrMany(out))
            }
        }
        deserializer.deserialize_any(ValuesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::testutil::event;

    fn m(text: &str) -> Matcher {
        Matcher::parse(text).unwrap()
    }

    #[test]
    fn each_string_form_matches() {
        let e = event("acme", "weather");
        assert!(m("severity = P1").matches(&e));
        assert!(!m("severity = P2").matches(&e));
        assert!(m("class != latency").matches(&e));
        assert!(!m("class != unreachable").matches(&e));
        assert!(m("server =~ \"weather|files\"").matches(&e));
        assert!(m("server=~weath.*").matches(&e));
        assert!(!m("tenant !~ \"ac.*\"").matches(&e));
        assert!(m("tenant !~ \"test-.*\"").matches(&e));
        assert!(m("action = trigger").matches(&e) && m("status = open").matches(&e));
        assert!(m("scope = global").matches(&e));
    }

    #[test]
    fn regexes_are_anchored() {
        let e = event("acme", "weather");
        assert!(!m("server =~ eath").matches(&e));
        assert!(!m("server =~ \"weather|x\"").matches(&event("acme", "weatherx")));
        assert!(m("server =~ \"a\\.b\"").matches(&event("acme", "a.b")));
        assert!(!m("server =~ \"a\\.b\"").matches(&event("acme", "axb")));
    }

    #[test]
    fn region_matches_any_region_and_negations_need_none() {
        let e = event("acme", "weather"); // eu-west, us-east
        assert!(m("region = us-east").matches(&e));
        assert!(!m("region != us-east").matches(&e));
        assert!(m("region != ap-south").matches(&e));
        assert!(!m("region !~ \"us-.*\"").matches(&e));
        let mut none = e.clone();
        none.regions.clear();
        assert!(m("region = \"\"").matches(&none));
        assert!(!m("region = us-east").matches(&none));
    }

    #[test]
    fn labels_match_as_empty() {
        let e = event("acme", "weather");
        assert!(m("labels.team = \"\"").matches(&e));
        assert!(!m("labels.team = db").matches(&e));
        assert!(m("labels.team != db").matches(&e));
    }

    #[test]
    fn refuses_bad_matchers_with_a_reason() {
        let cases = [
            ("severity = P5", "never \"P5\""),
            ("sev = P1", "unknown field"),
            ("severity P1", "expected `field op value`"),
            ("server =~ \"(\"", "bad regex"),
            ("server =", "missing value"),
            ("server = \"abc", "unterminated"),
            ("server = \"a\" b", "after the closing quote"),
            ("action = fire", "one of trigger"),
        ];
        for (text, want) in cases {
            let err = Matcher::parse(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
            assert!(!err.contains('\n'), "{text}: one line: {err}");
        }
    }

    #[test]
    fn list_form_and_string_form_deserialize_and_round_trip() {
        let yaml = "- tenant = acme\n- {severity: [P1, P2], server: weather}\n- server =~ \"we.*|x\\\"y\"\n";
        let ms: Matchers = serde_yaml_ng::from_str(yaml).unwrap();
        assert_eq!(ms.0.len(), 4);
        let e = event("acme", "weather");
        assert!(ms.matches(&e));
        let mut p3 = e.clone();
        p3.severity = mcpulse_schemas::Severity::P3;
        assert!(!ms.matches(&p3));
        let json = serde_json::to_string(&ms).unwrap();
        assert_eq!(
            json,
            r#"["tenant = acme",{"severity":["P1","P2"]},{"server":["weather"]},"server =~ \"we.*|x\\\"y\""]"#
        );
        let back: Matchers = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ms);
    }

    #[test]
    fn list_form_checks_enumerated_values() {
        let err = serde_yaml_ng::from_str::<Matchers>("- {severity: [P1, P9]}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("never \"P9\""), "{err}");
        let err = serde_yaml_ng::from_str::<Matchers>("- {severity: []}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("empty"), "{err}");
    }

    #[test]
    fn display_quotes_values_that_need_it() {
        assert_eq!(m("server = \"a b\"").to_string(), "server = \"a b\"");
        assert_eq!(m("server = \"\"").to_string(), "server = \"\"");
        assert_eq!(m("server =~ x").to_string(), "server =~ \"x\"");
        for text in [
            "server = \"a \\\"q\\\" b\"",
            "class != latency",
            "tenant !~ \"t\\\\d\"",
        ] {
            assert_eq!(Matcher::parse(&m(text).to_string()).unwrap(), m(text));
        }
    }
}
