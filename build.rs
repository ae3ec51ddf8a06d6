//! Compiles the wire definitions in `proto/` into Rust with a pure-Rust protobuf
//! compiler (protox), so building strata needs no `protoc` on the machine.

use std::path::{Path, PathBuf};

fn proto_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            proto_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
}

fn main() {
    let root = PathBuf::from("proto");
    let mut files = Vec::new();
    proto_files(&root, &mut files);
    println!("cargo:rerun-if-changed=proto");

    let descriptors = protox::compile(&files, [&root]).unwrap_or_else(|e| panic!("{e:?}"));
    tonic_prost_build::configure()
        // Maps encode in key order, so the same LLB always marshals to the same bytes
        // and digests (BuildKit's cache keys depend on it).
        .btree_map(".")
        .bytes(".")
        .build_server(true)
        .build_client(true)
        .include_file("wire_gen.rs")
        .compile_fds(descriptors)
        .expect("generating Rust code from proto/");
}
