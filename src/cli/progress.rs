//! `--progress`: which renderer shows a build, chosen here at the edge (the
//! library only takes a [`Progress`]).

use std::io::IsTerminal;

use strata::solve::progress::{
    Claims, JsonRenderer, PlainRenderer, Progress, Quiet, Renderer, TtyRenderer,
};

/// What `--progress` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// `tty` on a terminal, `plain` otherwise.
    Auto,
    /// A live view: one line per step, updated in place.
    Tty,
    /// One line per event, like buildctl's plain output.
    Plain,
    /// One JSON object per status update, for machines.
    Json,
    /// Nothing (errors are still reported).
    Quiet,
}

impl Progress for ProgressMode {
    /// Concurrent tty renderers share one screen; `label` prefixes lines and
    /// tags JSON objects when several images build at once.
    fn renderer(&self, label: Option<&str>) -> Box<dyn Renderer> {
        let label = label.map(str::to_owned);
        match self {
            ProgressMode::Auto if std::io::stderr().is_terminal() => {
                Box::new(TtyRenderer::new(label))
            }
            ProgressMode::Auto | ProgressMode::Plain => Box::new(PlainRenderer::new(label)),
            ProgressMode::Tty => Box::new(TtyRenderer::new(label)),
            ProgressMode::Json => Box::new(JsonRenderer::new(label)),
            ProgressMode::Quiet => Box::new(Quiet),
        }
    }

    /// The views people read show a step several images share once; JSON,
    /// for machines, keeps every solve's whole.
    fn step_claims(&self) -> Option<Claims> {
        static CLAIMS: std::sync::OnceLock<Claims> = std::sync::OnceLock::new();
        match self {
            ProgressMode::Json | ProgressMode::Quiet => None,
            _ => Some(CLAIMS.get_or_init(Claims::default).clone()),
        }
    }
}
