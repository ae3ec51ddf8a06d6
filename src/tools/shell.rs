//! Shell words for the scripts the tools' steps run.

/// Quotes a word for `/bin/sh` (package names, versions, paths).
pub(crate) fn quote(word: &str) -> String {
    // `~` is only special at the start of a word (tilde expansion).
    let plain = !word.is_empty()
        && !word.starts_with('~')
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "@%+=:,./_-~^".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The words quoted and joined by spaces.
pub(crate) fn words(list: &[String]) -> String {
    list.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
}

/// The first non-empty line of a script, cut to `max` characters, for a step's name.
pub(crate) fn first_line(script: &str, max: usize) -> String {
    let line = script
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    if line.chars().count() > max {
        format!("{}…", line.chars().take(max).collect::<String>())
    } else {
        line.to_owned()
    }
}
