//! `[[overlay.git]]`: a git checkout copied into the image.

use crate::llb::source;
use crate::llb::{Copy, FileAction};

pub(super) fn lower(url: &str, reference: &str, to: &str) -> (FileAction, String) {
    let checkout = source::git(url, reference, Some(&format!("git {url} {reference}")));
    (
        FileAction::copy(Copy::new(&checkout, "/", to)),
        format!("overlay git {url} -> {to}"),
    )
}
