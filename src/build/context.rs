//! One context upload per directory: Dockerfile images of a build that
//! share a context directory (compose services with `context: .`) are
//! solved one after another. BuildKit reuses an uploaded directory only
//! once the build that uploaded it has let go of it, so images solving at
//! the same moment would each send it whole; in turn, each sends only what
//! changed (nothing). Stages they share are cached for the later ones.

use std::collections::BTreeMap;
use std::path::PathBuf;

use tokio::sync::watch;

use crate::spec::LoweredImage;

/// An image's place in the line of its context directory.
#[derive(Default)]
pub(super) struct Gate {
    /// Ends when the image before it in line is done.
    before: Option<watch::Receiver<()>>,
    /// Held while this image builds; dropping it lets the next one go.
    _building: Option<watch::Sender<()>>,
}

/// A gate for each image, in order.
pub(super) fn gates<'a>(images: impl Iterator<Item = &'a LoweredImage>) -> Vec<Gate> {
    let mut last: BTreeMap<PathBuf, watch::Receiver<()>> = BTreeMap::new();
    images
        .map(|image| {
            let context = image
                .frontend()
                .and(image.local_dirs.get("context"))
                .map(|dir| dir.path.clone());
            let Some(dir) = context else {
                return Gate::default();
            };
            let (tx, rx) = watch::channel(());
            Gate {
                before: last.insert(dir, rx),
                _building: Some(tx),
            }
        })
        .collect()
}

impl Gate {
    /// Waits until the image before this one in line is done (built, found
    /// built, or failed).
    pub async fn pass(&mut self) {
        if let Some(before) = &mut self.before {
            while before.changed().await.is_ok() {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn images_of_one_context_go_in_turn() {
        let (tx, rx) = watch::channel(());
        let mut second = Gate {
            before: Some(rx),
            _building: None,
        };
        let waiting = tokio::spawn(async move { second.pass().await });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "waits while the first builds");
        drop(tx);
        waiting.await.unwrap();
        Gate::default().pass().await;
    }
}
