//! Questions about the images' `from` graph: chains and closures.

use super::{Base, Image, Spec, SpecError};

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
