//! Generates the `helloworld` example's code from `proto/helloworld.proto`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    courier_build::compile(&["proto/helloworld.proto"], &["proto"])?;
    Ok(())
}
