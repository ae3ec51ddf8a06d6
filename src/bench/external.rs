//! The same work through another client, for `--compare`: buildctl (an LLB
//! image: strata's very graph on stdin; a Dockerfile image: the same
//! frontend options) or buildx (a Dockerfile image, remote driver to the
//! same daemon). Each gets the same local dirs, secrets, cache import and
//! output — a push to its own tag of the bench repository — as strata, is
//! timed the same way, and its steps come from its `--progress rawjson`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use tokio::io::AsyncReadExt;
use tokio::process::Command;

use super::{rawjson, Mode, RunResult};
use crate::build::CA_SECRET_ID;
use crate::options::CacheImport;
use crate::reference::ImageRef;
use crate::spec::{Dockerfile, LoweredImage};

/// A client strata is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Buildctl,
    Buildx,
}

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Tool::Buildctl => "buildctl",
            Tool::Buildx => "buildx",
        }
    }
}

impl std::str::FromStr for Tool {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "buildctl" => Ok(Tool::Buildctl),
            "buildx" => Ok(Tool::Buildx),
            other => Err(format!("unknown client {other:?} (buildctl, buildx)")),
        }
    }
}

/// One client, ready to run.
#[derive(Debug, Clone)]
pub struct External {
    pub tool: Tool,
    pub exe: PathBuf,
    /// buildctl: `--addr` and TLS flags. buildx: unused (its builder has them).
    pub daemon_args: Vec<String>,
    /// buildx: its config directory (`BUILDX_CONFIG`), holding the builder.
    pub buildx_config: Option<PathBuf>,
}

/// What every client builds in a run.
pub struct Work<'a> {
    pub image: &'a LoweredImage,
    pub dockerfile: Option<&'a Dockerfile>,
    /// The image's LLB, for buildctl's stdin.
    pub llb_file: &'a Path,
    pub ca_cert: Option<&'a Path>,
    /// Where this client pushes the image.
    pub output: ImageRef,
}

/// What a client printed of one build, and how long the build took.
pub struct Captured {
    /// Its `--progress rawjson` stream.
    pub progress: String,
    pub seconds: f64,
}

/// The remote-driver builder buildx uses, made once per bench.
pub const BUILDX_BUILDER: &str = "strata-bench";

impl External {
    /// Creates buildx's builder pointing at `addr` (buildx cannot take raw
    /// LLB, so it is compared on Dockerfile images only).
    pub async fn prepare_buildx(exe: &Path, addr: &str, config: &Path) -> Result<(), String> {
        let status = Command::new(exe)
            .env("BUILDX_CONFIG", config)
            .args([
                "create",
                "--name",
                BUILDX_BUILDER,
                "--driver",
                "remote",
                addr,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .await
            .map_err(|e| format!("running {}: {e}", exe.display()))?;
        if !status.status.success() {
            let err = String::from_utf8_lossy(&status.stderr);
            return Err(format!("buildx create: {}", err.trim()));
        }
        Ok(())
    }

    /// One timed build of `work`, importing `import`.
    pub async fn run(
        &self,
        work: &Work<'_>,
        import: Option<&CacheImport>,
        mode: Mode,
        run: usize,
    ) -> Result<RunResult, String> {
        let captured = self.capture(work, import).await?;
        let image = work.image;
        let frontend = image.frontend().is_some();
        let spec_step = move |digest: &str, name: &str| {
            if frontend {
                crate::build::is_dockerfile_step(name)
            } else {
                image.steps.iter().any(|s| s.digest == digest)
            }
        };
        Ok(rawjson::fold(
            &captured.progress,
            &spec_step,
            self.tool.name(),
            mode,
            run,
            captured.seconds,
        ))
    }

    /// One timed build of `work`, importing `import`: its rawjson progress
    /// and wall time.
    pub async fn capture(
        &self,
        work: &Work<'_>,
        import: Option<&CacheImport>,
    ) -> Result<Captured, String> {
        let (mut cmd, stdin) = match self.tool {
            Tool::Buildctl => self.buildctl(work, import),
            Tool::Buildx => self.buildx(work, import)?,
        };
        let stdin = match stdin {
            Some(file) => Stdio::from(
                std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?,
            ),
            None => Stdio::null(),
        };
        cmd.stdin(stdin)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let t = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("running {}: {e}", self.exe.display()))?;
        let mut progress = String::new();
        if let Some(mut err) = child.stderr.take() {
            let _ = err.read_to_string(&mut progress).await;
        }
        let status = child.wait().await.map_err(|e| e.to_string())?;
        let seconds = t.elapsed().as_secs_f64();
        if !status.success() {
            let tail: Vec<&str> = progress.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(format!(
                "{} failed ({status}): {}",
                self.tool.name(),
                tail.join(" | ")
            ));
        }
        Ok(Captured { progress, seconds })
    }

    fn buildctl<'w>(
        &self,
        work: &'w Work<'_>,
        import: Option<&CacheImport>,
    ) -> (Command, Option<&'w Path>) {
        let mut cmd = Command::new(&self.exe);
        cmd.args(&self.daemon_args)
            .args(["build", "--progress", "rawjson"]);
        for (name, dir) in &work.image.local_dirs {
            cmd.arg("--local")
                .arg(format!("{name}={}", dir.path.display()));
        }
        common_flags(&mut cmd, work, import, "--import-cache");
        match work.image.frontend() {
            Some(frontend) => {
                cmd.args(["--frontend", &frontend.name]);
                for (k, v) in &frontend.attrs_without_inputs() {
                    cmd.arg("--opt").arg(format!("{k}={v}"));
                }
                (cmd, None)
            }
            None => (cmd, Some(work.llb_file)),
        }
    }

    fn buildx<'w>(
        &self,
        work: &'w Work<'_>,
        import: Option<&CacheImport>,
    ) -> Result<(Command, Option<&'w Path>), String> {
        let (Some(dockerfile), Some(frontend)) = (work.dockerfile, work.image.frontend()) else {
            return Err("buildx builds Dockerfiles only (it cannot take raw LLB)".into());
        };
        let mut cmd = Command::new(&self.exe);
        if let Some(config) = &self.buildx_config {
            cmd.env("BUILDX_CONFIG", config);
        }
        cmd.args([
            "--builder",
            BUILDX_BUILDER,
            "build",
            "--progress",
            "rawjson",
        ])
        .args(["--provenance", "false"])
        .arg("-f")
        .arg(&dockerfile.file);
        // The frontend options strata sends, as buildx spells them.
        for (k, v) in &frontend.attrs_without_inputs() {
            if let Some(arg) = k.strip_prefix("build-arg:") {
                cmd.arg("--build-arg").arg(format!("{arg}={v}"));
            } else if let Some(label) = k.strip_prefix("label:") {
                cmd.arg("--label").arg(format!("{label}={v}"));
            } else if let Some(name) = k.strip_prefix("context:") {
                cmd.arg("--build-context").arg(format!("{name}={v}"));
            } else if k == "target" || k == "platform" {
                cmd.arg(format!("--{k}")).arg(v);
            }
        }
        common_flags(&mut cmd, work, import, "--cache-from");
        cmd.arg(&dockerfile.context);
        Ok((cmd, None))
    }
}

/// The CA secret, the cache import and the output, as both clients spell them.
fn common_flags(
    cmd: &mut Command,
    work: &Work<'_>,
    import: Option<&CacheImport>,
    import_flag: &str,
) {
    if let Some(ca) = work.ca_cert {
        cmd.arg("--secret")
            .arg(format!("id={CA_SECRET_ID},src={}", ca.display()));
    }
    if let Some(import) = import {
        cmd.arg(import_flag).arg(import.to_string());
    }
    let insecure = if work.output.is_loopback() {
        ",registry.insecure=true"
    } else {
        ""
    };
    let mut output = format!("type=image,name={},push=true{insecure}", work.output);
    if let Some(llb) = work.image.llb() {
        // Raw LLB carries no image config: the exporter gets the one strata
        // sends (as a CSV field, quoted), so the pushed images are the same.
        let config = serde_json::to_value(&llb.config)
            .map(|v| v.to_string())
            .unwrap_or_default();
        let field = format!("containerimage.config={config}").replace('"', "\"\"");
        output.push_str(&format!(",\"{field}\""));
    }
    cmd.arg("--output").arg(output);
}
