//! Compiles `proto/earmark/v1/*.proto` with protox (pure Rust: no system
//! `protoc`) into prost messages (always: fingerprint files use them) plus the
//! tonic client and server stubs (with the `grpc` feature), and writes the
//! encoded file descriptor set that server reflection serves.

use std::error::Error;
use std::path::{Path, PathBuf};

/// Root of the proto include tree.
const PROTO_ROOT: &str = "proto";
/// The API's proto files, relative to [`PROTO_ROOT`].
const PROTO_FILES: &[&str] = &[
    "earmark/v1/common.proto",
    "earmark/v1/screening.proto",
    "earmark/v1/registry.proto",
];
/// File name (in OUT_DIR) of the descriptor set, read by `include_file_descriptor_set!`.
const DESCRIPTOR_FILE: &str = "earmark_v1_descriptor.bin";

fn main() -> Result<(), Box<dyn Error>> {
    let files: Vec<PathBuf> = PROTO_FILES
        .iter()
        .map(|f| Path::new(PROTO_ROOT).join(f))
        .collect();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    println!("cargo:rerun-if-changed=build.rs");
    let fds = protox::compile(&files, [PROTO_ROOT])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    {
        use protox::prost::Message as _;
        std::fs::write(out.join(DESCRIPTOR_FILE), fds.encode_to_vec())?;
    }
    compile(fds)
}

#[cfg(feature = "grpc")]
fn compile(fds: prost_types::FileDescriptorSet) -> Result<(), Box<dyn Error>> {
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;
    Ok(())
}

#[cfg(not(feature = "grpc"))]
fn compile(fds: prost_types::FileDescriptorSet) -> Result<(), Box<dyn Error>> {
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
