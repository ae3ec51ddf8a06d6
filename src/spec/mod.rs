//! strata.toml: the spec of images made of base, toolchain and overlay layers.
