//! Label values from untrusted input (span attributes, probe results): control
//! characters replaced, length bounded; and the overflow label value.
//!
//! The text format escapes `\`, `"` and newlines itself ([`mcpulse_schemas::metrics`]);
//! this keeps a value printable and short, so one span cannot make a scrape huge or
//! unreadable.

use std::borrow::Cow;
use std::collections::HashSet;

/// The label value of the series that over-the-cap values fold into.
pub const OTHER: &str = "__other__";

/// `value` with control characters replaced by U+FFFD and cut to at most `max_bytes`
/// bytes (on a character boundary). Borrowed when nothing had to change.
pub fn sanitize(value: &str, max_bytes: usize) -> Cow<'_, str> {
    let clean = !value.chars().any(char::is_control);
    if clean && value.len() <= max_bytes {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len().min(max_bytes));
    for c in value.chars() {
        let c = if c.is_control() { '\u{FFFD}' } else { c };
        if out.len() + c.len_utf8() > max_bytes {
            break;
        }
        out.push(c);
    }
    Cow::Owned(out)
}

/// Distinct folded label sets, counted exactly for the first [`EXACT`] (their 64-bit
/// hashes in a set), then by a 2^20-bit bitmap of their hashes (a set sharing a bit with
/// an earlier one is missed: about one in a thousand after a thousand sets). Bounded:
/// 64 KiB and 128 KiB however many sets fold.
#[derive(Default)]
pub struct FoldedKeys {
    exact: HashSet<u64>,
    bits: Option<Box<[u64]>>,
    count: u64,
}

/// Folded label sets counted exactly.
pub const EXACT: usize = 4096;
const BITS: usize = 1 << 20;

impl FoldedKeys {
    /// Notes a folded label set by its hash; true when it had not been seen before.
    pub fn note(&mut self, hash: u64) -> bool {
        let bits = self
            .bits
            .get_or_insert_with(|| vec![0u64; BITS / 64].into_boxed_slice());
        let bit = (hash >> 44) as usize % BITS;
        let (word, mask) = (bit / 64, 1u64 << (bit % 64));
        let in_bitmap = bits[word] & mask != 0;
        bits[word] |= mask;
        let new = if self.exact.len() < EXACT {
            self.exact.insert(hash)
        } else {
            !self.exact.contains(&hash) && !in_bitmap
        };
        self.count += u64::from(new);
        new
    }

    /// Distinct label sets folded so far.
    pub fn count(&self) -> u64 {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_short_values_are_borrowed() {
        assert!(matches!(
            sanitize("get_weather", 128),
            Cow::Borrowed("get_weather")
        ));
    }

    #[test]
    fn control_characters_are_replaced_and_long_values_cut_on_a_char_boundary() {
        assert_eq!(sanitize("a\nb\u{7}c", 128), "a\u{FFFD}b\u{FFFD}c");
        assert_eq!(sanitize(&"x".repeat(300), 128).len(), 128);
        // 'é' is two bytes: a cut inside it drops it whole.
        assert_eq!(sanitize("aé", 2), "a");
        assert_eq!(sanitize("", 16), "");
    }

    #[test]
    fn folded_keys_count_each_set_once() {
        let mut f = FoldedKeys::default();
        assert!(f.note(0xdead_beef_0000_0001));
        assert!(!f.note(0xdead_beef_0000_0001));
        // Same bitmap bit, different hash: still exact while the set has room.
        assert!(f.note(0xdead_beef_0000_0002));
        assert_eq!(f.count(), 2);
        for h in 0..(EXACT as u64 * 2) {
            f.note(h.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        }
        let count = f.count();
        assert!(
            count > EXACT as u64 * 19 / 10 && count <= EXACT as u64 * 2 + 2,
            "{count}"
        );
        assert!(
            !f.note(0xdead_beef_0000_0001),
            "an early set is still known"
        );
    }
}
