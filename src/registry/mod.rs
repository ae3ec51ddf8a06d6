//! A small OCI registry client: resolves image references to manifests and configs.
