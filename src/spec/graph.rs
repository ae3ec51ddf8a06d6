//! Questions about the images' `from` graph: chains, closures, the
//! Dockerfile images others stand on, and the spec rebased on built ones.

use std::collections::BTreeMap;

use super::{Base, Image, Spec, SpecError};
use crate::reference::ImageRef;

impl Spec {
    /// `image`, the image it is built `from`, that one's, and so on: the one
    /// place a `from` chain is walked. It stops at a registry base or scratch,
    /// and after as many images as the spec has (so a loop, which parse
    /// rejects, still ends).
    pub fn from_chain<'a>(&'a self, image: &'a Image) -> impl Iterator<Item = &'a Image> + 'a {
        std::iter::successors(Some(image), move |current| match &current.base {
            Base::From(parent) => self.image(parent),
            Base::Image(_) | Base::Scratch | Base::Dockerfile(_) => None,
        })
        .take(self.images.len() + 1)
    }

    /// The Dockerfile images that images of `names`' closure are built `from`
    /// (built first, then used by digest).
    pub fn dockerfile_parents(&self, names: &[String]) -> Result<Vec<String>, SpecError> {
        let mut parents = Vec::new();
        for name in self.closure(names)? {
            let Some(Base::From(parent)) = self.image(&name).map(|i| &i.base) else {
                continue;
            };
            let is_dockerfile = matches!(
                self.image(parent).map(|p| &p.base),
                Some(Base::Dockerfile(_))
            );
            if is_dockerfile && !parents.contains(parent) {
                parents.push(parent.clone());
            }
        }
        Ok(parents)
    }

    /// This spec with every image built `from` one of `built` starting from
    /// that image as pushed (a registry reference pinned by digest) instead.
    pub fn rebased(&self, built: &BTreeMap<String, ImageRef>) -> Spec {
        let mut spec = self.clone();
        for image in &mut spec.images {
            if let Base::From(parent) = &image.base {
                if let Some(reference) = built.get(parent) {
                    image.base = Base::Image(reference.clone());
                }
            }
        }
        spec
    }

    /// `wanted` and the images they are built `from`, dependencies first
    /// (each once); an unknown name is an error listing the spec's images.
    pub fn closure(&self, wanted: &[String]) -> Result<Vec<String>, SpecError> {
        let mut order: Vec<String> = Vec::new();
        for name in wanted {
            self.visit(self.named(name)?, &mut order, 0);
        }
        Ok(order)
    }

    /// Adds `image` to `order` after what it stands on: its `from` parent,
    /// or the spec images its Dockerfile's `FROM`s name.
    fn visit(&self, image: &Image, order: &mut Vec<String>, depth: usize) {
        if order.contains(&image.name) || depth > self.images.len() {
            return; // done, or a loop (which parse rejects)
        }
        let parents: Vec<&str> = match &image.base {
            Base::From(parent) => vec![parent.as_str()],
            Base::Dockerfile(d) => d.spec_froms.iter().map(String::as_str).collect(),
            Base::Image(_) | Base::Scratch => Vec::new(),
        };
        for parent in parents.into_iter().filter_map(|p| self.image(p)) {
            self.visit(parent, order, depth + 1);
        }
        order.push(image.name.clone());
    }
}
