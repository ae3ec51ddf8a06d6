//! OCI image layout directories (`oci-layout`, `index.json`, `blobs/sha256/…`)
//! on this machine, as local build caches use them: BuildKit writes blobs
//! through the session's content store (see `session::content`), and the
//! client — strata, as BuildKit's Go `client/ociindex` — points a tag in
//! `index.json` at the exported cache after a successful build, and resolves a
//! tag to a digest before an import. Errors are plain `io::Error`s naming what
//! was wrong; callers add which cache they were working on.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The annotation that tags a descriptor in index.json.
const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Ingest files of ours untouched this long belong to dead processes.
const STALE_INGEST: Duration = Duration::from_secs(24 * 3600);

fn invalid(kind: io::ErrorKind, message: String) -> io::Error {
    io::Error::new(kind, message)
}

/// An OCI image layout directory.
#[derive(Debug, Clone)]
pub struct OciLayout {
    dir: PathBuf,
}

impl OciLayout {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        OciLayout { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn hex(digest: &str) -> io::Result<&str> {
        digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')))
            .ok_or_else(|| {
                invalid(
                    io::ErrorKind::InvalidInput,
                    format!("unsupported digest {digest:?}"),
                )
            })
    }

    /// Where the blob `digest` (`sha256:…`) lives; an error for any other digest form.
    pub fn blob_path(&self, digest: &str) -> io::Result<PathBuf> {
        Ok(self.dir.join("blobs/sha256").join(Self::hex(digest)?))
    }

    /// Where blobs being written wait until their digest checks out.
    pub(crate) fn ingest_dir(&self) -> PathBuf {
        self.dir.join("ingest")
    }

    /// Creates the layout's skeleton if missing, and clears ingest files that
    /// crashed strata processes left behind.
    pub fn init(&self) -> io::Result<()> {
        fs::create_dir_all(self.dir.join("blobs/sha256"))?;
        fs::create_dir_all(self.ingest_dir())?;
        let layout = self.dir.join("oci-layout");
        if !layout.exists() {
            write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        if let Ok(entries) = fs::read_dir(self.ingest_dir()) {
            let now = SystemTime::now();
            for entry in entries.flatten() {
                let ours = entry.file_name().to_string_lossy().ends_with(".strata");
                let stale = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > STALE_INGEST);
                if ours && stale {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        Ok(())
    }

    /// Locks `index.json.lock` (the lock file BuildKit's client uses too) and
    /// makes sure the lock is on the file at that path, not one just removed.
    fn lock_index(&self, exclusive: bool) -> io::Result<(fs::File, PathBuf)> {
        use std::os::unix::fs::MetadataExt;
        let path = self.dir.join("index.json.lock");
        loop {
            let file = fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)?;
            if exclusive {
                file.lock()?;
            } else {
                file.lock_shared()?;
            }
            let held = file.metadata()?;
            match fs::metadata(&path) {
                Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {
                    return Ok((file, path))
                }
                _ => continue, // removed or replaced by its previous holder: lock anew
            }
        }
    }

    fn read_index(&self) -> io::Result<serde_json::Value> {
        match fs::read(self.dir.join("index.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| invalid(io::ErrorKind::InvalidData, e.to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": []
            })),
            Err(e) => Err(e),
        }
    }

    /// The descriptor tagged `tag` in index.json (annotation
    /// `org.opencontainers.image.ref.name`), if any. No index.json: `None`.
    pub fn get_tag(&self, tag: &str) -> io::Result<Option<serde_json::Value>> {
        if !self.dir.join("index.json").exists() {
            return Ok(None);
        }
        let (lock, lock_path) = self.lock_index(false)?;
        let index = self.read_index();
        // As BuildKit does, the lock file goes when done (lockers check it is still theirs).
        let _ = fs::remove_file(&lock_path);
        drop(lock);
        Ok(index?["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["annotations"][REF_NAME] == tag)
            .cloned())
    }

    /// Points `tag` at `descriptor` in index.json, keeping every other entry
    /// (as BuildKit's `ociindex.Put`: entries with the same tag are dropped,
    /// the new one is appended). The file is replaced atomically (temporary
    /// file, fsync, rename), under the lock BuildKit's client also takes.
    pub fn put_tag(&self, tag: &str, mut descriptor: serde_json::Value) -> io::Result<()> {
        if !descriptor.is_object() {
            return Err(invalid(
                io::ErrorKind::InvalidInput,
                "a descriptor must be a JSON object".into(),
            ));
        }
        self.init()?;
        let (lock, lock_path) = self.lock_index(true)?;
        let mut index = self.read_index()?;
        if !index.is_object() {
            return Err(invalid(
                io::ErrorKind::InvalidData,
                "index.json is not a JSON object".into(),
            ));
        }
        if index["schemaVersion"].is_null() {
            index["schemaVersion"] = 2.into();
        }
        if !descriptor["annotations"].is_object() {
            descriptor["annotations"] = serde_json::json!({});
        }
        descriptor["annotations"][REF_NAME] = tag.into();
        let mut list: Vec<serde_json::Value> = index["manifests"]
            .as_array_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        list.retain(|m| m["annotations"][REF_NAME] != tag);
        list.push(descriptor);
        index["manifests"] = list.into();
        let written = write_atomic(&self.dir.join("index.json"), &serde_json::to_vec(&index)?);
        // As BuildKit does, the lock file goes when done (lockers check it is still theirs).
        let _ = fs::remove_file(&lock_path);
        drop(lock);
        written
    }
}

/// Flushes a directory's entries (a rename in it) to disk.
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Writes `path` through a temporary file beside it, fsync and rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = crate::cleanup::TempPath::beside(path);
    let mut f = fs::File::create_new(tmp.path())?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(tmp.path(), path)?;
    tmp.keep();
    if let Some(dir) = path.parent() {
        sync_dir(dir);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_tags_are_replaced_atomically_and_others_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = OciLayout::new(tmp.path());
        assert!(layout.get_tag("latest").unwrap().is_none(), "no index yet");
        let desc = |d: &str| {
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": d,
                "size": 1,
                "annotations": {"keep": "me"}
            })
        };
        layout.put_tag("latest", desc("sha256:a")).unwrap();
        layout.put_tag("other", desc("sha256:b")).unwrap();
        layout.put_tag("latest", desc("sha256:c")).unwrap();
        let latest = layout.get_tag("latest").unwrap().unwrap();
        assert_eq!(latest["digest"], "sha256:c");
        assert_eq!(latest["annotations"]["keep"], "me");
        assert_eq!(
            layout.get_tag("other").unwrap().unwrap()["digest"],
            "sha256:b"
        );
        assert!(layout.get_tag("none").unwrap().is_none());
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(tmp.path().join("index.json")).unwrap()).unwrap();
        assert_eq!(index["schemaVersion"], 2);
        assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
        let layout_file: serde_json::Value =
            serde_json::from_slice(&fs::read(tmp.path().join("oci-layout")).unwrap()).unwrap();
        assert_eq!(layout_file["imageLayoutVersion"], "1.0.0");
        // Nothing but the layout is left: no temporary files, no lock file.
        let mut names: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["blobs", "index.json", "ingest", "oci-layout"]);
    }

    #[test]
    fn a_broken_index_is_an_error_not_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = OciLayout::new(tmp.path());
        fs::write(tmp.path().join("index.json"), "{not json").unwrap();
        assert!(layout.get_tag("latest").is_err());
        assert!(layout
            .put_tag("latest", serde_json::json!({"digest": "sha256:a"}))
            .is_err());
        assert_eq!(
            fs::read_to_string(tmp.path().join("index.json")).unwrap(),
            "{not json"
        );
    }

    #[test]
    fn concurrent_index_updates_keep_every_tag() {
        let tmp = tempfile::tempdir().unwrap();
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let layout = OciLayout::new(tmp.path());
                std::thread::spawn(move || {
                    for j in 0..5 {
                        let digest = format!("sha256:{i}-{j}");
                        layout
                            .put_tag(&format!("t{i}"), serde_json::json!({"digest": digest}))
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let layout = OciLayout::new(tmp.path());
        for i in 0..8 {
            let d = layout.get_tag(&format!("t{i}")).unwrap().unwrap();
            assert_eq!(d["digest"], format!("sha256:{i}-4"));
        }
    }

    #[test]
    fn stale_ingest_files_are_cleared() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = OciLayout::new(tmp.path());
        layout.init().unwrap();
        let old = layout.ingest_dir().join("dead.strata");
        let fresh = layout.ingest_dir().join("live.strata");
        let foreign = layout.ingest_dir().join("0123");
        for p in [&old, &fresh, &foreign] {
            fs::write(p, "x").unwrap();
        }
        let long_ago = SystemTime::now() - STALE_INGEST * 2;
        for p in [&old, &foreign] {
            fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(long_ago)
                .unwrap();
        }
        layout.init().unwrap();
        assert!(!old.exists());
        assert!(fresh.exists());
        assert!(foreign.exists(), "only our own files are touched");
    }
}
