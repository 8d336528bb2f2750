//! Deserializing a value from a string with a parse function, so that a parse error is
//! raised while the YAML parser is on that scalar and carries its exact line.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserializer;
use serde::de::{self, Visitor};

/// Reads a string and parses it with `parse`; its error message becomes the error.
pub(crate) fn parse_str<'de, D, T, F>(
    deserializer: D,
    expecting: &'static str,
    parse: F,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    F: FnOnce(&str) -> Result<T, String>,
{
    struct ParseVisitor<T, F>(F, &'static str, PhantomData<T>);
    impl<T, F: FnOnce(&str) -> Result<T, String>> Visitor<'_> for ParseVisitor<T, F> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.1)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.0)(v).map_err(E::custom)
        }
    }
    deserializer.deserialize_str(ParseVisitor(parse, expecting, PhantomData))
}
