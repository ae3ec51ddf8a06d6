//! Include/exclude patterns for local directories, with `.dockerignore`
//! semantics: `*` and `?` within one path element, `**` across elements, a
//! leading `!` re-includes, the last matching pattern wins, and a pattern that
//! matches a directory matches everything below it.

/// One compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    parts: Vec<String>,
    negated: bool,
}

/// An ordered list of patterns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatternSet {
    patterns: Vec<Pattern>,
}

impl PatternSet {
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Self {
        let patterns = patterns
            .iter()
            .filter_map(|p| {
                let p = p.as_ref().trim();
                let (negated, p) = match p.strip_prefix('!') {
                    Some(rest) => (true, rest.trim()),
                    None => (false, p),
                };
                let parts: Vec<String> = p
                    .trim_start_matches("./")
                    .split('/')
                    .filter(|s| !s.is_empty() && *s != ".")
                    .map(str::to_owned)
                    .collect();
                (!parts.is_empty()).then_some(Pattern { parts, negated })
            })
            .collect();
        PatternSet { patterns }
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `path` (relative, `/`-separated) is matched, by itself or a parent.
    pub fn matches(&self, path: &str) -> bool {
        let elements: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let mut matched = false;
        for p in &self.patterns {
            if p.negated != matched {
                continue; // cannot change the outcome
            }
            let hit = (1..=elements.len()).any(|n| match_parts(&p.parts, &elements[..n]));
            if hit {
                matched = !p.negated;
            }
        }
        matched
    }

    /// Whether anything below directory `dir` could still be matched by a
    /// re-including (`!`) pattern, so an excluded directory must still be walked.
    pub fn may_reinclude_below(&self, dir: &str) -> bool {
        self.patterns.iter().any(|p| {
            p.negated && {
                let elements: Vec<&str> = dir.split('/').filter(|s| !s.is_empty()).collect();
                prefix_could_match(&p.parts, &elements)
            }
        })
    }

    /// Whether directory `dir` may contain something an include pattern matches.
    pub fn may_match_below(&self, dir: &str) -> bool {
        let elements: Vec<&str> = dir.split('/').filter(|s| !s.is_empty()).collect();
        self.patterns
            .iter()
            .any(|p| !p.negated && prefix_could_match(&p.parts, &elements))
    }
}

/// Matches pattern parts against path elements exactly (`**` spans any number).
fn match_parts(parts: &[String], elements: &[&str]) -> bool {
    // matches[i][j]: parts[i..] match elements[j..]. Filled from the end, so
    // any number of `**` costs parts × elements², never a backtracking blow-up.
    let (np, ne) = (parts.len(), elements.len());
    let mut matches = vec![vec![false; ne + 1]; np + 1];
    matches[np][ne] = true;
    for i in (0..np).rev() {
        for j in (0..=ne).rev() {
            matches[i][j] = if parts[i] == "**" {
                (j..=ne).any(|k| matches[i + 1][k])
            } else {
                j < ne && glob(parts[i].as_bytes(), elements[j].as_bytes()) && matches[i + 1][j + 1]
            };
        }
    }
    matches[0][0]
}

/// Whether the pattern could match some path starting with `elements`.
fn prefix_could_match(parts: &[String], elements: &[&str]) -> bool {
    match (parts.split_first(), elements.split_first()) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some((first, _)), Some(_)) if first == "**" => true,
        (Some((first, rest)), Some((e, erest))) => {
            glob(first.as_bytes(), e.as_bytes()) && prefix_could_match(rest, erest)
        }
    }
}

/// Shell-style match of one path element: `*`, `?`, `[abc]`, `[!a-z]`, `\x`.
/// Linear backtracking to the last `*` only (as a `*` can always absorb more),
/// so a pattern of many `*` cannot take exponential time.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    // Where to resume after the last `*`: pattern after it, name position.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if pattern.get(p) == Some(&b'*') {
            p += 1;
            star = Some((p, n));
        } else if let Some(len) = one(&pattern[p..], name[n]) {
            p += len;
            n += 1;
        } else if let Some((after, from)) = star {
            p = after;
            n = from + 1;
            star = Some((after, from + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// If the pattern's first token matches byte `c`, the token's length.
fn one(pattern: &[u8], c: u8) -> Option<usize> {
    match pattern.split_first()? {
        (b'?', _) => Some(1),
        (b'[', rest) => {
            let Some(end) = rest.iter().position(|&c| c == b']') else {
                return (c == b'[').then_some(1);
            };
            let class = &rest[..end];
            let (negate, class) = match class.split_first() {
                Some((b'^' | b'!', tail)) => (true, tail),
                _ => (false, class),
            };
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == b'-' {
                    hit |= class[i] <= c && c <= class[i + 2];
                    i += 3;
                } else {
                    hit |= class[i] == c;
                    i += 1;
                }
            }
            (hit != negate).then_some(end + 2)
        }
        (b'\\', rest) if !rest.is_empty() => (rest[0] == c).then_some(2),
        (&p, _) => (p == c).then_some(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_semantics() {
        let set = PatternSet::new(&[
            "node_modules",
            "*.log",
            "**/target",
            "!keep.log",
            "build/*.o",
        ]);
        assert!(set.matches("node_modules"));
        assert!(set.matches("node_modules/x/y.js"), "below a matched dir");
        assert!(set.matches("debug.log"));
        assert!(
            !set.matches("src/debug.log"),
            "*.log is anchored at the root"
        );
        assert!(!set.matches("keep.log"), "re-included");
        assert!(set.matches("a/b/target/x"));
        assert!(set.matches("target"));
        assert!(set.matches("build/main.o"));
        assert!(!set.matches("build/main.c"));
        assert!(!set.matches("src/main.rs"));
    }

    #[test]
    fn globs_and_classes() {
        assert!(glob(b"f?o*", b"foobar"));
        assert!(glob(b"[a-c]x", b"bx"));
        assert!(!glob(b"[!a-c]x", b"bx"));
        assert!(glob(b"\\*", b"*"));
        assert!(!glob(b"\\*", b"a"));
    }

    #[test]
    fn walking_hints() {
        let set = PatternSet::new(&["docs", "!docs/keep.md"]);
        assert!(set.matches("docs/other.md"));
        assert!(!set.matches("docs/keep.md"));
        assert!(set.may_reinclude_below("docs"));
        assert!(!set.may_reinclude_below("src"));
        let include = PatternSet::new(&["src/**/*.rs"]);
        assert!(include.may_match_below("src"));
        assert!(include.may_match_below("src/a"));
        assert!(!include.may_match_below("docs"));
    }

    #[test]
    fn many_stars_and_globstars_take_linear_time() {
        // Exponential backtracking would not finish these.
        let name = "a".repeat(64);
        assert!(!glob(
            format!("{}b", "*a".repeat(30)).as_bytes(),
            name.as_bytes()
        ));
        assert!(glob(
            format!("{}a", "*a".repeat(30)).as_bytes(),
            name.as_bytes()
        ));
        let deep: Vec<&str> = std::iter::repeat_n("a", 40).collect();
        let set = PatternSet::new(&[&*format!("{}b", "**/".repeat(20))]);
        assert!(!set.matches(&deep.join("/")));
    }
}
