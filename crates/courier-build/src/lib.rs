//! # courier-build
//!
//! Turn `.proto` files into courier services, from `build.rs`, with no
//! system `protoc`: [protox](https://docs.rs/protox) parses the files and
//! [prost-build](https://docs.rs/prost-build) generates the messages;
//! courier-build adds, for every `service`, a trait to implement, a server
//! stub and async and blocking clients.
//!
//! ```no_run
//! // build.rs
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     courier_build::compile(&["proto/helloworld.proto"], &["proto"])?;
//!     Ok(())
//! }
//! ```
//!
//! ```ignore
//! // src/main.rs: one module per package (here `helloworld`).
//! courier::include_protos!();
//! use helloworld::{Greeter, GreeterServer, GreeterClient, HelloRequest, HelloReply};
//!
//! struct Hello;
//! impl Greeter for Hello {
//!     async fn say_hello(&self, _cx: &courier::Context, request: HelloRequest)
//!         -> Result<HelloReply, courier::Status> {
//!         Ok(HelloReply { message: format!("Hello {}", request.name) })
//!     }
//! }
//! ```
//!
//! The crate using the generated code depends on `courier` only: messages
//! refer to prost and serde through it. Every message also derives serde,
//! so the same service answers protobuf (native protocol and gRPC) and JSON
//! (JSON-RPC, HTTP/JSON, `application/grpc+json`); see
//! `courier::codec::protobuf` for what that JSON looks like.
//!
//! All four kinds of method are generated: unary, server-streaming,
//! client-streaming and bidirectional (`stream` on either side). A
//! streaming handler takes a `courier::Streaming<Request>` and returns a
//! `courier::ResponseStream<Reply>`, as the side streams; a client's
//! streaming method takes any `Stream` of requests and returns a
//! `courier::Streaming<Reply>`, whose items are `Result<Reply, Status>`.
//! They run natively and over gRPC (and are described as streaming to gRPC
//! reflection); the blocking client has the unary methods only.
//!
//! ## Layout
//!
//! - this file: [`compile`] and [`Builder`], from `.proto` paths to files
//!   in `OUT_DIR`.
//! - `generate`: the courier code for one `service`.
//!
//! ## Feature flags
//!
//! None.

// A build script talks to cargo on standard output (`cargo:rerun-if-changed`,
// `cargo:warning`).
#![allow(clippy::print_stdout)]

mod generate;

use std::path::{Path, PathBuf};

use prost::Message as _;

/// The file in the output directory that includes every generated package
/// as nested modules; `courier::include_protos!()` includes it.
pub const INCLUDE_FILE: &str = "courier_protos.rs";
/// The encoded `FileDescriptorSet` of everything compiled, for reflection.
pub const DESCRIPTOR_FILE: &str = "courier_descriptor.bin";

/// Why generation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A `.proto` file does not parse or does not check (with the file,
    /// line and column).
    #[error("{0}")]
    Proto(#[from] protox::Error),
    /// Writing the generated code failed.
    #[error("writing generated code: {0}")]
    Io(#[from] std::io::Error),
    /// `OUT_DIR` is not set (not running from a build script) and no
    /// output directory was given.
    #[error("OUT_DIR is not set: call courier-build from build.rs, or set an output directory")]
    NoOutDir,
}

/// Compile `protos` (found in `includes`) into `OUT_DIR`, with the
/// defaults. See [`Builder`] for the options.
pub fn compile(protos: &[impl AsRef<Path>], includes: &[impl AsRef<Path>]) -> Result<(), BuildError> {
    Builder::new().compile(protos, includes)
}

/// Configures code generation.
#[derive(Debug, Default, Clone)]
#[must_use = "a builder does nothing until compile is called"]
pub struct Builder {
    out_dir: Option<PathBuf>,
    emit_rerun: bool,
}

impl Builder {
    /// The defaults: output to `OUT_DIR`, with `cargo:rerun-if-changed`
    /// lines for the `.proto` files read.
    pub fn new() -> Builder {
        Builder { out_dir: None, emit_rerun: true }
    }

    /// Write the generated files to `dir` instead of `OUT_DIR`.
    pub fn out_dir(mut self, dir: impl Into<PathBuf>) -> Builder {
        self.out_dir = Some(dir.into());
        self
    }

    /// Whether to print `cargo:rerun-if-changed` for each `.proto` file
    /// (default on; off when not run by cargo).
    pub fn emit_rerun_if_changed(mut self, emit: bool) -> Builder {
        self.emit_rerun = emit;
        self
    }

    /// Parse `protos`, resolving imports in `includes` (plus protobuf's own
    /// well-known types), and write one module per package, an
    /// [`INCLUDE_FILE`] nesting them, and a [`DESCRIPTOR_FILE`].
    pub fn compile(
        self,
        protos: &[impl AsRef<Path>],
        includes: &[impl AsRef<Path>],
    ) -> Result<(), BuildError> {
        let out_dir = match self.out_dir {
            Some(dir) => dir,
            None => std::env::var_os("OUT_DIR").map(PathBuf::from).ok_or(BuildError::NoOutDir)?,
        };
        std::fs::create_dir_all(&out_dir)?;
        let files = protox::compile(protos, includes)?;
        if self.emit_rerun {
            for proto in protos {
                println!("cargo:rerun-if-changed={}", proto.as_ref().display());
            }
            for include in includes {
                println!("cargo:rerun-if-changed={}", include.as_ref().display());
            }
        }
        let descriptor_path = out_dir.join(DESCRIPTOR_FILE);
        std::fs::write(&descriptor_path, files.encode_to_vec())?;

        let mut config = prost_build::Config::new();
        config
            .out_dir(&out_dir)
            .include_file(INCLUDE_FILE)
            .prost_path("::courier::__private::prost")
            // Generated code may name every well-known type, with serde.
            .compile_well_known_types()
            .message_attribute(
                ".",
                "#[derive(::courier::__private::serde::Serialize, ::courier::__private::serde::Deserialize)]\n\
                 #[serde(crate = \"::courier::__private::serde\", default)]",
            )
            .enum_attribute(
                ".",
                "#[derive(::courier::__private::serde::Serialize, ::courier::__private::serde::Deserialize)]\n\
                 #[serde(crate = \"::courier::__private::serde\")]",
            )
            .service_generator(Box::new(generate::Courier::new(descriptor_path)));
        config.compile_fds(files)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proto_file_becomes_messages_and_a_service() {
        let dir = tempfile::tempdir().expect("temp dir");
        let proto = dir.path().join("greet.proto");
        std::fs::write(
            &proto,
            r#"syntax = "proto3";
package demo.v1;
import "google/protobuf/timestamp.proto";
// Greets.
service Greeter {
  // Says hello.
  rpc SayHello (HelloRequest) returns (HelloReply) { option idempotency_level = NO_SIDE_EFFECTS; }
  rpc Chat (stream HelloRequest) returns (stream HelloReply);
}
message HelloRequest { string name = 1; google.protobuf.Timestamp at = 2; }
message HelloReply { string message = 1; }
"#,
        )
        .expect("write proto");
        let out = dir.path().join("out");
        Builder::new()
            .out_dir(&out)
            .emit_rerun_if_changed(false)
            .compile(&[&proto], &[dir.path()])
            .expect("compile");
        let code = std::fs::read_to_string(out.join("demo.v1.rs")).expect("the package's module");
        assert!(code.contains("pub struct HelloRequest"));
        assert!(code.contains("pub trait Greeter"));
        assert!(code.contains("pub struct GreeterServer"));
        assert!(code.contains("pub struct GreeterClient"));
        assert!(code.contains("name: \"demo.v1.Greeter\""));
        assert!(code.contains("full_name: \"demo.v1.Greeter.SayHello\""));
        assert!(code.contains("idempotent: true"));
        // prost-build formats the code: compare without whitespace.
        let dense: String = code.split_whitespace().collect();
        for expected in [
            "fnchat(&self,cx:&::courier::Context,requests:::courier::Streaming<HelloRequest>,)",
            "::courier::ResponseStream<HelloReply>,",
            "kind:::courier::MethodKind::Bidirectional",
            "self.stub.bidirectional(\"demo.v1.Greeter.Chat\"",
        ] {
            assert!(dense.contains(expected), "the bidirectional method is generated: {expected}");
        }
        let include = std::fs::read_to_string(out.join(INCLUDE_FILE)).expect("include file");
        assert!(include.contains("pub mod demo"));
        assert!(include.contains("pub mod protobuf"), "well-known types are generated too");
        assert!(out.join(DESCRIPTOR_FILE).exists());
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let dir = tempfile::tempdir().expect("temp dir");
        let proto = dir.path().join("bad.proto");
        std::fs::write(&proto, "syntax = \"proto3\";\nmessage A { strin name = 1; }\n").expect("write proto");
        let err = Builder::new()
            .out_dir(dir.path().join("out"))
            .emit_rerun_if_changed(false)
            .compile(&[&proto], &[dir.path()])
            .expect_err("does not compile");
        assert!(err.to_string().contains("strin"), "{err}");
    }
}
