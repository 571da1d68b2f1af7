//! Generate the echo service's stubs from `proto/echo.proto`, twice: for
//! tonic, and for courier's gRPC mode (courier-build, into its own
//! directory, as both name their module `bench`). protox parses the .proto
//! in Rust, so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/echo.proto");
    let descriptors = protox::compile(["proto/echo.proto"], ["proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(descriptors)?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("courier");
    courier_build::Builder::new().out_dir(out_dir).compile(&["proto/echo.proto"], &["proto"])?;
    Ok(())
}
