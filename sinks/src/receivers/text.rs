//! Text helpers shared by the receivers: truncation on a character boundary, durations
//! for humans, and the short, stable identifiers providers limit in length.

use sha2::{Digest, Sha256};

/// Appended to anything cut short.
const ELLIPSIS: char = '…';

/// `text` cut to at most `max` characters (Unicode scalar values), ending in `…` when it
/// was cut. Never splits a character.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    if max == 0 {
        return String::new();
    }
    let mut out: String = text.chars().take(max - 1).collect();
    out.push(ELLIPSIS);
    out
}

/// Number of characters, as providers count them.
pub fn chars(text: &str) -> usize {
    text.chars().count()
}

/// `key` itself when it fits in `max` characters; otherwise `mcpulse-sha256-<hex>`, a
/// stable stand-in (cutting a dedup key could merge two subjects).
pub fn fit_key(key: &str, max: usize) -> String {
    if chars(key) <= max {
        return key.to_owned();
    }
    let digest = hex::encode(Sha256::digest(key.as_bytes()));
    truncate(&format!("mcpulse-sha256-{digest}"), max)
}

/// A short stable hash of a value (secret-safe: 48 bits of SHA-256 reveal nothing usable
/// of a random key), for destination names.
pub fn short_hash(value: &str) -> String {
    hex::encode(&Sha256::digest(value.as_bytes())[..6])
}

/// `1h 2m 3s`-style duration.
pub fn human_duration(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s}s"),
        _ => format!("{h}h {m}m {s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_on_char_boundaries() {
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 3), "ab…");
        assert_eq!(truncate("ééééé", 4), "ééé…");
        assert_eq!(chars(&truncate(&"🔥".repeat(2000), 1024)), 1024);
        assert_eq!(truncate("abc", 0), "");
    }

    #[test]
    fn long_keys_become_stable_hashes() {
        assert_eq!(fit_key("short", 255), "short");
        let long = "k".repeat(300);
        let fitted = fit_key(&long, 255);
        assert!(fitted.starts_with("mcpulse-sha256-"));
        assert_eq!(fitted, fit_key(&long, 255));
        assert_ne!(fitted, fit_key(&"j".repeat(300), 255));
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(125), "2m 5s");
        assert_eq!(human_duration(3725), "1h 2m 5s");
    }
}
