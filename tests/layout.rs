//! The library's layering, checked: no module imports one that imports it
//! back. Edges are `crate::…` and `super::…` paths outside `#[cfg(test)]`
//! and comments; an edge from `a::x::…` to `a::y::…` is one between the
//! siblings `x` and `y` of `a` (so the top-level modules are checked, and
//! the files of every folder among themselves). A folder's `mod.rs` faces
//! its children and is not a sibling of them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`["mounts", "probe"]`) → the source text that counts.
fn modules() -> BTreeMap<Vec<String>, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                // `src/cli` is the binary's, not the library's.
                if path != root.join("cli") {
                    dirs.push(path);
                }
                continue;
            }
            let rel = path.strip_prefix(&root).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            let last = parts.last().cloned().unwrap_or_default();
            if path.extension().is_none_or(|e| e != "rs") || ["lib", "main"].contains(&&*last) {
                continue;
            }
            if last == "mod" {
                parts.pop();
            }
            if last == "tests" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            out.insert(parts, without_tests_and_comments(&text));
        }
    }
    out
}

fn without_tests_and_comments(text: &str) -> String {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    code.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths a file names: `crate::a::b`, `super::c`, and each item of a
/// braced group after them, resolved to absolute module paths (maybe
/// longer than a module: the caller takes the longest module prefix).
fn named_paths(module: &[String], text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !text.is_char_boundary(i) {
            i += 1;
            continue;
        }
        let rest = &text[i..];
        let starts_word = i == 0 || !is_ident(bytes[i - 1]);
        let (base, skip) = if starts_word && rest.starts_with("crate::") {
            (Vec::new(), "crate::".len())
        } else if starts_word && rest.starts_with("super::") {
            // Each `super` is one level up: a file's is its folder, a
            // folder's (`mod.rs`) is its parent.
            let mut base = module.to_vec();
            let mut skip = 0;
            while text[i + skip..].starts_with("super::") {
                base.pop();
                skip += "super::".len();
            }
            (base, skip)
        } else {
            i += 1;
            continue;
        };
        let tail = &text[i + skip..];
        for path in tails(tail) {
            let mut full = base.clone();
            full.extend(path);
            out.push(full);
        }
        i += skip;
    }
    out
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// `a::b::C` → [[a, b, C]]; `{a::b, c}` → [[a, b], [c]].
fn tails(tail: &str) -> Vec<Vec<String>> {
    if let Some(group) = tail.strip_prefix('{') {
        let end = group.find('}').unwrap_or(group.len());
        return group[..end]
            .split(',')
            .map(|item| segments(item.trim()))
            .filter(|s| !s.is_empty())
            .collect();
    }
    vec![segments(tail)]
}

fn segments(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in text.split("::") {
        let ident: String = part.chars().take_while(|c| is_ident(*c as u8)).collect();
        if ident.is_empty() || ident == "self" {
            break;
        }
        let whole = ident.len() == part.len();
        out.push(ident);
        if !whole {
            break;
        }
    }
    out
}

/// Sibling edges: parent module → (child → children it imports).
type Siblings = BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>>;

fn sibling_edges() -> Siblings {
    let modules = modules();
    let mut edges = Siblings::new();
    for (module, text) in &modules {
        for path in named_paths(module, text) {
            let Some(target) = (1..=path.len())
                .rev()
                .map(|n| &path[..n])
                .find(|p| modules.contains_key(*p))
            else {
                continue;
            };
            let common = module
                .iter()
                .zip(target)
                .take_while(|(a, b)| a == b)
                .count();
            if common >= module.len() || common >= target.len() {
                continue; // a folder facing its children, or a child using its folder
            }
            edges
                .entry(module[..common].to_vec())
                .or_default()
                .entry(module[common].clone())
                .or_default()
                .insert(target[common].clone());
        }
    }
    edges
}

/// Every pair of siblings that reach each other.
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<(String, String)> {
    let reach = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(n) = todo.pop() {
            for m in graph.get(&n).into_iter().flatten() {
                if seen.insert(m.clone()) {
                    todo.push(m.clone());
                }
            }
        }
        seen
    };
    let mut out = Vec::new();
    for (a, targets) in graph {
        for b in targets {
            if a != b && reach(b).contains(a) {
                out.push((a.clone(), b.clone()));
            }
        }
    }
    out
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let mut found = Vec::new();
    for (parent, graph) in sibling_edges() {
        for (a, b) in circles(&graph) {
            let at = if parent.is_empty() {
                "crate".to_owned()
            } else {
                parent.join("::")
            };
            found.push(format!("{at}: {a} -> {b} (and {b} leads back to {a})"));
        }
    }
    assert!(found.is_empty(), "import circles:\n{}", found.join("\n"));
}

#[test]
fn the_checker_sees_edges_it_should() {
    let edges = sibling_edges();
    let top = &edges[&Vec::new()];
    assert!(top["spec"].contains("options"), "{top:?}");
    assert!(top["session"].contains("localtree"), "{top:?}");
    let graph = BTreeMap::from([
        ("a".to_owned(), BTreeSet::from(["b".to_owned()])),
        ("b".to_owned(), BTreeSet::from(["a".to_owned()])),
    ]);
    assert_eq!(circles(&graph).len(), 2);
}
