//! A Dockerfile's text as the frontend reads it: logical lines (continuations
//! joined, heredoc bodies kept out), stages with their `FROM`, and `$`
//! substitution of build args.

use std::collections::BTreeMap;

use crate::reference::ImageRef;

/// `from` as a registry image, unless it is `scratch` or has a `$` left.
pub(super) fn registry_image(from: &str) -> Option<ImageRef> {
    if from == "scratch" || from.contains('$') {
        return None;
    }
    from.parse().ok()
}

/// One stage of a Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Stage {
    /// Its `AS` name, lowercased; empty without one.
    pub name: String,
    /// What its `FROM` names, build args and global `ARG` defaults substituted.
    pub from: String,
    /// The earlier stage `from` names, if it names one.
    pub from_stage: Option<usize>,
    /// Its instructions after the `FROM`, one logical line each.
    pub lines: Vec<String>,
}

/// The stages of a Dockerfile, in order.
pub(super) fn stages(text: &str, args: &BTreeMap<String, String>) -> Vec<Stage> {
    let mut defaults: BTreeMap<String, String> = BTreeMap::new();
    let mut stages: Vec<Stage> = Vec::new();
    for line in logical_lines(text) {
        let mut words = line.split_whitespace();
        let Some(instruction) = words.next() else {
            continue;
        };
        if instruction.eq_ignore_ascii_case("FROM") {
            let rest: Vec<&str> = words.filter(|w| !w.starts_with("--")).collect();
            let from = substitute(rest.first().copied().unwrap_or(""), args, &defaults);
            let name = match rest.as_slice() {
                [_, as_kw, name] if as_kw.eq_ignore_ascii_case("AS") => name.to_ascii_lowercase(),
                _ => String::new(),
            };
            let from_stage = stages
                .iter()
                .position(|s| !s.name.is_empty() && s.name == from.to_ascii_lowercase());
            stages.push(Stage {
                name,
                from,
                from_stage,
                lines: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.lines.push(line);
        } else if instruction.eq_ignore_ascii_case("ARG") {
            for decl in words {
                // `ARG NAME` alone declares it without a default.
                if let Some((name, value)) = decl.split_once('=') {
                    defaults.insert(name.to_owned(), unquote(value).to_owned());
                }
            }
        }
    }
    stages
}

/// `value` without one pair of matching quotes around it.
fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if let Some(inner) = value
            .strip_prefix(quote)
            .and_then(|v| v.strip_suffix(quote))
        {
            return inner;
        }
    }
    value
}

/// Lines with `\` continuations joined; comments and blank lines dropped; a
/// heredoc's body (`<<EOF` … `EOF`) is part of the instruction that opens it,
/// never an instruction of its own.
pub(super) fn logical_lines(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    let mut source = text.lines();
    while let Some(line) = source.next() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.starts_with('#') || trimmed.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                for end in heredoc_ends(&current) {
                    for body in source.by_ref() {
                        if body.trim_start_matches('\t') == end {
                            break;
                        }
                        current.push('\n');
                        current.push_str(body);
                    }
                }
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    if !current.is_empty() {
        lines.push(current);
    }
    lines
}

/// The words ending the heredocs an instruction opens (`<<EOF`, `<<-EOF`,
/// `<<"EOF"`), in order.
fn heredoc_ends(instruction: &str) -> Vec<String> {
    instruction
        .split_whitespace()
        .filter_map(|w| w.split_once("<<").map(|(_, rest)| rest))
        .map(|rest| rest.trim_start_matches('-'))
        .map(|rest| unquote(rest).to_owned())
        .filter(|end| !end.is_empty() && end.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .collect()
}

/// `$NAME` and `${NAME}` replaced by the build arg, else the `ARG` default;
/// `${NAME:-WORD}` and `${NAME:+WORD}` as the Dockerfile frontend expands
/// them. What is not filled (or another form) keeps its `$`.
pub(super) fn substitute(
    word: &str,
    args: &BTreeMap<String, String>,
    defaults: &BTreeMap<String, String>,
) -> String {
    let lookup = |name: &str| args.get(name).or_else(|| defaults.get(name)).cloned();
    let mut out = String::new();
    let mut rest = word;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, tail) = match after.strip_prefix('{') {
            Some(braced) => match braced.find('}') {
                Some(end) => (&braced[..end], &braced[end + 1..]),
                None => return format!("{out}${after}"),
            },
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], &after[end..])
            }
        };
        match expand(name, &lookup) {
            Some(value) => out.push_str(&value),
            None => {
                out.push('$');
                out.push_str(name);
            }
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// One `${…}` body (`NAME`, `NAME:-WORD`, `NAME:+WORD`) expanded, if it can be.
fn expand(body: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    if let Some((name, word)) = body.split_once(":-") {
        return Some(
            lookup(name)
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| word.to_owned()),
        );
    }
    if let Some((name, word)) = body.split_once(":+") {
        let set = lookup(name).is_some_and(|v| !v.is_empty());
        return Some(if set { word.to_owned() } else { String::new() });
    }
    if !body.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    lookup(body)
}
