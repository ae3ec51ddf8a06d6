//! What cache mounts hold, asked with one small solve: an exec mounting each
//! read-only reports the fingerprint of what travels of it (sorted paths,
//! types, modes, owners, sizes, mtimes in seconds), its size, and the stamp
//! of the artifact it was last seeded from. The answer comes back as a tar
//! stream through the session, never touching disk.

use std::collections::BTreeMap;
use std::io::Read;

use futures::StreamExt;

use super::records::{self, Memory};
use super::{MountError, Probed};
use crate::client::Client;
use crate::llb::{Mount, Run, State};
use crate::options::CacheMountUse;
use crate::options::Output;
use crate::options::TarStream;
use crate::solve::progress::Renderer;
use crate::solve::{self, SolveOpt};

/// The file in a mount naming the artifact it was seeded from.
pub const STAMP: &str = ".strata-mount";

/// A shell function `NAME FORMAT` printing, with find's `-printf FORMAT`,
/// what of `mount` travels, run in the mount's directory: of apt's, only
/// the downloaded `.deb` files and the package lists (not locks, partial
/// downloads or the package caches apt rebuilds); of others, every file
/// but the stamp. Directories are not listed: they are made as needed.
pub(super) fn select_fn(name: &str, mount: &CacheMountUse) -> String {
    let find = mount.tool.travelling_files(&mount.target, STAMP);
    format!("{name}() {{ {find} 2>/dev/null || true; }}")
}

/// The probe's script for mounts at `/strata/m0…`, answers in `/strata/out`.
fn script(mounts: &[&CacheMountUse]) -> String {
    // The first line is what `strata du -v` shows of a record this creates.
    let mut script = String::from(
        "# strata: probe cache mounts\n\
         set -e\n\
         probe() {\n\
           cd /strata/m$1\n\
           sel$1 '%p\\t%y\\t%m\\t%U:%G\\t%s\\t%Ts\\n' | LC_ALL=C sort > /tmp/strata-list\n\
           sha256sum < /tmp/strata-list | cut -d' ' -f1 > /strata/out/$1.fingerprint\n\
           awk -F'\\t' '{s += $5} END {printf \"%d\", s}' /tmp/strata-list > /strata/out/$1.size\n",
    );
    script.push_str(&format!(
        "  head -c 4096 {STAMP} > /strata/out/$1.stamp 2>/dev/null || true\n}}\n"
    ));
    for (i, mount) in mounts.iter().enumerate() {
        script.push_str(&select_fn(&format!("sel{i}"), mount));
        script.push_str(&format!("\nprobe {i}\n"));
    }
    script
}

/// The probe as a graph on `on` (any filesystem with a shell and GNU find).
fn graph(mounts: &[&CacheMountUse], on: &State) -> State {
    let cache = mounts
        .iter()
        .enumerate()
        .map(|(i, m)| Mount::cache(&format!("/strata/m{i}"), &m.id, m.sharing).read_only());
    let run = Run::shell(&script(mounts))
        .mounts(cache)
        .mount(Mount::output("/strata/out"))
        .named("probe cache mounts")
        .env("STRATA_RUN", &crate::ids::random_id());
    on.exec(run)
        .mount("/strata/out")
        .expect("the probe has an output mount")
}

/// What each of `mounts` holds, by cache id: from `memory` for a record
/// nobody mounted since this machine looked, the rest probed in one solve on
/// `on` (and remembered).
pub async fn what_they_hold(
    client: &Client,
    mounts: &[&CacheMountUse],
    on: &State,
    memory: &mut Memory,
    renderer: &mut dyn Renderer,
) -> Result<BTreeMap<String, Probed>, MountError> {
    let records = records::current(client).await.unwrap_or_default();
    let mut held = BTreeMap::new();
    let mut unknown = Vec::new();
    for mount in mounts {
        match records.get(&mount.id).and_then(|r| memory.known(r)) {
            Some(known) => {
                held.insert(mount.id.clone(), known);
            }
            None => unknown.push(*mount),
        }
    }
    if unknown.is_empty() {
        return Ok(held);
    }
    let probed = probe(client, &unknown, on, renderer).await?;
    // The probe mounted them: their records' use counts moved.
    let records = records::current(client).await.unwrap_or_default();
    for (mount, probed) in unknown.iter().zip(probed) {
        if let Some(record) = records.get(&mount.id) {
            memory.remember(record, Some(&probed), probed.stamp.as_deref());
        }
        held.insert(mount.id.clone(), probed);
    }
    Ok(held)
}

/// The most a probe's answer may hold, and each of its files.
const MAX_ANSWER: usize = 1 << 20;
const MAX_ENTRY: u64 = 4096;

/// What each of `mounts` holds, in their order.
pub async fn probe(
    client: &Client,
    mounts: &[&CacheMountUse],
    on: &State,
    renderer: &mut dyn Renderer,
) -> Result<Vec<Probed>, MountError> {
    let definition = graph(mounts, on).marshal();
    let (stream, mut bytes) = TarStream::channel();
    let opt = SolveOpt {
        exports: vec![Output::Tar { stream }],
        ..SolveOpt::default()
    };
    // Capped: cache mounts are shared by id on a daemon, so what one build
    // left there (a huge "stamp") must not cost every later build memory.
    // Dropping the stream past the cap fails the probe's solve: a warning.
    let received = async move {
        let mut all = Vec::new();
        while let Some(chunk) = bytes.next().await {
            all.extend_from_slice(&chunk.map_err(MountError::Answer)?);
            if all.len() > MAX_ANSWER {
                let cap = format!("the answer is larger than {MAX_ANSWER} bytes");
                return Err(MountError::Answer(std::io::Error::other(cap)));
            }
        }
        Ok::<_, MountError>(all)
    };
    let solving = async move {
        let solved = solve::solve(client, &definition, &opt, renderer).await;
        // The answer's stream ends with the options holding its sender.
        drop(opt);
        solved
    };
    let (solved, answer) = tokio::join!(solving, received);
    solved?;
    read_answer(&answer?, mounts.len())
}

/// The probe's tar: `N.fingerprint`, `N.size`, `N.stamp` per mount.
fn read_answer(tar: &[u8], count: usize) -> Result<Vec<Probed>, MountError> {
    let mut files = BTreeMap::new();
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().map_err(MountError::Answer)? {
        let mut entry = entry.map_err(MountError::Answer)?;
        let path = entry.path().map_err(MountError::Answer)?;
        let name = path.to_string_lossy().trim_start_matches("./").to_owned();
        // Each file is a digest, a number or a stamp: a few bytes.
        let mut text = String::new();
        entry
            .by_ref()
            .take(MAX_ENTRY)
            .read_to_string(&mut text)
            .map_err(MountError::Answer)?;
        files.insert(name, text.trim().to_owned());
    }
    (0..count)
        .map(|i| {
            let get = |what: &str| files.get(&format!("{i}.{what}")).cloned();
            let fingerprint = get("fingerprint")
                .filter(|f| f.len() == 64)
                .ok_or_else(|| {
                    MountError::Tools("its base lacks sh, GNU find, sort, sha256sum or awk".into())
                })?;
            Ok(Probed {
                fingerprint,
                size: get("size").and_then(|s| s.parse().ok()).unwrap_or(0),
                stamp: get("stamp").filter(|s| s.starts_with("sha256:")),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_file_of_the_answer_is_read_only_to_its_cap() {
        let mut tar = tar::Builder::new(Vec::new());
        let mut huge = b"sha256:".to_vec();
        huge.resize(1 << 20, b'x');
        for (name, data) in [
            ("0.fingerprint", &b"a".repeat(64)[..]),
            ("0.stamp", &huge[..]),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            tar.append_data(&mut header, name, data).unwrap();
        }
        let probed = read_answer(&tar.into_inner().unwrap(), 1).unwrap();
        let stamp = probed[0].stamp.as_deref().unwrap();
        assert_eq!(stamp.len(), MAX_ENTRY as usize, "read only to the cap");
    }
}
