//! Compiles the gRPC services in `proto/` without protoc: protox parses (the well-known types
//! included), tonic-prost-build generates.

type BuildError = Box<dyn std::error::Error>;

fn main() -> Result<(), BuildError> {
    // One line a service.
    compile("proto/csi.proto")?;
    compile("proto/provider.proto")?;
    compile("proto/kms_v2.proto")?;
    Ok(())
}

fn compile(proto: &str) -> Result<(), BuildError> {
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
