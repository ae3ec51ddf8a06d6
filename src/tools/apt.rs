//! `apt = [...]`: one `apt-get install`, with the apt cache mounts (locked:
//! apt takes its own lock) and the downloaded `.deb` files kept in them.

use super::shell::words;
use super::{Context, Tool};
use crate::llb::{CacheSharing, Run};

/// apt's downloaded archives (`archives/*.deb`).
pub const ARCHIVES: &str = "/var/cache/apt";
/// apt's state, the package lists in it (`lists/`).
pub const LISTS: &str = "/var/lib/apt";

/// apt's archive and lists, locked: apt takes exclusive locks in both.
pub(super) const CACHES: [(&str, CacheSharing); 2] = [
    (ARCHIVES, CacheSharing::Locked),
    (LISTS, CacheSharing::Locked),
];

pub(super) fn lower(packages: &[String], at: &Context) -> (Run, String) {
    let ca = match at.ca_file {
        Some(file) => format!(" -o Acquire::https::CAInfo={file}"),
        None => String::new(),
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
    let run = Run::shell(&script).mounts(Tool::Apt.cache_mounts(at.platform));
    (run, format!("apt install {}", packages.join(" ")))
}

/// Of apt's caches only the downloaded `.deb` files and the package lists
/// travel (not locks, partial downloads or the package caches apt rebuilds).
pub(super) fn travelling_files(target: &str) -> Option<String> {
    match target {
        ARCHIVES => Some("find archives -maxdepth 1 -type f -name '*.deb' -printf \"$1\"".into()),
        LISTS => Some(
            "find lists -path lists/partial -prune -o ! -type d ! -name lock -printf \"$1\"".into(),
        ),
        _ => None,
    }
}
