//! Exec operations: a command run on a state's filesystem, with mounts.

use std::collections::{BTreeMap, BTreeSet};

use super::source::CUSTOM_NAME;
use super::state::{clean_path, Node, Output, State};
use crate::wire::pb;

/// The PATH a command gets when the state sets none (BuildKit's own default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How concurrent builds share one cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CacheSharing {
    /// Any number of writers at once (fine for content-addressed caches like pip's).
    Shared,
    /// Each concurrent writer gets its own copy.
    Private,
    /// One writer at a time; others wait (what apt's lock files need).
    Locked,
}

impl CacheSharing {
    fn to_pb(self) -> pb::CacheSharingOpt {
        match self {
            CacheSharing::Shared => pb::CacheSharingOpt::Shared,
            CacheSharing::Private => pb::CacheSharingOpt::Private,
            CacheSharing::Locked => pb::CacheSharingOpt::Locked,
        }
    }
}

/// A mount besides the root filesystem.
#[derive(Debug, Clone)]
pub enum Mount {
    /// A persistent cache directory that survives the step and is never part of a layer.
    Cache {
        target: String,
        id: String,
        sharing: CacheSharing,
        /// Mounted read-only (a reader of the cache, e.g. its export).
        readonly: bool,
    },
    /// A secret from the session's Secrets service, as a file (never in a layer).
    Secret {
        target: String,
        id: String,
        mode: u32,
        optional: bool,
    },
    /// A scratch in-memory filesystem.
    Tmpfs { target: String },
    /// A writable directory, empty or starting as `base`, whose contents
    /// become an output of the step of its own ([`Exec::mount`]), apart from
    /// the root filesystem.
    Output { target: String, base: Option<State> },
    /// Another state's filesystem (or its `selector` subpath), read-only.
    ReadOnly {
        target: String,
        source: State,
        selector: String,
    },
}

impl Mount {
    /// A cache mount at `target` shared under `id`.
    pub fn cache(target: &str, id: &str, sharing: CacheSharing) -> Mount {
        Mount::Cache {
            target: clean_path(target),
            id: id.to_owned(),
            sharing,
            readonly: false,
        }
    }

    /// The same mount, read-only (a cache mount; others are returned as they are).
    pub fn read_only(self) -> Mount {
        match self {
            Mount::Cache {
                target,
                id,
                sharing,
                ..
            } => Mount::Cache {
                target,
                id,
                sharing,
                readonly: true,
            },
            other => other,
        }
    }

    /// An empty directory at `target` that becomes an output of the step.
    pub fn output(target: &str) -> Mount {
        Mount::Output {
            target: clean_path(target),
            base: None,
        }
    }

    /// `base`'s filesystem at `target`, writable, its result an output of the
    /// step (a chain of such steps makes one layer each).
    pub fn output_on(target: &str, base: &State) -> Mount {
        Mount::Output {
            target: clean_path(target),
            base: Some(base.clone()),
        }
    }

    /// A secret file at `target`, readable by root only.
    pub fn secret(target: &str, id: &str) -> Mount {
        Mount::Secret {
            target: clean_path(target),
            id: id.to_owned(),
            mode: 0o400,
            optional: false,
        }
    }

    pub fn target(&self) -> &str {
        match self {
            Mount::Cache { target, .. }
            | Mount::Secret { target, .. }
            | Mount::Tmpfs { target }
            | Mount::Output { target, .. }
            | Mount::ReadOnly { target, .. } => target,
        }
    }
}

/// Network access of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    /// The daemon's default (its configured network mode).
    #[default]
    Default,
    Host,
    None,
}

/// A command to run, with its mounts and step-only settings.
#[derive(Debug, Clone, Default)]
pub struct Run {
    args: Vec<String>,
    mounts: Vec<Mount>,
    env: Vec<(String, String)>,
    secret_env: Vec<(String, String)>,
    name: Option<String>,
    network: Network,
    ignore_cache: bool,
}

impl Run {
    /// `/bin/sh -c SCRIPT`.
    pub fn shell(script: &str) -> Run {
        Run::args(["/bin/sh", "-c", script])
    }

    /// What it runs, as an argument vector.
    pub fn command(&self) -> &[String] {
        &self.args
    }

    /// A command as an argument vector (no shell).
    pub fn args<I, S>(args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Run {
            args: args.into_iter().map(Into::into).collect(),
            ..Run::default()
        }
    }

    pub fn mount(mut self, mount: Mount) -> Run {
        self.mounts.push(mount);
        self
    }

    pub fn mounts(mut self, mounts: impl IntoIterator<Item = Mount>) -> Run {
        self.mounts.extend(mounts);
        self
    }

    /// Its mounts besides the root filesystem, as added.
    pub fn get_mounts(&self) -> &[Mount] {
        &self.mounts
    }

    /// An environment variable for this step only (not inherited by later steps).
    pub fn env(mut self, key: &str, value: &str) -> Run {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Exposes secret `id` as environment variable `name` for this step only.
    pub fn secret_env(mut self, name: &str, id: &str) -> Run {
        self.secret_env.push((name.to_owned(), id.to_owned()));
        self
    }

    /// The step's name in progress output.
    pub fn named(mut self, name: &str) -> Run {
        self.name = Some(name.to_owned());
        self
    }

    pub fn network(mut self, network: Network) -> Run {
        self.network = network;
        self
    }

    /// Always re-run this step, whatever the cache holds.
    pub fn ignore_cache(mut self, yes: bool) -> Run {
        self.ignore_cache = yes;
        self
    }
}

/// The index of `state`'s output among `inputs`, added if new; -1 for scratch.
fn input_index(state: &State, inputs: &mut Vec<Output>) -> i64 {
    let Some(out) = &state.output else {
        return -1;
    };
    let same = |o: &Output| std::sync::Arc::ptr_eq(&o.node, &out.node) && o.index == out.index;
    if let Some(i) = inputs.iter().position(same) {
        return i as i64;
    }
    inputs.push(out.clone());
    (inputs.len() - 1) as i64
}

impl Mount {
    /// The wire mount, noting the capabilities it needs in `caps` and its
    /// source among `inputs`; an output mount takes the next of `outputs`.
    fn to_pb(
        &self,
        caps: &mut BTreeSet<&'static str>,
        inputs: &mut Vec<Output>,
        outputs: &mut i64,
    ) -> pb::Mount {
        let blank = |target: &str, kind: pb::MountType| pb::Mount {
            input: -1,
            dest: target.to_owned(),
            output: -1,
            mount_type: kind as i32,
            ..Default::default()
        };
        match self {
            Mount::Cache {
                target,
                id,
                sharing,
                readonly,
            } => {
                caps.extend(["exec.mount.cache", "exec.mount.cache.sharing"]);
                pb::Mount {
                    cache_opt: Some(pb::CacheOpt {
                        id: id.clone(),
                        sharing: sharing.to_pb() as i32,
                    }),
                    readonly: *readonly,
                    ..blank(target, pb::MountType::Cache)
                }
            }
            Mount::Output { target, base } => {
                caps.insert("exec.mount.bind");
                *outputs += 1;
                pb::Mount {
                    input: base.as_ref().map_or(-1, |b| input_index(b, inputs)),
                    output: *outputs,
                    ..blank(target, pb::MountType::Bind)
                }
            }
            Mount::Secret {
                target,
                id,
                mode,
                optional,
            } => {
                caps.insert("exec.mount.secret");
                pb::Mount {
                    secret_opt: Some(pb::SecretOpt {
                        id: id.clone(),
                        uid: 0,
                        gid: 0,
                        mode: *mode,
                        optional: *optional,
                    }),
                    ..blank(target, pb::MountType::Secret)
                }
            }
            Mount::Tmpfs { target } => {
                caps.insert("exec.mount.tmpfs");
                blank(target, pb::MountType::Tmpfs)
            }
            Mount::ReadOnly {
                target,
                source,
                selector,
            } => {
                caps.insert("exec.mount.bind");
                if !selector.is_empty() {
                    caps.insert("exec.mount.selector");
                }
                pb::Mount {
                    input: input_index(source, inputs),
                    selector: selector.clone(),
                    readonly: true,
                    ..blank(target, pb::MountType::Bind)
                }
            }
        }
    }
}

/// A command's results: its root filesystem and its output mounts.
#[derive(Debug, Clone)]
pub struct Exec {
    root: State,
    mounts: Vec<(String, State)>,
}

impl Exec {
    /// The changed root filesystem.
    pub fn root(&self) -> State {
        self.root.clone()
    }

    /// What the command left in the output mount at `target` ([`Mount::output`]).
    pub fn mount(&self, target: &str) -> Option<State> {
        let target = clean_path(target);
        self.mounts
            .iter()
            .find(|(t, _)| *t == target)
            .map(|(_, s)| s.clone())
    }
}

impl State {
    /// Runs a command on this state's filesystem; the result is the changed root.
    pub fn run(&self, run: Run) -> State {
        self.exec(run).root()
    }

    /// Runs a command on this state's filesystem: its root and output mounts.
    pub fn exec(&self, run: Run) -> Exec {
        let mut inputs: Vec<Output> = Vec::new();
        let mut caps: BTreeSet<&'static str> = ["exec.meta.base"].into_iter().collect();
        let mut mounts = vec![pb::Mount {
            input: input_index(self, &mut inputs),
            dest: "/".into(),
            output: 0,
            ..Default::default()
        }];
        let mut extra: Vec<&Mount> = run.mounts.iter().collect();
        extra.sort_by(|a, b| a.target().cmp(b.target()));
        let mut outputs = 0;
        let mut output_targets = Vec::new();
        for m in extra {
            let wire = m.to_pb(&mut caps, &mut inputs, &mut outputs);
            if wire.output > 0 {
                output_targets.push((m.target().to_owned(), wire.output));
            }
            mounts.push(wire);
        }

        let secretenv = secret_env(&run);
        if !secretenv.is_empty() {
            caps.insert("exec.secret.env");
        }
        let network = net_mode(run.network);
        if network != pb::NetMode::Unset {
            caps.insert("exec.meta.network");
        }
        let exec = pb::ExecOp {
            meta: Some(pb::Meta {
                args: run.args.clone(),
                env: self.env_with(&run.env),
                cwd: self.meta.cwd.clone(),
                user: self.meta.user.clone(),
                ..Default::default()
            }),
            mounts,
            network: network as i32,
            secretenv,
            ..Default::default()
        };
        let mut description = BTreeMap::new();
        if let Some(name) = &run.name {
            description.insert(CUSTOM_NAME.to_owned(), name.clone());
            caps.insert("meta.description");
        }
        if run.ignore_cache {
            caps.insert("meta.ignorecache");
        }
        let node = std::sync::Arc::new(Node {
            op: pb::op::Op::Exec(exec),
            inputs,
            platform: self.meta.platform.clone(),
            description,
            caps,
            ignore_cache: run.ignore_cache,
            foreign: None,
        });
        let at = |index| self.at_output(node.clone(), index);
        Exec {
            root: at(0),
            mounts: output_targets
                .into_iter()
                .map(|(target, index)| (target, at(index)))
                .collect(),
        }
    }

    /// The command's environment: this state's, with the run's variables
    /// replacing or adding to it, and BuildKit's default PATH when none is set.
    fn env_with(&self, extra: &[(String, String)]) -> Vec<String> {
        let mut env: Vec<(String, String)> = self.meta.env.clone();
        for (k, v) in extra {
            match env.iter_mut().find(|(ek, _)| ek == k) {
                Some(slot) => slot.1 = v.clone(),
                None => env.push((k.clone(), v.clone())),
            }
        }
        if !env.iter().any(|(k, _)| k == "PATH") {
            env.insert(0, ("PATH".into(), DEFAULT_PATH.into()));
        }
        env.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }
}

/// Secrets the command sees as environment variables.
fn secret_env(run: &Run) -> Vec<pb::SecretEnv> {
    run.secret_env
        .iter()
        .map(|(name, id)| pb::SecretEnv {
            id: id.clone(),
            name: name.clone(),
            optional: false,
        })
        .collect()
}

fn net_mode(network: Network) -> pb::NetMode {
    match network {
        Network::Default => pb::NetMode::Unset,
        Network::Host => pb::NetMode::Host,
        Network::None => pb::NetMode::None,
    }
}
