//! `--load`: each image into a docker daemon's image store, by the cheapest
//! path that works, in this order:
//!
//! 1. **present** — the daemon already has the image (its key tag,
//!    `NAME:strata-<key>`, is there): at most a tag is added, nothing moves;
//! 2. **builder** — the daemon is the builder (`--addr docker://…`): its
//!    BuildKit exports straight into its store (the `moby` exporter);
//! 3. **pull** — the image was pushed: the daemon pulls it, and only the
//!    layers it lacks travel;
//! 4. **tarball** — otherwise a docker tarball is streamed from the daemon
//!    that built into the Docker API's image load, never staged on disk.
//!
//! Every loaded image is tagged with its name and its key tag, so the next
//! build finds it present and `strata images` can list and prune them.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{BuildError, Run};
use crate::connect::Addr;
use crate::docker::{Docker, DockerError};
use crate::keys::{tags, ContentKey};
use crate::options::Output;
use crate::options::TarStream;
use crate::reference::ImageRef;
use crate::spec::Job;

/// How an image got into the docker daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadPath {
    Present,
    Builder,
    Pull,
    Tarball,
}

impl LoadPath {
    /// As the build summary says it.
    pub fn describe(self) -> &'static str {
        match self {
            LoadPath::Present => "already there",
            LoadPath::Builder => "exported by the builder itself",
            LoadPath::Pull => "pulled from the registry",
            LoadPath::Tarball => "docker tarball streamed",
        }
    }
}

/// An image loaded into a docker daemon.
#[derive(Debug, Clone, Serialize)]
pub struct Loaded {
    pub path: LoadPath,
    /// Its name there, then its key tag.
    pub names: Vec<ImageRef>,
    /// The daemon's ID for it.
    pub image_id: Option<String>,
    /// How long loading took (for `present`, the check).
    pub duration: Duration,
    /// The platform loaded, when the image is an index of several (docker
    /// holds one: its own, else the index's first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<crate::llb::Platform>,
}

impl Loaded {
    /// This load, naming the platform of an index docker got (if any).
    pub fn of_platform(self, platform: Option<crate::llb::Platform>) -> Loaded {
        Loaded { platform, ..self }
    }
}

/// The names an image is loaded under: its name (push target) or image
/// output's name, else the spec's image name; and that repository's key tag.
/// Without key tags (`--no-key-tag`), only the name.
pub fn names(job: &Job, key: &ContentKey, key_tags: bool) -> Vec<ImageRef> {
    let named = job.name.clone().or_else(|| {
        job.outputs.iter().find_map(|o| match o {
            Output::Image { name, .. } => Some(name.clone()),
            _ => None,
        })
    });
    let name = named.unwrap_or_else(|| {
        job.image
            .parse()
            .expect("spec image names are valid repository names")
    });
    let key_name = tags::key_ref(&name, &job.image, key);
    if key_tags {
        vec![name, key_name]
    } else {
        vec![name]
    }
}

/// A load into `docker` that rides on the solve: the extra output, and for
/// a tarball the task reading it.
pub(super) struct SolveLoad {
    pub output: Output,
    path: LoadPath,
    loading: Option<tokio::task::JoinHandle<Result<(), DockerError>>>,
    began: Instant,
}

impl Run<'_> {
    /// The docker daemon `--load` targets, if any.
    pub(super) fn docker(&self) -> Option<Docker> {
        self.plan.load.as_deref().map(Docker::new)
    }

    /// Whether the builder is `docker`'s own BuildKit.
    fn builder_is(&self, docker: &Docker) -> bool {
        matches!(self.daemon.addr(), Addr::Docker(socket) if same_file(socket, docker.socket()))
    }

    /// The image found in `docker` under its key tag (its name pointed at
    /// it if it was not): path `present`.
    pub(super) async fn present(
        &self,
        docker: &Docker,
        names: &[ImageRef],
    ) -> Result<Option<Loaded>, BuildError> {
        let began = Instant::now();
        let [name, key_name] = names else {
            return Ok(None);
        };
        let Some(id) = docker.image_id(key_name).await? else {
            return Ok(None);
        };
        if docker.image_id(name).await?.as_deref() != Some(id.as_str()) {
            docker.tag(&id, name).await?;
        }
        Ok(Some(Loaded {
            path: LoadPath::Present,
            names: names.to_vec(),
            image_id: Some(id),
            duration: began.elapsed(),
            platform: None,
        }))
    }

    /// What the solve adds for `--load` when the image is not pushed (or the
    /// builder is the docker daemon): the builder's own export, or a tarball.
    pub(super) fn solve_load(
        &self,
        docker: &Docker,
        job: &Job,
        names: &[ImageRef],
    ) -> Option<SolveLoad> {
        let began = Instant::now();
        if self.builder_is(docker) {
            return Some(SolveLoad {
                output: Output::Moby {
                    names: names.to_vec(),
                },
                path: LoadPath::Builder,
                loading: None,
                began,
            });
        }
        if job.push.is_some() {
            return None; // pulled after the push
        }
        Some(tarball(docker, names))
    }

    /// After a solve that pushed: the daemon pulls the image by the digest
    /// this build pushed (a tag may have moved since: a concurrent push must
    /// not hand docker another image under this build's names), then tags
    /// it with each name.
    pub(super) async fn pull(
        &self,
        docker: &Docker,
        job: &Job,
        digest: Option<&str>,
        names: &[ImageRef],
    ) -> Result<Loaded, DockerError> {
        let began = Instant::now();
        let push = job.push.as_ref().expect("pulled only when pushed");
        let digest = digest.ok_or_else(|| DockerError::Failed {
            socket: docker.socket().to_owned(),
            what: "pull".into(),
            message: format!("{push}: the build did not say which digest it pushed"),
        })?;
        let source = push.with_digest(digest);
        docker.pull(&source, self.auth).await?;
        let pinned = format!("{}@{digest}", source.name());
        for name in names {
            docker.tag(&pinned, name).await?;
        }
        finish(docker, LoadPath::Pull, names, began).await
    }
}

/// A docker tarball export whose bytes go straight into `docker`'s image load.
pub(super) fn tarball(docker: &Docker, names: &[ImageRef]) -> SolveLoad {
    let (stream, reader) = TarStream::channel();
    let docker = docker.clone();
    let loading = tokio::spawn(async move { docker.load(reader).await });
    SolveLoad {
        output: Output::DockerStream {
            stream,
            names: names.to_vec(),
        },
        path: LoadPath::Tarball,
        loading: Some(loading),
        began: Instant::now(),
    }
}

impl SolveLoad {
    /// Once the solve succeeded: waits for the load to finish.
    pub(super) async fn finish(
        mut self,
        docker: &Docker,
        names: &[ImageRef],
    ) -> Result<Loaded, DockerError> {
        if let Some(loading) = self.loading.take() {
            loading.await.map_err(|e| DockerError::Failed {
                socket: docker.socket().to_owned(),
                what: "load".into(),
                message: e.to_string(),
            })??;
        }
        finish(docker, self.path, names, self.began).await
    }
}

impl Drop for SolveLoad {
    /// A solve that failed: its load stops (a cut-off tarball loads nothing).
    fn drop(&mut self) {
        if let Some(loading) = &self.loading {
            loading.abort();
        }
    }
}

async fn finish(
    docker: &Docker,
    path: LoadPath,
    names: &[ImageRef],
    began: Instant,
) -> Result<Loaded, DockerError> {
    // Docker's word that it has the image, under every name, checked: a
    // load docker silently dropped is an error, never "loaded".
    let mut image_id: Option<String> = None;
    for name in names {
        let failed = |message: String| DockerError::Failed {
            socket: docker.socket().to_owned(),
            what: "load".into(),
            message,
        };
        let id = docker
            .image_id(name)
            .await?
            .ok_or_else(|| failed(format!("docker does not have {name} after loading it")))?;
        match &image_id {
            Some(first) if *first != id => {
                return Err(failed(format!("{name} names {id}, not the loaded {first}")))
            }
            _ => image_id = Some(id),
        }
    }
    Ok(Loaded {
        path,
        names: names.to_vec(),
        image_id,
        duration: began.elapsed(),
        platform: None,
    })
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}
