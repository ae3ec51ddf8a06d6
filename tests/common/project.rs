//! Projects (a spec in a temp dir) and builds of them through the `strata`
//! binary with `--progress json`, folded back into steps for assertions.

use std::path::{Path, PathBuf};

use serde_json::Value;
use strata::registry::{Registry, RegistryOptions};

use super::{repo_root, stack, strata, strata_command, Run};

/// A spec in a temporary directory, with an overlay dir beside it.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn new(spec: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("overlay")).unwrap();
        std::fs::write(dir.path().join("overlay/hello.txt"), "hello\n").unwrap();
        std::fs::write(dir.path().join("strata.toml"), spec).unwrap();
        Project { dir }
    }

    /// A copy of examples/codex.
    pub fn codex() -> Project {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&repo_root().join("examples/codex"), dir.path());
        Project { dir }
    }

    pub fn spec(&self) -> PathBuf {
        self.dir.path().join("strata.toml")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `strata build -f SPEC ARGS… --progress json --metadata-file …` on `addr`.
    pub fn build(&self, addr: &str, args: &[&str]) -> Build {
        let (all, meta) = self.build_args(addr, args);
        Build::read(strata(&all), &meta)
    }

    /// The same build with `env` set for strata (e.g. S3 credentials).
    pub fn build_env(&self, addr: &str, args: &[&str], env: &[(&str, &str)]) -> Build {
        let (all, meta) = self.build_args(addr, args);
        let out = strata_command(&all)
            .envs(env.iter().copied())
            .output()
            .expect("running the strata binary");
        Build::read(super::Run::from(out), &meta)
    }

    /// The same build, started; [`RunningBuild::wait`] collects it.
    pub fn spawn_build(&self, addr: &str, args: &[&str]) -> RunningBuild {
        let (all, meta) = self.build_args(addr, args);
        let child = strata_command(&all)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("running the strata binary");
        RunningBuild { child, meta }
    }

    fn build_args(&self, addr: &str, args: &[&str]) -> (Vec<String>, PathBuf) {
        let meta = self.path(&format!("meta-{}.json", rand_suffix()));
        let mut all: Vec<String> = vec![
            "--addr".into(),
            addr.into(),
            "build".into(),
            "-f".into(),
            self.spec().display().to_string(),
            "--progress".into(),
            "json".into(),
            "--metadata-file".into(),
            meta.display().to_string(),
        ];
        if let Some(ca) = stack().var("STRATA_CA_CERT") {
            all.push("--ca-cert".into());
            all.push(ca.into());
        }
        all.extend(args.iter().map(|a| a.to_string()));
        (all, meta)
    }
}

/// A build started with [`Project::spawn_build`].
pub struct RunningBuild {
    pub child: std::process::Child,
    meta: PathBuf,
}

impl RunningBuild {
    pub fn finished(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    pub fn wait(self) -> Build {
        let out = self.child.wait_with_output().expect("waiting for strata");
        Build::read(Run::from(out), &self.meta)
    }
}

pub fn rand_suffix() -> String {
    strata::ids::random_id()[..8].to_owned()
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

pub struct Build {
    pub run: Run,
    pub metadata: Option<Value>,
}

impl Build {
    fn read(run: Run, meta: &Path) -> Build {
        let metadata = std::fs::read_to_string(meta)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        Build { run, metadata }
    }
}

/// A step as `--progress json` reported it: name, cached, ran (completed, not cached).
#[derive(Debug, Clone)]
pub struct StepReport {
    pub name: String,
    pub cached: bool,
    pub completed: bool,
    pub logs: String,
}

impl Build {
    pub fn ok(&self) -> &Self {
        self.run.ok();
        self
    }

    /// Steps folded from the JSON progress lines on stderr.
    pub fn steps(&self) -> Vec<StepReport> {
        let mut steps: Vec<(String, StepReport)> = Vec::new();
        for line in self.run.stderr.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let digest_of = |step: &Value| step["digest"].as_str().unwrap_or("").to_owned();
            for vx in v["vertexes"].as_array().into_iter().flatten() {
                let d = digest_of(vx);
                let i = match steps.iter().position(|(k, _)| *k == d) {
                    Some(i) => i,
                    None => {
                        steps.push((
                            d.clone(),
                            StepReport {
                                name: String::new(),
                                cached: false,
                                completed: false,
                                logs: String::new(),
                            },
                        ));
                        steps.len() - 1
                    }
                };
                let s = &mut steps[i].1;
                if let Some(n) = vx["name"].as_str().filter(|n| !n.is_empty()) {
                    s.name = n.to_owned();
                }
                s.cached |= vx["cached"].as_bool().unwrap_or(false);
                s.completed |= !vx["completed"].is_null();
            }
            // By digest: several solves (an image's, its cache mounts')
            // number their steps each from 1.
            for log in v["logs"].as_array().into_iter().flatten() {
                let d = digest_of(log);
                if let Some((_, s)) = steps.iter_mut().find(|(k, _)| *k == d) {
                    s.logs.push_str(log["data"].as_str().unwrap_or(""));
                }
            }
        }
        steps.into_iter().map(|(_, s)| s).collect()
    }

    /// Spec steps (named `[IMAGE n/N] …`) that did work: completed without
    /// coming from the cache. Base resolution, local transfers and exporting
    /// run on every build and are not steps of the spec.
    pub fn ran(&self) -> Vec<String> {
        self.steps()
            .into_iter()
            .filter(|s| s.completed && !s.cached)
            .filter(|s| s.name.starts_with('[') && !s.name.starts_with("[internal]"))
            .map(|s| s.name)
            .collect()
    }

    /// (steps, cached) from the summary line `IMAGE  DIGEST  N steps: R run, C cached, …`.
    pub fn summary(&self, image: &str) -> (u64, u64) {
        let line = self
            .run
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("{image}  ")))
            .unwrap_or_else(|| panic!("no summary line for {image}: {}", self.run.stdout));
        let number_before = |word: &str| -> u64 {
            let end = line
                .find(word)
                .unwrap_or_else(|| panic!("{word:?} in {line:?}"));
            let start = line[..end].trim_end().rfind(' ').map_or(0, |i| i + 1);
            line[start..end].trim().parse().unwrap()
        };
        (number_before(" steps:"), number_before(" cached"))
    }

    /// A number strata adds to the metadata file (`strata.steps`, …).
    pub fn meta_count(&self, image: &str, key: &str) -> u64 {
        self.metadata.as_ref().expect("metadata file written")[image][key]
            .as_u64()
            .unwrap_or_else(|| panic!("metadata {image}.{key}: {:?}", self.metadata))
    }

    pub fn meta(&self, image: &str, key: &str) -> String {
        self.metadata.as_ref().expect("metadata file written")[image][key]
            .as_str()
            .unwrap_or_else(|| panic!("metadata {image}.{key}: {:?}", self.metadata))
            .to_owned()
    }
}

pub fn registry() -> Registry {
    Registry::new(RegistryOptions::default())
}

/// The digest of the manifest `reference` names in its (loopback) registry.
pub fn manifest_digest(reference: &str) -> Option<String> {
    let image: strata::reference::ImageRef = reference.parse().expect("a reference");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(registry().manifest_digest(&image))
        .expect("the registry answers")
}

pub fn small_spec(image: &str, extra: &str) -> String {
    let s = stack();
    format!(
        r#"
[images.{image}]
base = "{base}"
env = {{ GREETING = "hi" }}
workdir = "/work"
entrypoint = ["/bin/sh", "-c"]
cmd = ["cat /work/hello.txt"]
labels = {{ "org.example.test" = "{image}" }}

[[images.{image}.toolchain]]
run = "echo toolchain > /toolchain.txt"
name = "write toolchain file"

{extra}

[images.{image}.overlay]
copy = {{ from = "overlay/", to = "/work" }}
"#,
        base = s.base_image
    )
}

/// The tags of `repo` (`HOST:PORT/NAME`) in a loopback registry, sorted.
pub fn registry_tags(repo: &str) -> Vec<String> {
    use std::io::{Read, Write};
    let (host, name) = repo.split_once('/').expect("HOST:PORT/NAME");
    let mut stream = std::net::TcpStream::connect(host).expect("the registry");
    write!(
        stream,
        "GET /v2/{name}/tags/list HTTP/1.0\r\nHost: {host}\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    tag_names(&serde_json::from_str(body).unwrap_or_default())
}

/// The tags of a tag list document, sorted.
pub fn tag_names(list: &Value) -> Vec<String> {
    let mut tags: Vec<String> = list["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect();
    tags.sort();
    tags
}

/// A JSON document of `repo` at `what` (`manifests/REF` or `blobs/DIGEST`),
/// manifests asked for in every kind, indexes too; anything but 200 fails.
pub fn registry_json(repo: &str, what: &str) -> serde_json::Value {
    let accept =
        "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
         application/vnd.docker.distribution.manifest.list.v2+json, \
         application/vnd.docker.distribution.manifest.v2+json";
    let name = repo.split_once('/').unwrap().1;
    let request = format!("GET /v2/{name}/{what} HTTP/1.0\r\nAccept: {accept}\r\n");
    let (code, _, body) = registry_call(repo, &request, "", b"");
    assert_eq!(code, 200, "{what}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// One HTTP/1.0 exchange with a loopback registry: the status code, the
/// named response header's value and the body.
pub fn registry_call(
    repo: &str,
    request: &str,
    header: &str,
    body: &[u8],
) -> (u16, Option<String>, Vec<u8>) {
    use std::io::{Read, Write};
    let (host, _) = repo.split_once('/').expect("HOST:PORT/NAME");
    let mut stream = std::net::TcpStream::connect(host).expect("the registry");
    write!(
        stream,
        "{request}Host: {host}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(body).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let value = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(header).then(|| v.trim().to_owned())
    });
    (status, value, answer[split + 4..].to_vec())
}

/// Makes `repo:to` name the manifest `repo:from` names (a GET, then a PUT).
pub fn registry_retag(repo: &str, from: &str, to: &str) {
    let name = repo.split_once('/').unwrap().1;
    let accept = "Accept: application/vnd.oci.image.manifest.v1+json, \
                  application/vnd.oci.image.index.v1+json, \
                  application/vnd.docker.distribution.manifest.v2+json, \
                  application/vnd.docker.distribution.manifest.list.v2+json\r\n";
    let get = format!("GET /v2/{name}/manifests/{from} HTTP/1.0\r\n{accept}");
    let (status, media_type, manifest) = registry_call(repo, &get, "content-type", b"");
    assert_eq!(status, 200, "GET {repo}:{from}");
    let put = format!(
        "PUT /v2/{name}/manifests/{to} HTTP/1.0\r\nContent-Type: {}\r\n",
        media_type.unwrap()
    );
    let (status, _, body) = registry_call(repo, &put, "", &manifest);
    assert_eq!(
        status,
        201,
        "PUT {repo}:{to}: {}",
        String::from_utf8_lossy(&body)
    );
}

/// The text of file `path` (as a tar entry path, e.g. `uname.txt`) in the
/// topmost layer of `reference`'s `platform` image that holds it.
pub async fn layer_file(reference: &str, platform: &str, path: &str) -> Option<String> {
    use std::io::{Read, Seek};
    let image: strata::reference::ImageRef = reference.parse().expect("a reference");
    let platform: strata::llb::Platform = platform.parse().expect("a platform");
    let resolved = registry().manifest(&image, &platform).await.unwrap();
    for layer in resolved.manifest.layers().iter().rev() {
        let mut blob = tempfile::tempfile().unwrap();
        let digest = layer.digest().to_string();
        registry()
            .blob_to(&image, &digest, &mut blob)
            .await
            .unwrap();
        blob.rewind().unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(blob));
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            if entry
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_start_matches("./")
                == path
            {
                let mut text = String::new();
                entry.read_to_string(&mut text).unwrap();
                return Some(text);
            }
        }
    }
    None
}
