//! A directory under which every path resolves without following a symlink.
//!
//! What the daemon sends is not trusted: a tree it exports may list `d` as a
//! symlink to `/root/.ssh` and then `d/x`, or the other way round. So nothing
//! is ever opened by a full path: each operation walks its parent directories
//! one component at a time from the root's file descriptor with
//! `openat(O_NOFOLLOW | O_DIRECTORY)` (a symlink anywhere on the way fails with
//! ELOOP/ENOTDIR), then acts on the last component with the `*at` call that
//! does not follow it either. Only strata writes into the root (it is a fresh
//! private staging directory), so a check followed by an action cannot race.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// A directory handle; every relative path given is resolved beneath it.
#[derive(Debug)]
pub(crate) struct Beneath {
    root: OwnedFd,
}

fn cstr(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Opens directory `name` in `dir`, refusing a symlink.
fn open_dir_at(dir: &OwnedFd, name: &CString) -> io::Result<OwnedFd> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: a valid directory fd and a NUL-terminated name.
    let fd = check(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags) })?;
    // SAFETY: openat returned a new descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The `st_mode` of `name` in `dir`, not following a symlink.
fn mode_at(dir: &OwnedFd, name: &CString) -> io::Result<libc::mode_t> {
    // SAFETY: zeroed plain-data struct filled by fstatat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    check(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st.st_mode & libc::S_IFMT)
}

fn symlink_error(rel: &Path, upto: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{} does not resolve beneath the destination: {} is not a directory (a symlink?)",
            rel.display(),
            upto.display()
        ),
    )
}

impl Beneath {
    /// Opens `path` (itself not a symlink) as the root.
    pub(crate) fn open(path: &Path) -> io::Result<Beneath> {
        let c = cstr(path.as_os_str().as_bytes())?;
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: a NUL-terminated path.
        let fd = check(unsafe { libc::open(c.as_ptr(), flags) })?;
        Ok(Beneath {
            // SAFETY: open returned a new descriptor we now own.
            root: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Creates `path` (private: 0700) and opens it as the root.
    pub(crate) fn create(path: &Path) -> io::Result<Beneath> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().mode(0o700).create(path)?;
        Beneath::open(path)
    }

    /// The directory holding `rel`'s last component, and that component.
    /// Missing directories on the way are made (0755) when `create` is set.
    fn parent(&self, rel: &Path, create: bool) -> io::Result<(OwnedFd, CString)> {
        let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
        for c in rel.components() {
            match c {
                Component::Normal(p) => parts.push(p),
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{} is not a plain relative path", rel.display()),
                    ))
                }
            }
        }
        let Some((last, dirs)) = parts.split_last() else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty path"));
        };
        let mut dir = open_dir_at(&self.root, &cstr(b".")?)?;
        let mut walked = PathBuf::new();
        for name in dirs {
            walked.push(name);
            let c = cstr(name.as_bytes())?;
            dir = match open_dir_at(&dir, &c) {
                Ok(next) => next,
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    // SAFETY: a valid directory fd and a NUL-terminated name.
                    check(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o755) })?;
                    open_dir_at(&dir, &c)?
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
                    return Err(symlink_error(rel, &walked))
                }
                Err(e) => return Err(e),
            };
        }
        Ok((dir, cstr(last.as_bytes())?))
    }

    /// Makes directory `rel` (0700 until its mode is applied); an existing
    /// directory is fine, anything else there is an error.
    pub(crate) fn mkdir(&self, rel: &Path) -> io::Result<()> {
        let (dir, name) = self.parent(rel, true)?;
        // SAFETY: a valid directory fd and a NUL-terminated name.
        match check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o700) }) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if mode_at(&dir, &name)? == libc::S_IFDIR {
                    Ok(())
                } else {
                    Err(symlink_error(rel, rel))
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Creates regular file `rel`, which must not exist yet.
    pub(crate) fn create_file(&self, rel: &Path) -> io::Result<File> {
        let (dir, name) = self.parent(rel, true)?;
        let flags =
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: a valid directory fd and a NUL-terminated name.
        let fd = check(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, 0o600) })?;
        // SAFETY: openat returned a new descriptor we now own.
        Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Creates symlink `rel` pointing at `target` (never followed by us).
    pub(crate) fn symlink(&self, target: &str, rel: &Path) -> io::Result<()> {
        let (dir, name) = self.parent(rel, true)?;
        let target = cstr(target.as_bytes())?;
        // SAFETY: NUL-terminated strings and a valid directory fd.
        check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })?;
        Ok(())
    }

    /// Creates a fifo or device node `rel`.
    pub(crate) fn mknod(&self, rel: &Path, mode: libc::mode_t, dev: libc::dev_t) -> io::Result<()> {
        let (dir, name) = self.parent(rel, true)?;
        // SAFETY: a valid directory fd, a NUL-terminated name, plain integers.
        check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, dev) })?;
        Ok(())
    }

    /// Makes `rel` another name of `target`, both beneath the root; `target`
    /// itself is linked, never what it may point at.
    pub(crate) fn hard_link(&self, target: &Path, rel: &Path) -> io::Result<()> {
        let (tdir, tname) = self.parent(target, false)?;
        if mode_at(&tdir, &tname)? == libc::S_IFDIR {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "hard link {} to directory {}",
                    rel.display(),
                    target.display()
                ),
            ));
        }
        let (dir, name) = self.parent(rel, true)?;
        // SAFETY: valid directory fds and NUL-terminated names; flags 0 does
        // not follow a symlink `target`.
        check(unsafe {
            libc::linkat(
                tdir.as_raw_fd(),
                tname.as_ptr(),
                dir.as_raw_fd(),
                name.as_ptr(),
                0,
            )
        })?;
        Ok(())
    }

    /// Sets `rel`'s permission bits; a symlink is refused (chmod would follow it).
    pub(crate) fn chmod(&self, rel: &Path, mode: libc::mode_t) -> io::Result<()> {
        let (dir, name) = self.parent(rel, false)?;
        if mode_at(&dir, &name)? == libc::S_IFLNK {
            return Err(symlink_error(rel, rel));
        }
        // SAFETY: a valid directory fd and a NUL-terminated name.
        check(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode, 0) })?;
        Ok(())
    }

    /// Sets atime and mtime of `rel` (a symlink itself, not its target).
    pub(crate) fn set_times(&self, rel: &Path, time: libc::timespec) -> io::Result<()> {
        let (dir, name) = self.parent(rel, false)?;
        let times = [time, time];
        // SAFETY: a valid directory fd, a NUL-terminated name, two timespecs.
        check(unsafe {
            libc::utimensat(
                dir.as_raw_fd(),
                name.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn nothing_resolves_through_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("secret"), "s").unwrap();
        let root = Beneath::create(&tmp.path().join("root")).unwrap();
        root.symlink(outside.to_str().unwrap(), Path::new("d"))
            .unwrap();
        let through = Path::new("d/x");
        assert!(root.create_file(through).is_err());
        assert!(root.mkdir(through).is_err());
        assert!(root.symlink("/", through).is_err());
        assert!(root
            .hard_link(Path::new("d/secret"), Path::new("y"))
            .is_err());
        assert!(root.chmod(Path::new("d"), 0o777).is_err());
        assert!(
            root.mkdir(Path::new("d")).is_err(),
            "a symlink is not a directory"
        );
        assert!(root.create_file(Path::new("d")).is_err(), "O_EXCL");
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);
        assert_ne!(
            fs::metadata(&outside).unwrap().permissions(),
            std::os::unix::fs::PermissionsExt::from_mode(0o40777)
        );
        assert!(root.parent(Path::new("../x"), true).is_err());
        assert!(root.parent(Path::new("/x"), true).is_err());
    }

    #[test]
    fn writes_and_links_beneath_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Beneath::create(&tmp.path().join("root")).unwrap();
        let on_disk = tmp.path().join("root");
        root.mkdir(Path::new("a")).unwrap();
        root.mkdir(Path::new("a")).unwrap();
        use std::io::Write;
        root.create_file(Path::new("a/b/f"))
            .unwrap()
            .write_all(b"hi")
            .unwrap();
        root.hard_link(Path::new("a/b/f"), Path::new("g")).unwrap();
        assert_eq!(fs::read_to_string(on_disk.join("g")).unwrap(), "hi");
        assert!(root.hard_link(Path::new("a"), Path::new("h")).is_err());
    }
}
