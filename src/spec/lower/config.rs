//! The image config the exporter writes (raw LLB carries none): the base
//! image's, with what the toolchain left (env, working directory, user) and
//! the spec's settings over it; architecture, OS and variant from the
//! platform; `rootfs.diff_ids` left empty (the daemon fills them); the
//! history of every layer, so an image restored from imported cache is
//! byte-for-byte the one built (BuildKit would otherwise describe such layers
//! as "imported sha256:…", changing the config and the image digest).

use std::collections::HashMap;

use oci_spec::image::{Arch, Config, History, ImageConfiguration, Os, RootFs};

use super::Lowering;
use crate::spec::ImageSettings;

/// The `config` part of a base image's configuration, or an empty one.
pub(super) fn of_base(base: Option<&ImageConfiguration>) -> Config {
    base.and_then(|b| b.config().clone()).unwrap_or_default()
}

/// A base image's history (every entry, empty layers included).
pub(super) fn history_of_base(base: Option<&ImageConfiguration>) -> Vec<History> {
    base.and_then(|b| b.history().clone()).unwrap_or_default()
}

/// The history entry of a layer a step of the spec adds.
pub(super) fn step_history(name: &str) -> History {
    let mut entry = History::default();
    entry.set_created_by(Some(name.to_owned()));
    entry.set_comment(Some("strata".to_owned()));
    entry
}

/// The finished image config of an image lowered to `at`, with `settings`.
pub(super) fn finish(at: &Lowering, settings: &ImageSettings) -> ImageConfiguration {
    let mut config = at.config.clone();
    // The steps' TARGET* variables, unless a setting changed one.
    let target = super::settings::target_vars(at.state.get_platform());
    let env: Vec<String> = at
        .state
        .env_list()
        .iter()
        .filter(|(k, v)| !target.iter().any(|(tk, tv)| tk == k && tv == v))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if !env.is_empty() {
        config.set_env(Some(env));
    }
    if at.state.get_dir() != "/" || config.working_dir().is_some() {
        config.set_working_dir(Some(at.state.get_dir().to_owned()));
    }
    if !at.state.get_user().is_empty() {
        config.set_user(Some(at.state.get_user().to_owned()));
    }
    if let Some(e) = &settings.entrypoint {
        config.set_entrypoint(Some(e.clone()));
        // As in Dockerfiles: a new entrypoint drops the inherited command.
        if settings.cmd.is_none() {
            config.set_cmd(None);
        }
    }
    if let Some(c) = &settings.cmd {
        config.set_cmd(Some(c.clone()));
    }
    if !settings.labels.is_empty() {
        let mut labels: HashMap<String, String> = config.labels().clone().unwrap_or_default();
        labels.extend(settings.labels.clone());
        config.set_labels(Some(labels));
    }
    let platform = at.state.get_platform();
    let mut image = ImageConfiguration::default();
    image.set_architecture(Arch::from(platform.architecture.as_str()));
    image.set_os(Os::from(platform.os.as_str()));
    if !platform.variant.is_empty() {
        image.set_variant(Some(platform.variant.clone()));
    }
    image.set_config(Some(config));
    image.set_rootfs(RootFs::default());
    image.set_history(Some(at.history.clone()));
    image
}
