//! `[[overlay.copy]]`: a local directory copied into the image. The source is
//! named by the overlay's position, not its content, so the LLB stays the
//! same whatever the directory holds: editing the overlay changes no
//! toolchain op, only this copy's result. Names show the directory relative
//! to the spec: an image does not record where a runner keeps its checkouts.

use super::Lowering;
use crate::llb::source::{self, LocalOptions};
use crate::llb::{Copy, FileAction, Platform};
use crate::options::LocalDir;
use crate::spec::{CopyFrom, SpecError};

/// The copy of `from` (as built for `platform`) to `to`, and its default
/// name; the directory is registered in `at` under the `local://` name the
/// session serves it as. A per-platform `from` gets a name per platform, so
/// one solve of several platforms serves each its own directory.
pub(super) fn lower(
    (image, index): (&str, usize),
    (from, platform): (&CopyFrom, &Platform),
    to: &str,
    exclude: &[String],
    at: &mut Lowering,
) -> Result<(FileAction, String), SpecError> {
    let dir = from.dir_for(platform)?;
    let shown = dir.shown.as_str();
    let local_name = match from {
        CopyFrom::Dir(_) => format!("{image}-overlay-{index}"),
        CopyFrom::PerPlatform { .. } => {
            format!(
                "{image}-overlay-{index}-{}",
                platform.to_string().replace('/', "-")
            )
        }
    };
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
            path: dir.path.clone(),
            excludes: exclude.to_vec(),
        },
    );
    Ok((
        FileAction::copy(Copy::new(&local, "/", to)),
        format!("overlay {shown} -> {to}"),
    ))
}
