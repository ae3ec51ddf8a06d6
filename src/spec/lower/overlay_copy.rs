//! `[[overlay.copy]]`: a local directory copied into the image. The source is
//! named by the overlay's position, not its content, so the LLB stays the
//! same whatever the directory holds: editing the overlay changes no
//! toolchain op, only this copy's result. Names show the directory relative
//! to the spec: an image does not record where a runner keeps its checkouts.

use std::path::Path;

use super::Lowering;
use crate::llb::source::{self, LocalOptions};
use crate::llb::{Copy, FileAction};
use crate::options::LocalDir;

/// The copy of `from` (shown as `shown`) to `to`, and its default name;
/// `from` is registered in `at` under the `local://` name the session serves it as.
pub(super) fn lower(
    image: &str,
    index: usize,
    (from, shown): (&Path, &str),
    to: &str,
    exclude: &[String],
    at: &mut Lowering,
) -> (FileAction, String) {
    let local_name = format!("{image}-overlay-{index}");
    let local = source::local(
        &local_name,
        &LocalOptions {
            exclude: exclude.to_vec(),
            // Spec-relative, like every name in the LLB: the graph (and so
            // the content key) does not depend on where the checkout is.
            shared_key_hint: Some(shown.to_owned()),
            name: Some(format!("local {shown}")),
            ..LocalOptions::default()
        },
    );
    at.local_dirs.insert(
        local_name,
        LocalDir {
            path: from.to_owned(),
            excludes: exclude.to_vec(),
        },
    );
    (
        FileAction::copy(Copy::new(&local, "/", to)),
        format!("overlay {shown} -> {to}"),
    )
}
