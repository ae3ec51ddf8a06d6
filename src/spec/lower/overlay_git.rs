//! `[[overlay.git]]`: a git checkout copied into the image, at the commit
//! its ref was resolved to when there is one (see `LowerOptions::git_commits`).

use crate::llb::source;
use crate::llb::{Copy, FileAction};

pub(super) fn lower(
    url: &str,
    reference: &str,
    commit: Option<&str>,
    to: &str,
) -> (FileAction, String) {
    let checkout = match commit {
        Some(commit) if commit != reference => {
            let name = format!(
                "git {url} {reference} ({})",
                &commit[..commit.len().min(12)]
            );
            source::git(url, commit, Some(&name))
        }
        _ => source::git(url, reference, Some(&format!("git {url} {reference}"))),
    };
    (
        FileAction::copy(Copy::new(&checkout, "/", to)),
        format!("overlay git {url} -> {to}"),
    )
}
