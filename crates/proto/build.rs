//! Compiles `proto/scimrelay/v1/*.proto` (the single source of truth) for every crate.
//!
//! Needs `protoc`; `make` installs it when missing (`make proto` checks it alone).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "events.proto",
        "outcomes.proto",
        "ingest.proto",
        "status.proto",
    ]
    .map(|f| root.join("scimrelay/v1").join(f));
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    if std::env::var_os("PROTOC").is_none() && which("protoc").is_none() {
        return Err(
            "protoc not found: run `make proto` (installs protobuf-compiler) or set PROTOC".into(),
        );
    }
    tonic_prost_build::configure()
        // Deterministic encoding of maps, so a state fingerprint is stable.
        .btree_map(".")
        .file_descriptor_set_path(out.join("scimrelay_descriptor.bin"))
        .compile_protos(&files, std::slice::from_ref(&root))?;
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(bin))
            .find(|p| p.is_file())
    })
}
