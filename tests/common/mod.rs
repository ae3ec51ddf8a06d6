//! The shared harness: brings up (or reuses) the real daemon stack through
//! `scripts/daemon.sh up` and hands tests its addresses. No daemon, no pass:
//! every integration test fails loudly when the stack cannot be started.

#![allow(dead_code)]

pub mod project;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Addresses and paths of the running stack, as `scripts/daemon.sh` exports them.
#[derive(Debug, Clone)]
pub struct Stack {
    /// `unix://…/buildkitd.sock` of the standalone buildkitd.
    pub buildkit_host: String,
    /// `tcp://127.0.0.1:PORT` of the same daemon, mTLS only.
    pub tcp_addr: String,
    /// Client side of the mTLS setup: ca.pem, cert.pem, key.pem.
    pub tls_dir: PathBuf,
    /// `docker://…/docker.sock` of dockerd's embedded BuildKit.
    pub docker_host: String,
    /// `127.0.0.1:5000`
    pub registry: String,
    /// The bookworm base image in that registry.
    pub base_image: String,
    /// BuildKit's own client, for filling cache and for interop checks.
    pub buildctl: PathBuf,
    env: HashMap<String, String>,
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The running stack, started on first use (once per test binary; the script
/// serialises concurrent callers and reuses what is already up).
pub fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| {
        let script = repo_root().join("scripts/daemon.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg("up")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        if !out.status.success() {
            panic!(
                "scripts/daemon.sh up failed ({}); integration tests need the real daemon stack.\n--- stderr ---\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let env = parse_exports(&String::from_utf8_lossy(&out.stdout));
        let get = |k: &str| {
            env.get(k)
                .cloned()
                .unwrap_or_else(|| panic!("scripts/daemon.sh up did not export {k}"))
        };
        Stack {
            buildkit_host: get("BUILDKIT_HOST"),
            tcp_addr: get("STRATA_TCP_ADDR"),
            tls_dir: get("STRATA_TLS_DIR").into(),
            docker_host: get("STRATA_DOCKER_HOST"),
            registry: get("STRATA_REGISTRY"),
            base_image: get("STRATA_BASE_IMAGE"),
            buildctl: get("STRATA_BUILDCTL").into(),
            env,
        }
    })
}

/// Parses `export NAME=VALUE` lines (values possibly single- or double-quoted).
fn parse_exports(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("export "))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .or_else(|| v.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
                .unwrap_or(v);
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// The result of running the `strata` binary.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(out: Output) -> Self {
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Asserts success and returns stdout.
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "strata failed:\n{self:#?}");
        &self.stdout
    }

    /// Asserts a clean failure (exit 1, one `error:` line, no panic) and returns that line.
    pub fn clean_error(&self) -> &str {
        assert_eq!(self.code, Some(1), "expected exit 1:\n{self:#?}");
        assert!(!self.stderr.contains("panicked"), "panic:\n{}", self.stderr);
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "expected one error line:\n{}", self.stderr);
        assert!(lines[0].starts_with("error: "), "{}", lines[0]);
        lines[0]
    }
}

/// Runs `strata ARGS…` with a clean environment (no BUILDKIT_HOST leaking in).
pub fn strata<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = strata_command(args)
        .output()
        .expect("running the strata binary");
    Run::from(out)
}

/// The `strata ARGS…` command [`strata`] runs, for tests that start it and
/// act while it runs.
pub fn strata_command<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
    cmd.args(args)
        .env_remove("BUILDKIT_HOST")
        .env_remove("STRATA_LOG")
        // Tests name the SBOM generator they use; bare `--sbom` means Docker Hub.
        .env_remove("STRATA_SBOM_GENERATOR");
    // S3 tests pass the credentials they mean to use.
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// A TCP proxy on a free loopback port in front of `upstream`, forwarding
/// bytes unchanged until what a client sends first matches `cut`: then it
/// drops every connection and refuses new ones, as a server that stopped.
pub struct CutProxy {
    pub addr: String,
    pub cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl CutProxy {
    pub fn start(upstream: &str, cut: impl Fn(&[u8]) -> bool + Send + Sync + 'static) -> CutProxy {
        use std::sync::atomic::Ordering::SeqCst;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (upstream, cut, stopped) =
            (upstream.to_owned(), std::sync::Arc::new(cut), flag.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if stopped.load(SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (cut, stopped2) = (cut.clone(), stopped.clone());
                std::thread::spawn(move || pipe(client, server, Some((cut, stopped2))));
                std::thread::spawn(move || pipe(s2, c2, None));
            }
        });
        CutProxy { addr, cut: flag }
    }
}

type Cut = (
    std::sync::Arc<dyn Fn(&[u8]) -> bool + Send + Sync>,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
);

/// Copies `from` to `to` until either ends; with `cut`, stops both (and the
/// proxy) once a chunk matches.
fn pipe(mut from: std::net::TcpStream, mut to: std::net::TcpStream, cut: Option<Cut>) {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering::SeqCst;
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some((matches, stopped)) = &cut {
            if stopped.load(SeqCst) || matches(&buf[..n]) {
                stopped.store(true, SeqCst);
                break;
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(std::net::Shutdown::Both);
    let _ = to.shutdown(std::net::Shutdown::Both);
}

/// A registry of the tests' own (Debian's docker-registry, as the stack's) on
/// a free loopback port, with its storage in a temp dir: for tests that stop a
/// registry while the daemon talks to it. Killed when dropped.
pub struct ScratchRegistry {
    pub addr: String,
    pub storage: tempfile::TempDir,
    process: std::process::Child,
}

impl ScratchRegistry {
    pub fn start() -> ScratchRegistry {
        let storage = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = storage.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                storage.path().join("data").display()
            ),
        )
        .unwrap();
        let process = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting docker-registry (installed by scripts/daemon.sh)");
        let registry = ScratchRegistry {
            addr,
            storage,
            process,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(&registry.addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the scratch registry did not listen on {}",
                registry.addr
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        registry
    }

    /// Whether a blob upload to repository `name` has begun.
    pub fn uploading(&self, name: &str) -> bool {
        let uploads = self
            .storage
            .path()
            .join("data/docker/registry/v2/repositories")
            .join(name)
            .join("_uploads");
        std::fs::read_dir(uploads).is_ok_and(|mut d| d.next().is_some())
    }

    /// Stops it the hard way, as a crashed or unplugged registry would.
    pub fn kill(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Drop for ScratchRegistry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs buildctl against `addr` (for filling cache and interop checks).
pub fn buildctl(addr: &str, args: &[&str], dir: Option<&Path>) -> Run {
    let mut cmd = Command::new(&stack().buildctl);
    cmd.arg("--addr").arg(addr).args(args);
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    Run::from(cmd.output().expect("running buildctl"))
}

impl Stack {
    /// The mTLS flags for the tcp:// address.
    pub fn tls_args(&self) -> Vec<String> {
        vec![
            "--tlscacert".into(),
            self.tls_dir.join("ca.pem").display().to_string(),
            "--tlscert".into(),
            self.tls_dir.join("cert.pem").display().to_string(),
            "--tlskey".into(),
            self.tls_dir.join("key.pem").display().to_string(),
        ]
    }

    pub fn var(&self, name: &str) -> Option<&str> {
        self.env.get(name).map(String::as_str)
    }
}

/// A buildkitd of the test's own — the stack's binary and config, its own
/// root and unix socket — for tests that kill or restart a daemon without
/// disturbing the shared one. Killed (and its root removed) when dropped.
pub struct ScratchDaemon {
    pub addr: String,
    pub root: PathBuf,
    dir: PathBuf,
    /// Its pprof endpoint on loopback (`--debugaddr`), for a goroutine dump
    /// when a test finds it holding something it should have let go.
    debug_addr: String,
    process: Option<std::process::Child>,
}

impl ScratchDaemon {
    pub fn start() -> ScratchDaemon {
        let shared_sock = stack()
            .buildkit_host
            .strip_prefix("unix://")
            .expect("the stack's buildkitd is on a unix socket");
        let state = Path::new(shared_sock).parent().unwrap();
        let dir = state.join(format!("scratch-{}", project::rand_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut daemon = ScratchDaemon {
            addr: format!("unix://{}", dir.join("buildkitd.sock").display()),
            root: dir.join("root"),
            dir,
            debug_addr: free_loopback_addr(),
            process: None,
        };
        daemon.restart();
        daemon
    }

    /// Starts the daemon again on the same root (after [`ScratchDaemon::kill`]).
    pub fn restart(&mut self) {
        let shared_sock = stack().buildkit_host.strip_prefix("unix://").unwrap();
        let config = Path::new(shared_sock).with_file_name("buildkitd.toml");
        let buildkitd = stack().buildctl.with_file_name("buildkitd");
        let sock = self.dir.join("buildkitd.sock");
        let _ = std::fs::remove_file(&sock);
        let log = std::fs::File::create(self.dir.join("buildkitd.log")).unwrap();
        let process = Command::new(&buildkitd)
            .arg("--config")
            .arg(&config)
            .arg("--root")
            .arg(&self.root)
            .arg("--addr")
            .arg(&self.addr)
            .arg("--debugaddr")
            .arg(&self.debug_addr)
            // S3 credentials reach a daemon only as a build sends them.
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_REGION")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", buildkitd.display()));
        self.process = Some(process);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while buildctl(&self.addr, &["debug", "workers"], None).code != Some(0) {
            assert!(
                std::time::Instant::now() < deadline,
                "the scratch buildkitd did not start:\n{}",
                std::fs::read_to_string(self.dir.join("buildkitd.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// SIGKILL, as a crash or an OOM kill would.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }

    /// The daemon's goroutines whose stacks pass through any of `frames`
    /// (e.g. `exporter`, `filesync`), as Go prints them: what it is stuck in.
    pub fn goroutines_in(&self, frames: &[&str]) -> String {
        let url = format!("http://{}/debug/pprof/goroutine?debug=2", self.debug_addr);
        let out = Command::new("curl")
            .args(["-fsS", "--max-time", "10", &url])
            .output();
        let dump = match out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
            Ok(o) => {
                return format!(
                    "(no goroutine dump: {})",
                    String::from_utf8_lossy(&o.stderr)
                )
            }
            Err(e) => return format!("(no goroutine dump: curl: {e})"),
        };
        dump.split("\n\n")
            .filter(|g| frames.iter().any(|f| g.contains(f)))
            .collect::<Vec<_>>()
            .join("\n\n")
    }

    /// The ids of the runc containers (running steps) the daemon has.
    pub fn containers(&self) -> Vec<String> {
        let out = Command::new("runc")
            .arg("--root")
            .arg(self.root.join("runc-overlayfs/executor"))
            .args(["list", "-q"])
            .output()
            .expect("running runc");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// A loopback address no one listens on right now.
fn free_loopback_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

impl Drop for ScratchDaemon {
    fn drop(&mut self) {
        self.kill();
        // A killed daemon may leave overlay mounts under its root.
        let root = self.dir.display().to_string();
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") {
            let mut points: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|p| p.starts_with(&root))
                .collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for p in points {
                let _ = Command::new("umount").arg("-l").arg(p).status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A hostile HTTP server (a "registry", a token realm) on a free loopback
/// port: every connection's request head is recorded, then `answer` writes
/// whatever it likes.
pub fn hostile_http(
    answer: fn(&mut std::net::TcpStream, &str),
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let record = record.clone();
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                // A TLS hello gets a plain HTTP answer, as a Go server gives
                // it: clients that try https first then fall back to http.
                if std::io::Read::read(&mut stream, &mut byte).unwrap_or(0) == 1 && byte[0] == 0x16
                {
                    let _ =
                        std::io::Write::write_all(&mut stream, b"HTTP/1.0 400 Bad Request\r\n\r\n");
                    return;
                }
                head.push(byte[0]);
                // Keep-alive, as a real registry: a client may send its next
                // request on this connection, and closing after one answer
                // would race with it.
                loop {
                    while !head.ends_with(b"\r\n\r\n")
                        && std::io::Read::read(&mut stream, &mut byte).unwrap_or(0) == 1
                    {
                        head.push(byte[0]);
                    }
                    if !head.ends_with(b"\r\n\r\n") {
                        return;
                    }
                    let text = String::from_utf8_lossy(&head).into_owned();
                    record.lock().unwrap().push(text.clone());
                    answer(&mut stream, &text);
                    head.clear();
                }
            });
        }
    });
    (addr, seen)
}

/// Faults a [`registry_proxy`] adds to the real registry's answers.
#[derive(Default, Clone)]
pub struct ProxyFaults {
    /// No `Docker-Content-Digest` header on any answer.
    pub strip_digest: bool,
    /// Tag lists served one tag per page, the next named by `Link`.
    pub one_tag_pages: bool,
    /// A next page's `Link` made absolute, on another host.
    pub link_elsewhere: bool,
    /// DELETEs past the first this many are answered 500.
    pub deletes_allowed: Option<usize>,
    /// Run once, before the second tag list is answered (as a concurrent
    /// build that moves a tag between prune's listing and its delete).
    pub before_second_listing: Option<std::sync::Arc<dyn Fn() + Send + Sync>>,
}

/// A proxy on a free loopback port in front of the stack's registry (a
/// real one), adding `faults`: its `HOST:PORT`.
pub fn registry_proxy(faults: ProxyFaults) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let upstream = stack().registry.clone();
    let state = std::sync::Arc::new(ProxyState {
        faults,
        listings: Default::default(),
        deletes: Default::default(),
    });
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (state, upstream) = (state.clone(), upstream.clone());
            std::thread::spawn(move || {
                let mut stream = std::io::BufReader::new(stream);
                while let Some((head, body)) = read_request(&mut stream) {
                    let answer = state.answer(&upstream, head, body);
                    if std::io::Write::write_all(stream.get_mut(), &answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

struct ProxyState {
    faults: ProxyFaults,
    listings: std::sync::atomic::AtomicUsize,
    deletes: std::sync::atomic::AtomicUsize,
}

/// A request's head (lines) and body, or none at the end of the connection.
fn read_request(stream: &mut impl std::io::BufRead) -> Option<(Vec<String>, Vec<u8>)> {
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end().to_owned();
        if line.is_empty() {
            break;
        }
        head.push(line);
    }
    let length = header_value(&head, "content-length").map_or(0, |v| v.parse().unwrap_or(0));
    let mut body = vec![0; length];
    std::io::Read::read_exact(stream, &mut body).ok()?;
    Some((head, body))
}

fn header_value<'a>(head: &'a [String], name: &str) -> Option<&'a str> {
    head.iter().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

impl ProxyState {
    /// The answer to one request, as HTTP/1.1 with its length said.
    fn answer(&self, upstream: &str, mut head: Vec<String>, body: Vec<u8>) -> Vec<u8> {
        use std::sync::atomic::Ordering::SeqCst;
        let f = &self.faults;
        let (method, path) = {
            let mut parts = head[0].split(' ');
            (
                parts.next().unwrap_or("").to_owned(),
                parts.next().unwrap_or("").to_owned(),
            )
        };
        let mut path = path;
        let second_listing = path.contains("/tags/list") && self.listings.fetch_add(1, SeqCst) == 1;
        if let (true, Some(hook)) = (second_listing, &f.before_second_listing) {
            hook();
        }
        let page_after = (f.one_tag_pages && path.contains("/tags/list")).then(|| {
            let last = path
                .split_once("last=")
                .map(|(_, l)| l.split('&').next().unwrap_or(""));
            let last = last.unwrap_or("").to_owned();
            path = path.split('?').next().unwrap_or("").to_owned();
            last
        });
        if method == "DELETE" {
            let done = self.deletes.fetch_add(1, SeqCst);
            if f.deletes_allowed.is_some_and(|allowed| done >= allowed) {
                return b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n".to_vec();
            }
        }
        head[0] = format!("{method} {path} HTTP/1.0");
        head.retain(|l| !l.to_ascii_lowercase().starts_with("connection:"));
        let (status, mut headers, mut body) = forward(upstream, &head, &body);
        if let Some(last) = page_after {
            body = one_tag_page(&path, &last, &body, &mut headers);
        }
        headers.retain(|l| {
            let l = l.to_ascii_lowercase();
            !(l.starts_with("connection:")
                || l.starts_with("transfer-encoding:")
                || (l.starts_with("content-length:") && method != "HEAD")
                || (f.strip_digest && l.starts_with("docker-content-digest:")))
        });
        if f.link_elsewhere {
            for h in headers
                .iter_mut()
                .filter(|h| h.to_ascii_lowercase().starts_with("link:"))
            {
                *h = h.replacen('<', "<http://elsewhere.invalid", 1);
            }
        }
        if method != "HEAD" {
            headers.push(format!("Content-Length: {}", body.len()));
        }
        let mut answer =
            format!("HTTP/1.1 {status}\r\n{}\r\n\r\n", headers.join("\r\n")).into_bytes();
        answer.extend(body);
        answer
    }
}

/// The page of a tag list (`body`, whole) holding the one tag after `last`,
/// with a `Link` to the next page when there is one.
fn one_tag_page(path: &str, last: &str, body: &[u8], headers: &mut Vec<String>) -> Vec<u8> {
    let mut list: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let tags = project::tag_names(&list);
    let rest: Vec<&String> = tags.iter().filter(|t| t.as_str() > last).collect();
    if let Some(tag) = rest.first() {
        list["tags"] = serde_json::json!([tag]);
        if rest.len() > 1 {
            headers.push(format!("Link: <{path}?last={tag}&n=1>; rel=\"next\""));
        }
    }
    serde_json::to_vec(&list).unwrap()
}

/// Sends one HTTP/1.0 request upstream: the status line's rest, the header
/// lines and the body (read to the end of the connection).
fn forward(upstream: &str, head: &[String], body: &[u8]) -> (String, Vec<String>, Vec<u8>) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(upstream).expect("the registry");
    write!(stream, "{}\r\n\r\n", head.join("\r\n")).unwrap();
    stream.write_all(body).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(answer.len());
    let text = String::from_utf8_lossy(&answer[..split]).into_owned();
    let mut lines = text.lines().map(str::to_owned);
    let status = lines
        .next()
        .and_then(|l| l.split_once(' ').map(|(_, s)| s.to_owned()))
        .unwrap_or_default();
    let rest = answer.get(split + 4..).unwrap_or_default().to_vec();
    (status, lines.collect(), rest)
}

/// Runs `cmd` in a container of `image` on the stack's dockerd (no network,
/// a TTY so the output is plain) and returns what it printed; the container
/// is removed after.
pub fn docker_run(image: &str, cmd: &[&str]) -> String {
    let socket = stack()
        .docker_host
        .strip_prefix("docker://")
        .expect("STRATA_DOCKER_HOST is docker://PATH")
        .to_owned();
    let call = |method: &str, path: &str, body: Option<String>| -> Vec<u8> {
        let mut curl = Command::new("curl");
        curl.args([
            "-sS",
            "--fail-with-body",
            "--unix-socket",
            &socket,
            "-X",
            method,
        ]);
        if let Some(body) = body {
            curl.args(["-H", "Content-Type: application/json", "-d", &body]);
        }
        let out = curl
            .arg(format!("http://docker{path}"))
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "docker {method} {path}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        out.stdout
    };
    let create = serde_json::json!({
        "Image": image,
        "Cmd": cmd,
        "Tty": true,
        "HostConfig": { "NetworkMode": "none" },
    });
    let created: serde_json::Value = serde_json::from_slice(&call(
        "POST",
        "/containers/create",
        Some(create.to_string()),
    ))
    .unwrap();
    let id = created["Id"].as_str().expect("a container id").to_owned();
    call("POST", &format!("/containers/{id}/start"), None);
    call("POST", &format!("/containers/{id}/wait"), None);
    let logs = call(
        "GET",
        &format!("/containers/{id}/logs?stdout=1&stderr=1"),
        None,
    );
    call("DELETE", &format!("/containers/{id}?force=1"), None);
    String::from_utf8_lossy(&logs).into_owned()
}
