//! `${ENV}` interpolation for configuration files, shared by `mcpulse.yaml` and
//! `targets.yaml`.
//!
//! References are substituted in the raw text before YAML parsing, so they work in any
//! position (keys, values, inside strings). The substituted values are returned so the
//! caller can scrub them from every error message: a secret never appears in an error,
//! even when it was put in the wrong field.

/// An interpolation error: a missing variable, a bad name or an unterminated reference.
/// Names the line, never a value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EnvError(pub String);

/// Replaces `${NAME}` with the variable's value; `$${` escapes a literal `${`. Names are
/// `[A-Za-z0-9_]+`. Returns the text and the substituted values (to scrub from errors
/// with [`scrub`]). A missing variable is an error naming it and its line.
pub fn interpolate(
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(String, Vec<String>), EnvError> {
    let mut out = String::with_capacity(text.len());
    let mut secrets = Vec::new();
    for (lineno, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(start) = rest.find("${") {
            if start > 0 && rest.as_bytes()[start - 1] == b'$' {
                out.push_str(&rest[..start - 1]);
                out.push_str("${");
                rest = &rest[start + 2..];
                continue;
            }
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find('}').ok_or_else(|| {
                EnvError(format!("line {}: unterminated ${{ reference", lineno + 1))
            })?;
            let name = &after[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(EnvError(format!(
                    "line {}: invalid variable name {name:?} in ${{…}}",
                    lineno + 1
                )));
            }
            let value = env(name).ok_or_else(|| {
                EnvError(format!(
                    "line {}: environment variable {name} is not set",
                    lineno + 1
                ))
            })?;
            out.push_str(&value);
            secrets.push(value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
    }
    Ok((out, secrets))
}

/// Replaces every non-empty substituted value in `message` with `***` (longest first, so
/// a secret containing another is fully hidden).
pub fn scrub(message: String, secrets: &[String]) -> String {
    let mut sorted: Vec<&String> = secrets.iter().filter(|s| !s.is_empty()).collect();
    sorted.sort_by_key(|s| std::cmp::Reverse(s.len()));
    sorted
        .into_iter()
        .fold(message, |m, s| m.replace(s.as_str(), "***"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("tok-123".into()),
            "LONG" => Some("tok-123-and-more".into()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_and_returns_values() {
        let (text, secrets) = interpolate("a: ${TOKEN}\nb: x${TOKEN}y\n", env).unwrap();
        assert_eq!(text, "a: tok-123\nb: xtok-123y\n");
        assert_eq!(secrets, vec!["tok-123", "tok-123"]);
    }

    #[test]
    fn escapes_literal_references() {
        let (text, secrets) = interpolate("a: $${TOKEN}\n", env).unwrap();
        assert_eq!(text, "a: ${TOKEN}\n");
        assert!(secrets.is_empty());
    }

    #[test]
    fn errors_name_line_and_variable() {
        let err = interpolate("a: 1\nb: ${MISSING}\n", env).unwrap_err().0;
        assert!(err.contains("line 2") && err.contains("MISSING"), "{err}");
        let err = interpolate("a: ${TOKEN\n", env).unwrap_err().0;
        assert!(
            err.contains("line 1") && err.contains("unterminated"),
            "{err}"
        );
        let err = interpolate("a: ${BAD-NAME}\n", env).unwrap_err().0;
        assert!(err.contains("invalid variable name"), "{err}");
    }

    #[test]
    fn scrub_hides_longest_first() {
        let secrets = vec!["tok-123".to_string(), "tok-123-and-more".to_string()];
        assert_eq!(
            scrub("got tok-123-and-more and tok-123".into(), &secrets),
            "got *** and ***"
        );
        assert_eq!(scrub("x".into(), &[String::new()]), "x");
    }
}
