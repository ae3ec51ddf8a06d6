//! An image built `from` a Dockerfile image, solved with it in one build:
//! the frontend makes the Dockerfile image's graph on the daemon, and this
//! image's own steps are lowered on the frontend's result once it answered,
//! so the environment, working directory and user its config sets apply to
//! them as a registry base's do. Its key covers the same steps lowered on
//! scratch (the Dockerfile image's key is its parent's key).

use std::collections::BTreeMap;

use oci_spec::image::ImageConfiguration;

use super::{config, BaseImage, LlbImage, LowerOptions, Lowering};
use crate::llb::foreign::ForeignError;
use crate::llb::{source, Definition, Platform, State};
use crate::options::Frontend;
use crate::spec::{Spec, SpecError};

/// What is lowered on a Dockerfile image's frontend result.
#[derive(Debug, Clone)]
pub struct OnFrontend {
    /// The Dockerfile image's frontend, for this platform.
    pub frontend: Frontend,
    /// The image's own steps lowered on scratch: what its key covers, and
    /// what `strata llb` shows.
    pub on_scratch: LlbImage,
    /// Labels its config records besides the spec's (its content key).
    pub labels: BTreeMap<String, String>,
    /// The Dockerfile image as this build pushed it in an earlier tier (a
    /// pool's): solved on that instead, so every node's images stand on the
    /// one pushed digest and its steps run once. The key stays the same.
    pub pushed: Option<BaseImage>,
    platform: Platform,
    spec: Spec,
    /// The images below the Dockerfile image, down to this one.
    chain: Vec<String>,
    options: LowerOptions,
}

/// Why the image could not be lowered on the frontend's result.
#[derive(Debug, thiserror::Error)]
pub enum OnFrontendError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("the frontend's result cannot be built on: {0}")]
    Result(#[from] ForeignError),
}

impl OnFrontend {
    pub(super) fn new(
        frontend: Frontend,
        on_scratch: LlbImage,
        spec: &Spec,
        chain: Vec<String>,
        (platform, options): (&Platform, &LowerOptions),
    ) -> OnFrontend {
        OnFrontend {
            frontend,
            on_scratch,
            labels: BTreeMap::new(),
            pushed: None,
            platform: platform.clone(),
            spec: spec.clone(),
            chain,
            options: options.clone(),
        }
    }

    /// The image's LLB on `base` (the frontend's result) with the config
    /// the frontend answered.
    pub fn lower_on(
        &self,
        base: &Definition,
        base_config: Option<&ImageConfiguration>,
    ) -> Result<LlbImage, OnFrontendError> {
        let start = State::from_definition(base)?;
        Ok(self.lower_from(start, base_config)?)
    }

    /// The image's LLB on the Dockerfile image as pushed, if it was.
    pub fn on_pushed(&self) -> Result<Option<LlbImage>, SpecError> {
        let Some(pushed) = &self.pushed else {
            return Ok(None);
        };
        let label = format!("base {}", pushed.pinned);
        let start = source::image_for(&pushed.pinned, &self.platform, Some(&label));
        self.lower_from(start, Some(&pushed.config)).map(Some)
    }

    fn lower_from(
        &self,
        start: State,
        base_config: Option<&ImageConfiguration>,
    ) -> Result<LlbImage, SpecError> {
        let mut at = Lowering::starting_from(start, base_config, &self.options);
        let mut settings = None;
        for name in &self.chain {
            let image = self.spec.named(name)?;
            at = self.spec.lower_image(image, at, &self.options)?;
            settings = Some(&image.settings);
        }
        let mut config = match settings {
            Some(settings) => config::finish(&at, settings),
            None => base_config.cloned().unwrap_or_default(),
        };
        super::labelled(&mut config, &self.labels);
        Ok(LlbImage {
            definition: at.state.marshal(),
            state: at.state,
            config,
        })
    }
}
