//! Generates the interop service from `proto/interop.proto`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    courier_build::compile(&["proto/interop.proto"], &["proto"])?;
    Ok(())
}
