//! What the benchmarks share: sizes from the environment and a test tree.

use std::path::Path;

/// `name`'s value as a number, else `default`.
pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `files` files of equal size in directories of 100, `bytes` in all.
pub fn make_tree(dir: &Path, files: usize, bytes: usize) {
    let each = bytes / files.max(1);
    let mut block = vec![0u8; each];
    for i in 0..files {
        let sub = dir.join(format!("d{:04}", i / 100));
        if i % 100 == 0 {
            std::fs::create_dir_all(&sub).unwrap();
        }
        // Distinct content per file, so nothing dedupes.
        for (j, b) in block.iter_mut().enumerate() {
            *b = (i.wrapping_mul(31) ^ j) as u8;
        }
        std::fs::write(sub.join(format!("f{i:06}.bin")), &block).unwrap();
    }
}
