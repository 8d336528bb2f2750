//! Finds the line of a config path such as `route.routes[0].receiver` in YAML text, so
//! errors found after parsing (an unknown receiver, a duplicate id) can name their line.
//!
//! It walks block mappings and sequences by indentation (what config files are written
//! in). A path that goes inside a flow collection (`{...}`, `[...]`) or cannot be followed
//! resolves to the line of the deepest part that could.

/// The 1-based line of `path` in `text`, or of its deepest ancestor found.
pub fn line_of(text: &str, path: &str) -> Option<usize> {
    Lines::new(text).line_of(path)
}

/// A file's lines split and stripped of comments once, for many lookups (a compiler
/// locating every route of a large file would otherwise re-read the file per route).
pub struct Lines<'a>(Vec<Line<'a>>);

impl<'a> Lines<'a> {
    pub fn new(text: &'a str) -> Lines<'a> {
        Lines(text.lines().map(Line::new).collect())
    }

    /// The 1-based line of `path`, or of its deepest ancestor found.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let lines = &self.0;
        let mut cursor = Cursor {
            line: 0,
            col: 0,
            parent_indent: -1,
        };
        let mut found = None;
        for segment in segments(path) {
            let next = match segment {
                Segment::Key(key) => find_key(lines, cursor, key),
                Segment::Index(i) => find_index(lines, cursor, i),
            };
            match next {
                Some(c) => {
                    cursor = c;
                    found = Some(c.line + 1);
                }
                None => break,
            }
        }
        found
    }
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// `a.b[2].c` → Key(a), Key(b), Index(2), Key(c).
fn segments(path: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, mut rest) = part.split_at(part.find('[').unwrap_or(part.len()));
        if !key.is_empty() {
            out.push(Segment::Key(key));
        }
        while let Some(close) = rest.find(']') {
            if let Ok(i) = rest[1..close].parse() {
                out.push(Segment::Index(i));
            }
            rest = &rest[close + 1..];
        }
    }
    out
}

/// A line without its comment: its indentation and its text.
struct Line<'a> {
    indent: usize,
    text: &'a str,
}

impl<'a> Line<'a> {
    fn new(raw: &'a str) -> Line<'a> {
        let text = strip_comment(raw).trim_end();
        let indent = text.len() - text.trim_start().len();
        let text = if text.trim() == "---" { "" } else { text };
        Line { indent, text }
    }

    fn is_blank(&self) -> bool {
        self.text.trim().is_empty()
    }

    fn from(&self, col: usize) -> &'a str {
        self.text.get(col..).unwrap_or("")
    }

    fn starts_item_at(&self, col: usize) -> bool {
        let rest = self.from(col);
        rest == "-" || rest.starts_with("- ")
    }
}

/// Cuts a `#` comment (one at the start or after a space, outside quotes).
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '#') if prev.is_whitespace() => return &line[..i],
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            _ => {}
        }
        prev = c;
    }
    line
}

/// Where a node's content starts: at `col` of `line`, or (when nothing follows there) on
/// the next lines indented deeper than `parent_indent`.
#[derive(Clone, Copy)]
struct Cursor {
    line: usize,
    col: usize,
    parent_indent: isize,
}

/// The first line and column of the node's content.
fn content_start(lines: &[Line], c: Cursor) -> Option<(usize, usize)> {
    if !lines.get(c.line)?.from(c.col).trim().is_empty() {
        return Some((c.line, c.col));
    }
    let first = if c.parent_indent < 0 {
        c.line
    } else {
        c.line + 1
    };
    let (i, line) = lines
        .iter()
        .enumerate()
        .skip(first)
        .find(|(_, l)| !l.is_blank())?;
    let deeper = line.indent as isize > c.parent_indent;
    // A sequence may sit at its key's own indentation.
    let same_level_list =
        line.indent as isize == c.parent_indent && line.starts_item_at(line.indent);
    (deeper || same_level_list).then_some((i, line.indent))
}

/// The lines of the block at column `col` starting at `first`: that line, then every
/// later line until one is indented less.
fn block_lines<'l, 'a>(
    lines: &'l [Line<'a>],
    first: usize,
    col: usize,
) -> impl Iterator<Item = (usize, &'l Line<'a>)> {
    lines
        .iter()
        .enumerate()
        .skip(first)
        .filter(|(_, l)| !l.is_blank())
        .take_while(move |(i, l)| *i == first || l.indent >= col)
        .filter(move |(i, l)| *i == first || l.indent == col)
}

fn find_key(lines: &[Line], c: Cursor, key: &str) -> Option<Cursor> {
    let (first, col) = content_start(lines, c)?;
    key_value(lines[first].from(col), key)?; // must be a block mapping
    for (i, line) in block_lines(lines, first, col) {
        if line.starts_item_at(col) {
            continue; // a list under the previous key, at the key's indentation
        }
        if let Some(value_offset) = key_value(line.from(col), key).flatten() {
            return Some(Cursor {
                line: i,
                col: col + value_offset,
                parent_indent: col as isize,
            });
        }
    }
    None
}

/// For text starting with a mapping entry: `Some(Some(offset of its value))` when the key
/// is `key`, `Some(None)` for another key, `None` when it is not a mapping entry.
fn key_value(text: &str, key: &str) -> Option<Option<usize>> {
    let (name, after) = if let Some(quoted) = text.strip_prefix(['"', '\'']) {
        let end = quoted.find(&text[..1])?;
        (&quoted[..end], end + 2)
    } else {
        let end = text.find(':')?;
        (&text[..end], end)
    };
    let rest = text[after..].strip_prefix(':')?;
    if !(rest.is_empty() || rest.starts_with([' ', '\t'])) || name.starts_with(['{', '[', '-']) {
        return None;
    }
    let value = after + 1 + (rest.len() - rest.trim_start().len());
    Some((name.trim_end() == key).then_some(value))
}

fn find_index(lines: &[Line], c: Cursor, index: usize) -> Option<Cursor> {
    let (first, col) = content_start(lines, c)?;
    let mut items = block_lines(lines, first, col).take_while(|(_, l)| l.starts_item_at(col));
    let (i, line) = items.nth(index)?;
    let after_dash = line.from(col + 1);
    Some(Cursor {
        line: i,
        col: col + 1 + (after_dash.len() - after_dash.trim_start().len()),
        parent_indent: col as isize,
    })
}

#[cfg(test)]
mod tests {
    use super::line_of;

    const TEXT: &str = "\
# routes
receivers:
  - name: oncall   # the pager
    pagerduty: { routing_key: \"x\" }
  -
    name: chat
    discord:
      webhook_url: \"y\"
route:
  id: root
  receiver: chat
  routes:
  - id: acme
    tenant: acme
    routes:
      - id: acme-pages
        matchers: [tenant = acme]
        receiver: oncall

      - id: \"acme-chat\"
        'receiver': chat
operator_routes: {id: ops, receiver: chat}
";

    #[test]
    fn finds_keys_items_and_nested_fields() {
        assert_eq!(line_of(TEXT, "receivers"), Some(2));
        assert_eq!(line_of(TEXT, "receivers[0]"), Some(3));
        assert_eq!(line_of(TEXT, "receivers[0].name"), Some(3));
        assert_eq!(line_of(TEXT, "receivers[0].pagerduty"), Some(4));
        assert_eq!(line_of(TEXT, "receivers[1].name"), Some(6));
        assert_eq!(line_of(TEXT, "receivers[1].discord.webhook_url"), Some(8));
        assert_eq!(line_of(TEXT, "route.receiver"), Some(11));
        assert_eq!(line_of(TEXT, "route.routes[0].id"), Some(13));
        assert_eq!(line_of(TEXT, "route.routes[0].tenant"), Some(14));
        assert_eq!(
            line_of(TEXT, "route.routes[0].routes[0].receiver"),
            Some(18)
        );
        assert_eq!(line_of(TEXT, "route.routes[0].routes[1]"), Some(20));
        assert_eq!(
            line_of(TEXT, "route.routes[0].routes[1].receiver"),
            Some(21)
        );
        assert_eq!(line_of(TEXT, "operator_routes"), Some(22));
    }

    #[test]
    fn falls_back_to_the_deepest_ancestor() {
        // Inside a flow collection.
        assert_eq!(line_of(TEXT, "receivers[0].pagerduty.routing_key"), Some(4));
        assert_eq!(line_of(TEXT, "operator_routes.receiver"), Some(22));
        assert_eq!(
            line_of(TEXT, "route.routes[0].routes[0].matchers[0]"),
            Some(17)
        );
        // Missing.
        assert_eq!(line_of(TEXT, "route.routes[5].id"), Some(12));
        assert_eq!(line_of(TEXT, "route.nothing"), Some(9));
        assert_eq!(line_of(TEXT, "nothing"), None);
    }

    #[test]
    fn does_not_confuse_a_key_with_a_longer_one_or_a_value() {
        let text = "route:\n  receivers_x: 1\n  x: \"receiver: no\"\n  receiver: yes\n";
        assert_eq!(line_of(text, "route.receiver"), Some(4));
    }
}
