//! File operations: mkdir, mkfile, copy and rm, chained into one op.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::source::CUSTOM_NAME;
use super::state::{clean_path, Node, Output, State};
use crate::wire::pb;

/// A copy from another state into this one, with Dockerfile `COPY` semantics:
/// a directory's contents are copied, wildcards allowed, destination created.
#[derive(Debug, Clone)]
pub struct Copy {
    pub source: State,
    pub src: String,
    pub dest: String,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// `None`: keep the source's permission bits.
    pub mode: Option<u32>,
    /// `uid:gid` to own the copied files, e.g. for a non-root image user.
    pub owner: Option<(u32, u32)>,
}

impl Copy {
    pub fn new(source: &State, src: &str, dest: &str) -> Copy {
        Copy {
            source: source.clone(),
            src: src.to_owned(),
            dest: dest.to_owned(),
            include: Vec::new(),
            exclude: Vec::new(),
            mode: None,
            owner: None,
        }
    }

    pub fn exclude(mut self, patterns: &[String]) -> Copy {
        self.exclude.extend(patterns.iter().cloned());
        self
    }
}

/// One file action; several run in order as one op.
#[derive(Debug, Clone)]
pub enum FileAction {
    Mkdir {
        path: String,
        mode: u32,
        parents: bool,
    },
    Mkfile {
        path: String,
        mode: u32,
        data: Vec<u8>,
    },
    Rm {
        path: String,
        allow_not_found: bool,
    },
    Copy(Box<Copy>),
}

impl FileAction {
    pub fn mkdir(path: &str, mode: u32) -> FileAction {
        FileAction::Mkdir {
            path: path.to_owned(),
            mode,
            parents: true,
        }
    }

    pub fn mkfile(path: &str, mode: u32, data: impl Into<Vec<u8>>) -> FileAction {
        FileAction::Mkfile {
            path: path.to_owned(),
            mode,
            data: data.into(),
        }
    }

    pub fn rm(path: &str) -> FileAction {
        FileAction::Rm {
            path: path.to_owned(),
            allow_not_found: true,
        }
    }

    pub fn copy(copy: Copy) -> FileAction {
        FileAction::Copy(Box::new(copy))
    }

    /// A copy with include or exclude patterns (a capability of its own).
    fn has_patterns(&self) -> bool {
        matches!(self, FileAction::Copy(c) if !c.include.is_empty() || !c.exclude.is_empty())
    }

    /// The action as BuildKit reads it, relative paths resolved by `resolve`
    /// (against the state's working directory).
    fn to_wire(&self, resolve: &dyn Fn(&str) -> String) -> pb::file_action::Action {
        use pb::file_action::Action;
        match self {
            FileAction::Mkdir {
                path,
                mode,
                parents,
            } => Action::Mkdir(pb::FileActionMkDir {
                path: resolve(path),
                mode: *mode as i32,
                make_parents: *parents,
                owner: None,
                timestamp: UNSET,
            }),
            FileAction::Mkfile { path, mode, data } => Action::Mkfile(pb::FileActionMkFile {
                path: resolve(path),
                mode: *mode as i32,
                data: data.clone().into(),
                owner: None,
                timestamp: UNSET,
            }),
            FileAction::Rm {
                path,
                allow_not_found,
            } => Action::Rm(pb::FileActionRm {
                path: resolve(path),
                allow_not_found: *allow_not_found,
                allow_wildcard: false,
            }),
            FileAction::Copy(c) => Action::Copy(pb::FileActionCopy {
                src: clean_path(&c.src),
                dest: resolve(&c.dest),
                owner: owner_opt(c.owner),
                mode: c.mode.map(|m| m as i32).unwrap_or(UNSET as i32),
                follow_symlink: true,
                dir_copy_contents: true,
                create_dest_path: true,
                allow_wildcard: true,
                allow_empty_wildcard: true,
                timestamp: UNSET,
                include_patterns: c.include.clone(),
                exclude_patterns: c.exclude.clone(),
                ..Default::default()
            }),
        }
    }
}

/// The index of `out` among `inputs`, added at the end if it is not there.
fn input_index(inputs: &mut Vec<Output>, out: &Output) -> i64 {
    let found = inputs
        .iter()
        .position(|o| Arc::ptr_eq(&o.node, &out.node) && o.index == out.index);
    let i = found.unwrap_or_else(|| {
        inputs.push(out.clone());
        inputs.len() - 1
    });
    i as i64
}

/// Timestamps and modes BuildKit reads as "not set".
const UNSET: i64 = -1;

fn owner_opt(owner: Option<(u32, u32)>) -> Option<pb::ChownOpt> {
    owner.map(|(uid, gid)| pb::ChownOpt {
        user: Some(pb::UserOpt {
            user: Some(pb::user_opt::User::ById(uid)),
        }),
        group: Some(pb::UserOpt {
            user: Some(pb::user_opt::User::ById(gid)),
        }),
    })
}

impl State {
    /// Applies `actions` in order to this state's filesystem, as one op.
    pub fn file(&self, actions: Vec<FileAction>, name: Option<&str>) -> State {
        let mut inputs: Vec<Output> = Vec::new();
        let mut caps: BTreeSet<&'static str> = ["file.base"].into_iter().collect();
        let base = match &self.output {
            Some(out) => {
                inputs.push(out.clone());
                0
            }
            None => UNSET,
        };
        let resolve = |p: &str| {
            if p.starts_with('/') {
                clean_path(p)
            } else {
                clean_path(&format!("{}/{p}", self.meta.cwd))
            }
        };
        // Sources of copies become inputs after the base; action results are
        // addressed after all inputs, so the indexes are fixed once inputs are.
        let secondary: Vec<i64> = actions
            .iter()
            .map(|action| match action {
                FileAction::Copy(c) => match &c.source.output {
                    Some(out) => input_index(&mut inputs, out),
                    None => UNSET,
                },
                _ => UNSET,
            })
            .collect();
        if actions.iter().any(FileAction::has_patterns) {
            caps.insert("file.copy.includeexcludepatterns");
        }
        let n_inputs = inputs.len() as i64;
        let last = actions.len().saturating_sub(1);
        let pb_actions = actions
            .iter()
            .enumerate()
            .map(|(i, action)| pb::FileAction {
                input: if i == 0 {
                    base
                } else {
                    n_inputs + i as i64 - 1
                },
                secondary_input: secondary[i],
                output: if i == last { 0 } else { UNSET },
                action: Some(action.to_wire(&resolve)),
            })
            .collect();
        let mut description = BTreeMap::new();
        if let Some(name) = name {
            description.insert(CUSTOM_NAME.to_owned(), name.to_owned());
            caps.insert("meta.description");
        }
        self.with_output(
            Node {
                op: pb::op::Op::File(pb::FileOp {
                    actions: pb_actions,
                }),
                inputs,
                platform: self.meta.platform.clone(),
                description,
                caps,
                ignore_cache: false,
                foreign: None,
            },
            0,
        )
    }
}
