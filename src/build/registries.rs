//! The registries one build uses: the only hosts the session's Auth service
//! answers for (a daemon may otherwise ask for the credentials of every
//! registry in config.json, and have a credential helper run for any name).

use std::collections::BTreeSet;

use crate::options::{CacheExport, CacheImport, Output};
use crate::spec::{Base, BuildPlan};

/// Every registry host `plan` reads from or writes to: the bases and
/// Dockerfile `FROM`s of its images (and of what they are built `from`),
/// push targets and image outputs, SBOM generators, and registry caches (the pool cache and
/// cache-mount artifacts among them, as they live beside the caches).
pub fn of_plan(plan: &BuildPlan) -> BTreeSet<String> {
    let mut hosts = BTreeSet::new();
    let spec = &plan.spec;
    let names = plan.images();
    for image in spec
        .closure(&names)
        .unwrap_or(names)
        .iter()
        .filter_map(|n| spec.image(n))
    {
        match &image.base {
            Base::Image(reference) => {
                hosts.insert(reference.registry.clone());
            }
            Base::Dockerfile(d) => {
                hosts.extend(d.froms.iter().map(|(_, r)| r.registry.clone()));
                hosts.extend(d.syntax.iter().map(|r| r.registry.clone()));
            }
            Base::From(_) | Base::Scratch => {}
        }
    }
    for job in &plan.jobs {
        hosts.extend(job.push.iter().chain(&job.name).map(|r| r.registry.clone()));
        // The daemon pulls the SBOM generator through the session too.
        hosts.extend(job.attest.sbom.iter().map(|s| s.generator.registry.clone()));
        for output in &job.outputs {
            match output {
                Output::Image { name, .. } => {
                    hosts.insert(name.registry.clone());
                }
                Output::Moby { names } | Output::DockerStream { names, .. } => {
                    hosts.extend(names.iter().map(|r| r.registry.clone()));
                }
                _ => {}
            }
        }
        for export in &job.cache_exports {
            if let CacheExport::Registry { reference, .. } = export {
                hosts.insert(reference.registry.clone());
            }
        }
        for import in &job.cache_imports {
            if let CacheImport::Registry { reference, .. } = import {
                hosts.insert(reference.registry.clone());
            }
        }
    }
    hosts
}
