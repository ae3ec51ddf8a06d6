//! Where each image of a build runs on a pool: rendezvous (highest random
//! weight) hashing with bounded load.
//!
//! An image's key is its stable identity (the spec, the image's name, its
//! platform), never its content: an edit must not move an image away from
//! the node holding its cache. Each node scores every key by a hash of the
//! pair, weighted; an image goes to the best-scoring node that is healthy,
//! fits its platform and has room: at most `ceil(factor × images × weight /
//! total weight)` images, so no node takes more than `factor` times its share
//! (buildx's sticky hash of the context path put a monorepo's every image on
//! one node). Within that bound an image prefers its `from` parent's node,
//! whose cache holds the parent's layers. The same keys in the same order
//! always give the same placement.

use sha2::{Digest, Sha256};

/// The load bound: a node takes at most this many times its share.
pub const DEFAULT_FACTOR: f64 = 1.25;

/// A node as placement sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    /// Its stable name (what the hash is of, with the key).
    pub name: String,
    pub weight: f64,
    pub healthy: bool,
}

/// An image to place.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The stable identity, e.g. `strata.toml#codex@linux/amd64`.
    pub key: String,
    /// The index (among the items) of the image it is built `from`, placed
    /// before it.
    pub parent: Option<usize>,
    /// Which slots can build its platform (empty: all).
    pub fits: Vec<bool>,
}

/// How a pool places images: strata's way, or the two it is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Placement {
    /// Rendezvous hashing with bounded load (see the module docs).
    #[default]
    Rendezvous,
    /// Every image by a hash of the context path, as buildx's kubernetes
    /// driver's sticky mode: one spec, one node.
    ContextPath,
    /// A random healthy node per image and build.
    Random,
}

impl Placement {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Placement::Rendezvous => "rendezvous",
            Placement::ContextPath => "context-path",
            Placement::Random => "random",
        }
    }
}

/// Why an image could not be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaceError {
    #[error("no healthy node of the pool can build {key}")]
    NoNode { key: String },
}

/// A score in (0, ∞): larger wins; `-weight / ln(u)` with u the pair's hash in (0, 1).
fn score(key: &str, slot: &Slot) -> f64 {
    let mut h = Sha256::new();
    h.update(key.as_bytes());
    h.update([0]);
    h.update(slot.name.as_bytes());
    let bytes: [u8; 8] = h.finalize()[..8].try_into().expect("8 bytes");
    let u = (u64::from_be_bytes(bytes) as f64 + 1.0) / (u64::MAX as f64 + 2.0);
    -slot.weight.max(f64::MIN_POSITIVE) / u.ln()
}

/// The slots in `key`'s order of preference (best first), all of them.
pub fn ranked(key: &str, slots: &[Slot]) -> Vec<usize> {
    let mut order: Vec<(usize, f64)> = slots
        .iter()
        .enumerate()
        .map(|(i, s)| (i, score(key, s)))
        .collect();
    order.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    order.into_iter().map(|(i, _)| i).collect()
}

/// How many images each slot may take.
fn capacities(slots: &[Slot], items: usize, factor: f64) -> Vec<usize> {
    let total: f64 = slots.iter().filter(|s| s.healthy).map(|s| s.weight).sum();
    slots
        .iter()
        .map(|s| match s.healthy && total > 0.0 {
            true => ((factor * items as f64 * s.weight / total).ceil() as usize).max(1),
            false => 0,
        })
        .collect()
}

/// The slot of each item by `how`; `context` is the path the context-path
/// placement hashes.
pub fn place_by(
    how: Placement,
    items: &[Item],
    slots: &[Slot],
    context: &str,
) -> Result<Vec<usize>, PlaceError> {
    let healthy: Vec<usize> = (0..slots.len()).filter(|&i| slots[i].healthy).collect();
    let none = || PlaceError::NoNode {
        key: items.first().map(|i| i.key.clone()).unwrap_or_default(),
    };
    match how {
        Placement::Rendezvous => place(items, slots, DEFAULT_FACTOR),
        Placement::ContextPath => {
            let digest = Sha256::digest(context.as_bytes());
            let n = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
            let at = *healthy
                .get((n % healthy.len().max(1) as u64) as usize)
                .ok_or_else(none)?;
            Ok(vec![at; items.len()])
        }
        Placement::Random => {
            let seed = crate::ids::random_id();
            items
                .iter()
                .map(|item| {
                    let digest = Sha256::digest(format!("{seed}{}", item.key).as_bytes());
                    let n = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
                    healthy
                        .get((n % healthy.len().max(1) as u64) as usize)
                        .copied()
                        .ok_or_else(none)
                })
                .collect()
        }
    }
}

/// The slot of each item, in the items' order.
pub fn place(items: &[Item], slots: &[Slot], factor: f64) -> Result<Vec<usize>, PlaceError> {
    let capacity = capacities(slots, items.len(), factor);
    let mut load = vec![0usize; slots.len()];
    let mut placed: Vec<usize> = Vec::with_capacity(items.len());
    for item in items {
        let usable = |i: usize| {
            slots[i].healthy && item.fits.get(i).copied().unwrap_or(true) && load[i] < capacity[i]
        };
        let parent = item.parent.and_then(|p| placed.get(p).copied());
        let choice = parent
            .filter(|&p| usable(p))
            .or_else(|| ranked(&item.key, slots).into_iter().find(|&i| usable(i)))
            // Every fitting node full (a platform only some nodes build):
            // the best-ranked one that fits, over the bound.
            .or_else(|| {
                ranked(&item.key, slots)
                    .into_iter()
                    .find(|&i| slots[i].healthy && item.fits.get(i).copied().unwrap_or(true))
            })
            .ok_or_else(|| PlaceError::NoNode {
                key: item.key.clone(),
            })?;
        load[choice] += 1;
        placed.push(choice);
    }
    Ok(placed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(n: usize) -> Vec<Slot> {
        (0..n)
            .map(|i| Slot {
                name: format!("node{i}"),
                weight: 1.0,
                healthy: true,
            })
            .collect()
    }

    fn items(n: usize) -> Vec<Item> {
        (0..n)
            .map(|i| Item {
                key: format!("spec#image{i}"),
                parent: None,
                fits: Vec::new(),
            })
            .collect()
    }

    #[test]
    fn load_stays_within_the_bound_and_placement_is_stable() {
        let s = slots(3);
        let it = items(12);
        let placed = place(&it, &s, DEFAULT_FACTOR).unwrap();
        let mut load = [0; 3];
        for &p in &placed {
            load[p] += 1;
        }
        let bound = (1.25f64 * 12.0 / 3.0).ceil() as usize;
        assert!(load.iter().all(|&l| l <= bound), "{load:?}");
        assert_eq!(
            placed,
            place(&it, &s, DEFAULT_FACTOR).unwrap(),
            "same keys, same nodes"
        );
    }

    #[test]
    fn a_down_node_moves_only_its_own_images() {
        let mut s = slots(3);
        let it = items(9);
        let before = place(&it, &s, 10.0).unwrap();
        s[1].healthy = false;
        let after = place(&it, &s, 10.0).unwrap();
        for (b, a) in before.iter().zip(&after) {
            if *b != 1 {
                assert_eq!(a, b, "an image of a live node stays");
            } else {
                assert_ne!(*a, 1);
            }
        }
    }

    #[test]
    fn children_follow_their_parent_within_the_bound() {
        let s = slots(3);
        let mut it = items(6);
        for child in &mut it[1..3] {
            child.parent = Some(0);
        }
        let placed = place(&it, &s, DEFAULT_FACTOR).unwrap();
        assert_eq!(placed[1], placed[0]);
        assert_eq!(placed[2], placed[0]);
    }

    #[test]
    fn platforms_and_health_limit_the_choice() {
        let mut s = slots(2);
        let mut it = items(1);
        it[0].fits = vec![false, true];
        assert_eq!(place(&it, &s, DEFAULT_FACTOR).unwrap(), vec![1]);
        s[1].healthy = false;
        assert!(place(&it, &s, DEFAULT_FACTOR).is_err());
    }

    #[test]
    fn weights_shift_the_share() {
        let mut s = slots(2);
        s[0].weight = 3.0;
        let it = items(400);
        let placed = place(&it, &s, 10.0).unwrap();
        let heavy = placed.iter().filter(|&&p| p == 0).count();
        assert!(
            (260..=340).contains(&heavy),
            "{heavy} of 400 on the weight-3 node"
        );
    }
}
