//! Positions in the spec text: byte offsets to `line:column`, and to the key
//! path of what is there (`images.codex.toolchain[2]`), so an error from the
//! TOML parser or from our own checks names both.

use std::ops::Range;
use std::path::Path;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::{Place, SpecError};

/// A key or a value of the document, with its span and dotted path.
struct Entry {
    span: Range<usize>,
    path: String,
    /// The table or array it is in.
    parent: String,
}

/// The spec text, indexed by position.
pub(super) struct Source<'a> {
    pub path: &'a Path,
    pub text: &'a str,
    entries: Vec<Entry>,
}

/// A key as a path segment: bare when TOML allows it, quoted otherwise.
fn segment(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

/// `parent.key`, or `key` at the top.
pub(super) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        segment(key)
    } else {
        format!("{parent}.{}", segment(key))
    }
}

fn walk_table(table: &DeTable<'_>, parent: &str, out: &mut Vec<Entry>) {
    for (key, value) in table.iter() {
        let path = join(parent, key.get_ref());
        out.push(Entry {
            span: key.span(),
            path: path.clone(),
            parent: parent.to_owned(),
        });
        walk_value(value, path, parent, out);
    }
}

// Depth is bounded by the TOML parser's own recursion limit.
fn walk_value(value: &Spanned<DeValue<'_>>, path: String, parent: &str, out: &mut Vec<Entry>) {
    out.push(Entry {
        span: value.span(),
        path: path.clone(),
        parent: parent.to_owned(),
    });
    match value.get_ref() {
        DeValue::Table(table) => walk_table(table, &path, out),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk_value(item, format!("{path}[{}]", i + 1), &path, out);
            }
        }
        _ => {}
    }
}

impl<'a> Source<'a> {
    pub fn new(path: &'a Path, text: &'a str) -> Source<'a> {
        // Best effort: on a syntax error this is what parsed, enough to name a key.
        let (document, _errors) = DeTable::parse_recoverable(text);
        let mut entries = Vec::new();
        walk_table(document.get_ref(), "", &mut entries);
        Source {
            path,
            text,
            entries,
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (
            before.matches('\n').count() + 1,
            before[line_start..].chars().count() + 1,
        )
    }

    /// An error at `offset`, about `key`.
    pub fn error(
        &self,
        offset: usize,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> SpecError {
        self.place(offset, key).error(message)
    }

    /// Where `offset` is, under `key`.
    pub fn place(&self, offset: usize, key: impl Into<String>) -> Place {
        let (line, column) = self.line_col(offset);
        Place {
            file: self.path.to_owned(),
            line,
            column,
            key: key.into(),
        }
    }

    /// The innermost key or value at `offset` (the nearest before it when
    /// none covers it, as after a syntax error).
    fn entry_at(&self, offset: usize) -> Option<&Entry> {
        let covering = self
            .entries
            .iter()
            .filter(|e| {
                e.span.start <= offset
                    && (offset < e.span.end || (e.span.is_empty() && offset == e.span.start))
            })
            // Ties go to the later entry: the walk visits parents first.
            .fold(None::<&Entry>, |best, e| match best {
                Some(b) if b.span.len() < e.span.len() => Some(b),
                _ => Some(e),
            });
        covering.or_else(|| {
            self.entries.iter().filter(|e| e.span.start <= offset).fold(
                None::<&Entry>,
                |best, e| match best {
                    Some(b) if b.span.start > e.span.start => Some(b),
                    _ => Some(e),
                },
            )
        })
    }

    /// A parser or deserializer error, located, with serde's wording turned
    /// into the spec's (`unknown key "aptt" (expected one of apt, pip, …)`).
    pub fn toml_error(&self, error: &toml::de::Error) -> SpecError {
        let span = error.span().unwrap_or(0..0);
        let entry = self.entry_at(span.start);
        let path = entry.map(|e| e.path.clone()).unwrap_or_default();
        let parent = entry.map(|e| e.parent.clone()).unwrap_or_default();
        let message = error.message().trim().replace('\n', " ");
        // Words serde quotes with backticks: the field, then what was expected.
        let quoted: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
        let (key, message) = if message.starts_with("unknown field `") {
            let field = quoted.first().copied().unwrap_or_default();
            let expected = &quoted[quoted.len().min(1)..];
            let hint = match expected {
                [] => "no keys are allowed here".to_owned(),
                [one] => format!("expected {one}"),
                many => format!("expected one of {}", many.join(", ")),
            };
            (parent, format!("unknown key {field:?} ({hint})"))
        } else if message.starts_with("missing field `") {
            let field = quoted.first().copied().unwrap_or_default();
            (path, format!("missing key {field:?}"))
        } else if message == "duplicate key" {
            let name = self.text.get(span.clone()).unwrap_or_default();
            let name = name.trim_matches(['"', '\'']);
            (parent, format!("duplicate key {name:?}"))
        } else {
            let message = message
                .replace("expected a sequence", "expected an array")
                .replace("expected a map", "expected a table");
            (path, message)
        };
        self.error(span.start, key, message)
    }
}
