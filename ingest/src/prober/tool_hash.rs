//! The tool-list hash: SHA-256 of the RFC 8785 (JSON Canonicalization Scheme) form of the
//! `tools` array, sorted by name, without the fields that change on every response.
//!
//! # What is left out
//!
//! * At the top level of each tool: `_meta`, `ttlMs` and `cacheScope` (per-response
//!   metadata and cache hints of the 2026-07-28 era, not part of the tool's contract).
//! * `_meta` in every nested object of the tool (MCP reserves `_meta` at any object level
//!   of its protocol objects: `annotations`, `icons[]`, `execution`, …) **except inside
//!   `inputSchema` and `outputSchema`**: those are JSON Schema documents written by the
//!   server author, where `_meta` can be a real parameter name (`properties._meta`), so a
//!   change there is a real schema change and stays in the hash.
//!
//! # Order
//!
//! Tools are sorted by `name` (Rust `str` order, i.e. by Unicode code point). A tool
//! without a string `name` (malformed, but hashed rather than dropped) sorts first. Ties
//! (duplicate or missing names) are broken by the tool's canonical JSON, so the hash does
//! not depend on the order the server sends tools in at all.
//!
//! # Numbers
//!
//! JCS serialises every number as an IEEE-754 double in ECMAScript
//! `Number.prototype.toString` form. Integers are therefore converted to `f64` first:
//! integers beyond ±2^53 lose precision exactly as they would in a JavaScript
//! implementation (`9007199254740993` hashes like `9007199254740992`). That is the
//! standard's behaviour and keeps the hash equal to other JCS implementations'. Floats are
//! parsed by `serde_json` without its `float_roundtrip` feature, which can be one ULP off
//! for some 17-digit inputs; the hash is still deterministic for a given server response.
//! Non-finite numbers cannot occur in a `serde_json::Value`.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Fields dropped from the top level of each tool.
const DROPPED_TOP_LEVEL: [&str; 3] = ["_meta", "ttlMs", "cacheScope"];
/// Tool members holding JSON Schema documents, inside which `_meta` is kept.
const SCHEMA_MEMBERS: [&str; 2] = ["inputSchema", "outputSchema"];

/// The tools as they are hashed: volatile fields removed (see the module docs), sorted by
/// name (tools without a string name first; ties by canonical JSON).
pub fn canonical_tools(tools: &[Value]) -> Vec<Value> {
    let mut keyed: Vec<(Option<String>, String, Value)> = tools
        .iter()
        .map(|tool| {
            let cleaned = clean_tool(tool);
            let name = cleaned
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let canonical = to_canonical_json(&cleaned);
            (name, canonical, cleaned)
        })
        .collect();
    keyed.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    keyed.into_iter().map(|(_, _, tool)| tool).collect()
}

/// Lowercase hex SHA-256 of the RFC 8785 canonical JSON of [`canonical_tools`].
pub fn tools_hash(tools: &[Value]) -> String {
    let canonical = to_canonical_json(&Value::Array(canonical_tools(tools)));
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

fn clean_tool(tool: &Value) -> Value {
    let Value::Object(map) = tool else {
        return tool.clone();
    };
    let mut out = Map::new();
    for (key, value) in map {
        if DROPPED_TOP_LEVEL.contains(&key.as_str()) {
            continue;
        }
        let value = if SCHEMA_MEMBERS.contains(&key.as_str()) {
            value.clone()
        } else {
            strip_meta(value)
        };
        out.insert(key.clone(), value);
    }
    Value::Object(out)
}

/// Removes `_meta` from every object in `value`, recursively.
fn strip_meta(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| k.as_str() != "_meta")
                .map(|(k, v)| (k.clone(), strip_meta(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip_meta).collect()),
        other => other.clone(),
    }
}

/// RFC 8785 canonical JSON of `value`: object members sorted by the UTF-16 code units of
/// their names, no whitespace, JCS string escaping and ECMAScript number formatting.
pub fn to_canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_value(value, &mut out);
    out
}

fn write_value(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => {
            let f = if let Some(i) = n.as_i64() {
                i as f64
            } else if let Some(u) = n.as_u64() {
                u as f64
            } else {
                n.as_f64().unwrap_or(f64::NAN)
            };
            out.push_str(&format_number(f));
        }
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                write_value(item, out);
            }
            out.push('}');
        }
    }
}

/// JCS string escaping (ECMAScript `JSON.stringify`): `"` and `\` escaped, control
/// characters as `\b \t \n \f \r` or `\u00xx` (lowercase hex); everything else literal.
fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{0c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// ECMAScript `Number.prototype.toString(10)` of a double (the JCS number form).
///
/// The digits are the `s`, `k`, `n` of ECMA-262 "Number::toString" (see
/// [`shortest_digits`]); the layout rules below are the standard's. Non-finite values
/// (impossible from `serde_json`) give `null`.
pub fn format_number(f: f64) -> String {
    if !f.is_finite() {
        return "null".into();
    }
    if f == 0.0 {
        return "0".into(); // also -0
    }
    let sign = if f < 0.0 { "-" } else { "" };
    let (digits, exponent) = shortest_digits(f.abs());
    let k = digits.len() as i32;
    let n = exponent + 1;
    let body = if k <= n && n <= 21 {
        format!("{digits}{}", "0".repeat((n - k) as usize))
    } else if 0 < n && n <= 21 {
        let (int, frac) = digits.split_at(n as usize);
        format!("{int}.{frac}")
    } else if -6 < n && n <= 0 {
        format!("0.{}{digits}", "0".repeat((-n) as usize))
    } else {
        let e = n - 1;
        let e_sign = if e >= 0 { '+' } else { '-' };
        let (first, rest) = digits.split_at(1);
        if rest.is_empty() {
            format!("{first}e{e_sign}{}", e.abs())
        } else {
            format!("{first}.{rest}e{e_sign}{}", e.abs())
        }
    };
    format!("{sign}{body}")
}

/// The shortest digit string `s` (no leading or trailing zeros) and decimal exponent of a
/// positive finite double such that `s` read back gives the double, choosing, among
/// shortest candidates, the one closest to the exact value and, on an exact tie, the one
/// with an even last digit (ECMA-262 Number::toString).
///
/// Rust's `{:e}` gives a shortest round-tripping string closest to the value but rounds
/// ties up (`1424953923781206.25` → `…206.3`, where ECMAScript gives `…206.2`), so ties
/// are detected against the exact expansion (`{:.800e}` is exact: a double has at most
/// 767 significant decimal digits) and fixed.
fn shortest_digits(f: f64) -> (String, i32) {
    let split = |sci: &str| -> (String, i32) {
        let (mantissa, exponent) = sci.split_once('e').expect("{:e} has an exponent");
        let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
        (
            digits,
            exponent.parse().expect("{:e} exponent is an integer"),
        )
    };
    let (digits, exponent) = split(&format!("{f:e}"));
    let k = digits.len();
    let (exact, exact_exponent) = split(&format!("{f:.800e}"));
    if exact_exponent != exponent {
        return (digits, exponent);
    }
    let rest = &exact[k..];
    let low = &exact[..k];
    let is_tie = rest.starts_with('5') && rest[1..].bytes().all(|b| b == b'0');
    if !is_tie || low.ends_with('9') {
        return (digits, exponent);
    }
    let mut high = low.as_bytes().to_vec();
    high[k - 1] += 1;
    let high = String::from_utf8(high).expect("ascii digits");
    let round_trips = |d: &str| {
        format!("{}.{}e{exponent}", &d[..1], &d[1..])
            .parse::<f64>()
            .is_ok_and(|back| back == f)
    };
    let even = |d: &str| (d.as_bytes()[k - 1] - b'0').is_multiple_of(2);
    let chosen = match (round_trips(low), round_trips(&high)) {
        (true, true) => {
            if even(low) {
                low.to_string()
            } else {
                high
            }
        }
        (true, false) => low.to_string(),
        (false, true) => high,
        (false, false) => return (digits, exponent),
    };
    let trimmed = chosen.trim_end_matches('0');
    let trimmed = if trimmed.is_empty() { "0" } else { trimmed };
    (trimmed.to_string(), exponent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc8785_sample_object() {
        // RFC 8785 section 3.2.2 input and section 3.2.3 output.
        let input = r#"{
          "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
          "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
          "literals": [null, true, false]
        }"#;
        let mut value: Value = serde_json::from_str(input).unwrap();
        // serde_json without `float_roundtrip` parses 333333333.33333329 one ULP low
        // (…33325); the double the RFC means is the correctly rounded one.
        value["numbers"][0] = json!("333333333.33333329".parse::<f64>().unwrap());
        assert_eq!(
            to_canonical_json(&value),
            r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#
        );
    }

    #[test]
    fn rfc8785_utf16_key_order() {
        // RFC 8785 section 3.2.3 sorting example.
        let input = r#"{
          "\u20ac": "Euro Sign",
          "\r": "Carriage Return",
          "\ufb33": "Hebrew Letter Dalet With Dagesh",
          "1": "One",
          "\ud83d\ude00": "Emoji: Grinning Face",
          "\u0080": "Control",
          "\u00f6": "Latin Small Letter O With Diaeresis",
          "\u0057": "Latin Capital Letter W"
        }"#;
        let value: Value = serde_json::from_str(input).unwrap();
        let out = to_canonical_json(&value);
        let order = [
            "Carriage Return",
            "One",
            "Latin Capital Letter W",
            "Control",
            "Latin Small Letter O With Diaeresis",
            "Euro Sign",
            "Emoji: Grinning Face",
            "Hebrew Letter Dalet With Dagesh",
        ];
        let positions: Vec<usize> = order.iter().map(|v| out.find(v).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{out}");
        // Code-point order would put U+1F600 after U+FB33; UTF-16 puts the surrogate
        // pair (0xD83D…) before it.
        assert!(
            out.starts_with(r#"{"\r":"Carriage Return","1":"One","W":"#),
            "{out}"
        );
    }

    #[test]
    fn rfc8785_appendix_b_numbers() {
        let cases: [(u64, &str); 24] = [
            (0x0000000000000000, "0"),
            (0x8000000000000000, "0"),
            (0x0000000000000001, "5e-324"),
            (0x8000000000000001, "-5e-324"),
            (0x7fefffffffffffff, "1.7976931348623157e+308"),
            (0xffefffffffffffff, "-1.7976931348623157e+308"),
            (0x4340000000000000, "9007199254740992"),
            (0xc340000000000000, "-9007199254740992"),
            (0x4430000000000000, "295147905179352830000"),
            (0x44b52d02c7e14af5, "9.999999999999997e+22"),
            (0x44b52d02c7e14af6, "1e+23"),
            (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
            (0x444b1ae4d6e2ef4e, "999999999999999700000"),
            (0x444b1ae4d6e2ef4f, "999999999999999900000"),
            (0x444b1ae4d6e2ef50, "1e+21"),
            (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
            (0x3eb0c6f7a0b5ed8d, "0.000001"),
            (0x41b3de4355555553, "333333333.3333332"),
            (0x41b3de4355555554, "333333333.33333325"),
            (0x41b3de4355555555, "333333333.3333333"),
            (0x41b3de4355555556, "333333333.3333334"),
            (0x41b3de4355555557, "333333333.33333343"),
            (0xbecbf647612f3696, "-0.0000033333333333333333"),
            (0x43143ff3c1cb0959, "1424953923781206.2"),
        ];
        for (bits, expected) in cases {
            assert_eq!(
                format_number(f64::from_bits(bits)),
                expected,
                "bits {bits:#018x}"
            );
        }
    }

    #[test]
    fn integers_and_strings() {
        assert_eq!(to_canonical_json(&json!(-42)), "-42");
        assert_eq!(to_canonical_json(&json!(u64::MAX)), "18446744073709552000");
        // Beyond 2^53 integers are doubles, as in every JCS implementation.
        assert_eq!(
            to_canonical_json(&json!(9_007_199_254_740_993_u64)),
            "9007199254740992"
        );
        assert_eq!(to_canonical_json(&json!(100.0)), "100");
        assert_eq!(to_canonical_json(&json!(1e21)), "1e+21");
        assert_eq!(to_canonical_json(&json!(123e-20)), "1.23e-18");
        assert_eq!(
            to_canonical_json(&json!("\u{1}\u{8}\u{1f}\u{7f}\u{2028}é")),
            "\"\\u0001\\b\\u001f\u{7f}\u{2028}é\""
        );
        assert_eq!(
            to_canonical_json(&json!({"b": [1, {"d": 1, "c": 2}], "a": {}})),
            r#"{"a":{},"b":[1,{"c":2,"d":1}]}"#
        );
    }

    fn tools() -> Vec<Value> {
        vec![
            json!({
                "name": "weather",
                "description": "Current weather",
                "inputSchema": {"type": "object", "properties": {"city": {"type": "string"}},
                                "required": ["city"]}
            }),
            json!({
                "name": "alerts",
                "description": "Weather alerts",
                "inputSchema": {"type": "object"}
            }),
        ]
    }

    #[test]
    fn hash_is_hex_sha256() {
        let hash = tools_hash(&tools());
        assert_eq!(hash.len(), 64);
        assert!(
            hash.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        // Empty list: SHA-256 of "[]".
        assert_eq!(
            tools_hash(&[]),
            "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945"
        );
    }

    #[test]
    fn order_and_volatile_fields_do_not_change_the_hash() {
        let base = tools_hash(&tools());
        let mut reversed = tools();
        reversed.reverse();
        assert_eq!(tools_hash(&reversed), base);

        // Keys in another order.
        let reordered: Vec<Value> =
            serde_json::from_str(r#"[{"inputSchema": {"type": "object"}, "description": "Weather alerts", "name": "alerts"},
                {"inputSchema": {"required": ["city"], "properties": {"city": {"type": "string"}}, "type": "object"},
                 "description": "Current weather", "name": "weather"}]"#)
                .unwrap();
        assert_eq!(tools_hash(&reordered), base);

        let mut volatile = tools();
        for tool in &mut volatile {
            let obj = tool.as_object_mut().unwrap();
            obj.insert("_meta".into(), json!({"io.example/served-by": "pod-7"}));
            obj.insert("ttlMs".into(), json!(30000));
            obj.insert("cacheScope".into(), json!("public"));
        }
        volatile[0]["annotations"] = json!({"_meta": {"x": 1}});
        let mut with_annotations = tools();
        with_annotations[0]["annotations"] = json!({});
        assert_eq!(tools_hash(&volatile), tools_hash(&with_annotations));
        assert_eq!(canonical_tools(&volatile)[1]["annotations"], json!({}));
    }

    #[test]
    fn real_changes_change_the_hash() {
        let base = tools_hash(&tools());
        let mut described = tools();
        described[0]["description"] = json!("Current weather, now with wind");
        assert_ne!(tools_hash(&described), base);

        let mut removed = tools();
        removed.pop();
        assert_ne!(tools_hash(&removed), base);

        // `_meta` as a parameter name inside inputSchema is part of the contract.
        let mut param = tools();
        param[0]["inputSchema"]["properties"]["_meta"] = json!({"type": "object"});
        assert_ne!(tools_hash(&param), base);
    }

    #[test]
    fn unnamed_tools_sort_first_and_ties_are_stable() {
        let list = vec![
            json!({"name": "b"}),
            json!({"description": "no name"}),
            json!({"name": "a", "description": "2"}),
            json!({"name": "a", "description": "1"}),
            json!("not an object"),
        ];
        let sorted = canonical_tools(&list);
        let names: Vec<Value> = sorted
            .iter()
            .map(|t| t.get("name").cloned().unwrap_or(Value::Null))
            .collect();
        assert_eq!(names[2..], [json!("a"), json!("a"), json!("b")]);
        assert!(names[..2].iter().all(Value::is_null));
        assert_eq!(sorted[2]["description"], json!("1"));
        let mut shuffled = list.clone();
        shuffled.rotate_left(2);
        assert_eq!(tools_hash(&shuffled), tools_hash(&list));
    }
}
