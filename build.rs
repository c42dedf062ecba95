//! Compiles the gRPC protocols in `proto/` into Rust, without `protoc`: protox parses the
//! files (the well-known types included), tonic-prost-build writes the messages and services.

/// The protocol files, relative to `proto/`. Another protocol is one more entry.
const PROTOS: &[&str] = &["csi.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files: Vec<String> = PROTOS.iter().map(|name| format!("proto/{name}")).collect();
    for file in &files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(&files, ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
