//! Generates the prost types and their proto3 JSON mapping from `proto/` without a system `protoc`.
//!
//! The well-known types (`Struct`, `Value`, `Timestamp`) are generated here too, with `Struct`'s
//! fields in a `BTreeMap`: encodings must be deterministic so that a view rebuilt from the log is
//! byte-for-byte equal to the live one. Their JSON mapping is written by hand in `src/wkt.rs`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = ["commands", "events", "views", "queries", "tasks"]
        .map(|name| root.join(format!("orca/v1/{name}.proto")));
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let fds = protox::compile(&files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out.join("orca_descriptor.bin");
    std::fs::write(&descriptor_path, prost::Message::encode_to_vec(&fds))?;

    let mut config = prost_build::Config::new();
    config
        .compile_well_known_types()
        .btree_map([".google.protobuf.Struct.fields"])
        .file_descriptor_set_path(&descriptor_path);
    config.compile_fds(fds)?;

    let descriptors = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .build(&[".orca"])?;
    Ok(())
}
