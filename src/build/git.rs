//! A git overlay's ref resolved to the commit it names now (`git ls-remote`,
//! as BuildKit's git source resolves it at solve time). The commit goes into
//! the LLB, so the content key changes with every push to the branch, and
//! a repository that cannot be reached fails before anything is keyed.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::process::Command;

use crate::spec::{GitRef, OverlayItem, Spec};

/// How long `git ls-remote` may take.
const LS_REMOTE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a git ref could not be resolved.
#[derive(Debug, thiserror::Error)]
#[error("overlay git {url} {reference}: {reason}")]
pub struct GitError {
    pub url: String,
    pub reference: String,
    pub reason: String,
}

/// The commit each git overlay of images `names` names now.
pub async fn commits(spec: &Spec, names: &[String]) -> Result<BTreeMap<GitRef, String>, GitError> {
    let mut commits = BTreeMap::new();
    for image in names.iter().filter_map(|n| spec.image(n)) {
        for item in &image.overlay {
            let OverlayItem::Git { url, reference, .. } = item else {
                continue;
            };
            let wanted = GitRef {
                url: url.clone(),
                reference: reference.clone(),
            };
            if let std::collections::btree_map::Entry::Vacant(entry) = commits.entry(wanted) {
                entry.insert(resolve(url, reference).await?);
            }
        }
    }
    Ok(commits)
}

/// The commit `reference` (a branch, tag, `HEAD` or empty for `HEAD`, or a
/// commit already) names in `url`.
async fn resolve(url: &str, reference: &str) -> Result<String, GitError> {
    let fail = |reason: String| GitError {
        url: url.to_owned(),
        reference: reference.to_owned(),
        reason,
    };
    if is_commit(reference) {
        return Ok(reference.to_owned());
    }
    let wanted = if reference.is_empty() {
        "HEAD"
    } else {
        reference
    };
    let run = Command::new("git")
        .args(["ls-remote", "--", url, wanted])
        .env("GIT_TERMINAL_PROMPT", "0")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(LS_REMOTE_TIMEOUT, run)
        .await
        .map_err(|_| {
            fail(format!(
                "git ls-remote did not answer in {LS_REMOTE_TIMEOUT:?}"
            ))
        })?
        .map_err(|e| fail(format!("cannot run git ls-remote: {e}")))?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr);
        let last = said
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(fail(format!("git ls-remote failed: {}", last.trim())));
    }
    pick(&String::from_utf8_lossy(&out.stdout), wanted)
        .ok_or_else(|| fail("no branch or tag of that name".into()))
}

/// From `git ls-remote` lines, the commit `wanted` names: `HEAD`, a branch,
/// or a tag (an annotated one peeled to its commit).
fn pick(listing: &str, wanted: &str) -> Option<String> {
    let refs: BTreeMap<&str, &str> = listing
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(sha, name)| (name.trim(), sha.trim()))
        .filter(|(_, sha)| is_commit(sha))
        .collect();
    let candidates = [
        wanted.to_owned(),
        format!("refs/heads/{wanted}"),
        format!("refs/tags/{wanted}^{{}}"),
        format!("refs/tags/{wanted}"),
    ];
    candidates
        .iter()
        .find_map(|c| refs.get(c.as_str()))
        .map(|sha| sha.to_string())
}

fn is_commit(reference: &str) -> bool {
    reference.len() == 40 && reference.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_branch_the_peeled_tag_or_head() {
        let a = "a".repeat(40);
        let b = "b".repeat(40);
        let c = "c".repeat(40);
        let listing =
            format!("{a}\tHEAD\n{b}\trefs/heads/main\n{c}\trefs/tags/v1^{{}}\n{a}\trefs/tags/v1\n");
        assert_eq!(pick(&listing, "HEAD"), Some(a.clone()));
        assert_eq!(pick(&listing, "main"), Some(b));
        assert_eq!(pick(&listing, "v1"), Some(c));
        assert_eq!(pick(&listing, "other"), None);
        assert_eq!(pick("garbage\tmain\n", "main"), None);
        assert!(is_commit(&a) && !is_commit("main"));
    }
}
