//! `apt = [...]`: one `apt-get install`, with the apt cache mounts (locked:
//! apt takes its own lock) and the downloaded `.deb` files kept in them.

use super::shell::words;
use super::{Lowering, CA_MOUNT};
use crate::llb::exec::presets;
use crate::llb::Run;

pub(super) fn lower(packages: &[String], at: &Lowering) -> (Run, String) {
    let ca = if at.ca_secret.is_some() {
        format!(" -o Acquire::https::CAInfo={CA_MOUNT}")
    } else {
        String::new()
    };
    // Debian images delete downloaded .debs after each install
    // (docker-clean); keep them, in the cache mount.
    let script = format!(
        "set -e; rm -f /etc/apt/apt.conf.d/docker-clean; \
         echo 'Binary::apt::APT::Keep-Downloaded-Packages \"true\";' > /etc/apt/apt.conf.d/keep-cache; \
         apt-get{ca} update; \
         DEBIAN_FRONTEND=noninteractive apt-get{ca} install -y --no-install-recommends {}",
        words(packages)
    );
    let run = Run::shell(&script).mounts(presets::apt(at.state.get_platform()));
    (run, format!("apt install {}", packages.join(" ")))
}
