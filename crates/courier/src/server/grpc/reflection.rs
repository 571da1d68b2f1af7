//! gRPC server reflection, `grpc.reflection.v1` and `grpc.reflection.v1alpha`
//! (the same messages under two names; older tools speak only the second).
//!
//! Tools like grpcurl open one bidirectional stream and ask, message by
//! message: which services are there, and which `.proto` file defines a
//! symbol (or has a name). Answers come from the `FileDescriptorSet` each
//! `.proto` service carries in its [`Schema`](crate::Schema), plus the
//! health service's own. A file is sent with the files it imports that this
//! stream has not been sent yet, so one answer is enough to describe and
//! call a method. Services defined with serde types are listed, but have no
//! `.proto` file to describe them.

use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::{Bytes, BytesMut};
use h2::RecvStream;
use h2::server::SendResponse;
use http::{HeaderMap, HeaderValue};
use prost::Message as _;
use prost_types::{DescriptorProto, FileDescriptorProto, FileDescriptorSet};

use tokio::sync::watch;

use super::{send_data, send_trailers_only};
use crate::codec::Codec;
use crate::metadata::Metadata;
use crate::protocol::grpc::reflection::{
    Answer, ErrorResponse, ExtensionNumberResponse, FileDescriptorResponse, ListServiceResponse, Request,
    ServerReflectionRequest, ServerReflectionResponse, ServiceResponse,
};
use crate::protocol::grpc::{self as wire, Encoding, MessageDecoder};
use crate::server::ServerShared;
use crate::service::Schema;
use crate::status::Status;

const V1: &str = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
const V1ALPHA: &str = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";

/// Whether `path` is the reflection method (either version).
pub(crate) fn handles(path: &str) -> bool {
    path == V1 || path == V1ALPHA
}

/// What reflection can tell about one server, built on first use.
#[derive(Debug, Default)]
pub(crate) struct Index {
    /// Encoded file descriptors and their imports, by file name.
    files: BTreeMap<String, (Vec<u8>, Vec<String>)>,
    /// Fully qualified symbol (no leading dot) to the file defining it.
    symbols: HashMap<String, String>,
    /// Message types, for extension queries.
    messages: HashSet<String>,
    services: Vec<String>,
}

impl Index {
    pub(crate) fn build(server: &ServerShared) -> Index {
        let mut index = Index::default();
        let mut sets = vec![FileDescriptorSet { file: vec![super::health::file_descriptor()] }];
        for service in server.router.services() {
            let descriptor = service.descriptor();
            index.services.push(descriptor.name.to_owned());
            if let Schema::Protobuf { file_descriptor_set } = descriptor.schema {
                match FileDescriptorSet::decode(file_descriptor_set) {
                    Ok(set) => sets.push(set),
                    Err(err) => {
                        tracing::warn!(service = descriptor.name, %err, "unreadable file descriptor set")
                    }
                }
            }
        }
        index.services.push(super::health::SERVICE.to_owned());
        index.services.push("grpc.reflection.v1.ServerReflection".to_owned());
        index.services.push("grpc.reflection.v1alpha.ServerReflection".to_owned());
        for file in sets.into_iter().flat_map(|set| set.file) {
            index.add_file(file);
        }
        index
    }

    fn add_file(&mut self, file: FileDescriptorProto) {
        let name = file.name().to_owned();
        if self.files.contains_key(&name) {
            return;
        }
        let package = file.package().to_owned();
        let qualify =
            |symbol: &str| if package.is_empty() { symbol.to_owned() } else { format!("{package}.{symbol}") };
        for message in &file.message_type {
            self.add_message(&qualify(message.name()), message, &name);
        }
        for enumeration in &file.enum_type {
            self.symbols.insert(qualify(enumeration.name()), name.clone());
        }
        for service in &file.service {
            let service_name = qualify(service.name());
            for method in &service.method {
                self.symbols.insert(format!("{service_name}.{}", method.name()), name.clone());
            }
            self.symbols.insert(service_name, name.clone());
        }
        for extension in &file.extension {
            self.symbols.insert(qualify(extension.name()), name.clone());
        }
        let imports = file.dependency.clone();
        self.files.insert(name, (file.encode_to_vec(), imports));
    }

    fn add_message(&mut self, full_name: &str, message: &DescriptorProto, file: &str) {
        self.symbols.insert(full_name.to_owned(), file.to_owned());
        self.messages.insert(full_name.to_owned());
        for nested in &message.nested_type {
            self.add_message(&format!("{full_name}.{}", nested.name()), nested, file);
        }
        for enumeration in &message.enum_type {
            self.symbols.insert(format!("{full_name}.{}", enumeration.name()), file.to_owned());
        }
    }

    /// `file` and what it imports, transitively, leaving out what `sent`
    /// holds (and adding what it returns to `sent`).
    fn file_with_imports(&self, file: &str, sent: &mut HashSet<String>) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut pending = vec![file.to_owned()];
        let mut first = true;
        while let Some(name) = pending.pop() {
            // The asked-for file always goes out, even if sent before.
            if !first && sent.contains(&name) {
                continue;
            }
            first = false;
            let Some((encoded, imports)) = self.files.get(&name) else { continue };
            sent.insert(name);
            out.push(encoded.clone());
            pending.extend(imports.iter().cloned());
        }
        out
    }

    fn answer(&self, request: &Request, sent: &mut HashSet<String>) -> Answer {
        let not_found = |what: String| {
            Answer::ErrorResponse(ErrorResponse {
                error_code: crate::status::Code::NotFound.as_u32() as i32,
                error_message: what,
            })
        };
        match request {
            Request::ListServices(_) => Answer::ListServicesResponse(ListServiceResponse {
                service: self.services.iter().map(|name| ServiceResponse { name: name.clone() }).collect(),
            }),
            Request::FileByFilename(name) if self.files.contains_key(name) => {
                Answer::FileDescriptorResponse(FileDescriptorResponse {
                    file_descriptor_proto: self.file_with_imports(name, sent),
                })
            }
            Request::FileByFilename(name) => not_found(format!("no file `{name}`")),
            Request::FileContainingSymbol(symbol) => {
                let symbol = symbol.trim_start_matches('.');
                match self.symbols.get(symbol) {
                    Some(file) => Answer::FileDescriptorResponse(FileDescriptorResponse {
                        file_descriptor_proto: self.file_with_imports(file, sent),
                    }),
                    None if self.services.iter().any(|s| s == symbol) => not_found(format!(
                        "`{symbol}` is defined with Rust (serde) types, not a .proto file; call it with application/grpc+json"
                    )),
                    None => not_found(format!("no symbol `{symbol}`")),
                }
            }
            Request::FileContainingExtension(extension) => not_found(format!(
                "no extension {} of `{}`",
                extension.extension_number, extension.containing_type
            )),
            Request::AllExtensionNumbersOfType(name)
                if self.messages.contains(name.trim_start_matches('.')) =>
            {
                Answer::AllExtensionNumbersResponse(ExtensionNumberResponse {
                    base_type_name: name.clone(),
                    extension_number: Vec::new(),
                })
            }
            Request::AllExtensionNumbersOfType(name) => not_found(format!("no message type `{name}`")),
        }
    }
}

/// Serve one reflection stream: an answer per request, until the client
/// ends its side or the server shuts down (`UNAVAILABLE`, between answers). The next request is read only
/// once the last answer is on its way (within the client's flow-control
/// window), so a client that asks without reading cannot pile answers up.
pub(crate) async fn serve(
    codec: Codec,
    mut body: RecvStream,
    mut respond: SendResponse<Bytes>,
    server: &ServerShared,
    mut shutdown: watch::Receiver<bool>,
) {
    if codec != Codec::Protobuf {
        let status = Status::invalid_argument("server reflection speaks protobuf only");
        return send_trailers_only(&mut respond, codec, &status, &Metadata::new());
    }
    let index = server.reflection.get_or_init(|| Index::build(server));
    let response = super::response_head(codec);
    let Ok(mut stream) = respond.send_response(response, false) else { return };
    let mut decoder = MessageDecoder::new(64 * 1024);
    let mut sent = HashSet::new();
    let stall = server.config.keepalive_interval;
    let outcome: Result<(), Status> = async {
        loop {
            while let Some(message) =
                decoder.next_message().map_err(|err| Status::invalid_argument(err.to_string()))?
            {
                let framed = respond_to(index, &message, &mut sent)?;
                send_data(&mut stream, framed, stall)
                    .await
                    .map_err(|err| Status::cancelled(err.to_string()))?;
            }
            // Between answers (never halfway through one), a shutdown ends
            // the stream: a tool holding it open must not hold up the drain.
            let chunk = tokio::select! {
                biased;
                chunk = body.data() => chunk,
                _ = shutdown.wait_for(|stop| *stop) => {
                    return Err(Status::unavailable("the server is shutting down"));
                }
            };
            let Some(chunk) = chunk else { break };
            let chunk = chunk.map_err(|err| Status::cancelled(err.to_string()))?;
            let _ = body.flow_control().release_capacity(chunk.len());
            decoder.push(&chunk);
        }
        decoder.finish().map_err(|err| Status::invalid_argument(err.to_string()))
    }
    .await;
    let mut trailers = HeaderMap::new();
    match outcome {
        Ok(()) => {
            trailers.insert(wire::names::STATUS, HeaderValue::from_static("0"));
        }
        Err(status) => crate::protocol::grpc::put_status(&mut trailers, &status),
    }
    let _ = stream.send_trailers(trailers);
}

/// One request's answer, framed.
fn respond_to(index: &Index, message: &wire::Message, sent: &mut HashSet<String>) -> Result<Bytes, Status> {
    if message.compressed {
        return Err(Status::unimplemented("compressed reflection requests are not supported"));
    }
    let request = ServerReflectionRequest::decode(&message.data[..])
        .map_err(|err| Status::invalid_argument(format!("malformed reflection request: {err}")))?;
    let answer = match &request.message_request {
        Some(asked) => index.answer(asked, sent),
        None => Answer::ErrorResponse(ErrorResponse {
            error_code: crate::status::Code::InvalidArgument.as_u32() as i32,
            error_message: "the request asks nothing".to_owned(),
        }),
    };
    let response = ServerReflectionResponse {
        valid_host: request.host.clone(),
        original_request: Some(request),
        message_response: Some(answer),
    };
    let mut encoded = BytesMut::new();
    response.encode(&mut encoded).map_err(|err| Status::internal(err.to_string()))?;
    super::frame_message(&encoded, Encoding::Identity, usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_with(file: FileDescriptorProto) -> Index {
        let mut index = Index::default();
        index.add_file(super::super::health::file_descriptor());
        index.add_file(file);
        index
    }

    fn files_of(answer: Answer) -> Vec<String> {
        match answer {
            Answer::FileDescriptorResponse(response) => response
                .file_descriptor_proto
                .iter()
                .map(|bytes| FileDescriptorProto::decode(&bytes[..]).expect("a descriptor").name().to_owned())
                .collect(),
            other => panic!("expected files, got {other:?}"),
        }
    }

    #[test]
    fn symbols_find_their_file_and_its_imports_once() {
        let file = FileDescriptorProto {
            name: Some("demo.proto".into()),
            package: Some("demo".into()),
            dependency: vec!["grpc/health/v1/health.proto".into()],
            message_type: vec![DescriptorProto {
                name: Some("Outer".into()),
                nested_type: vec![DescriptorProto { name: Some("Inner".into()), ..Default::default() }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let index = index_with(file);
        let mut sent = HashSet::new();
        let first =
            files_of(index.answer(&Request::FileContainingSymbol(".demo.Outer.Inner".into()), &mut sent));
        assert_eq!(first, ["demo.proto", "grpc/health/v1/health.proto"]);
        let again = files_of(index.answer(&Request::FileContainingSymbol("demo.Outer".into()), &mut sent));
        assert_eq!(again, ["demo.proto"], "imports already sent are not repeated");
        let health = files_of(index.answer(
            &Request::FileContainingSymbol("grpc.health.v1.Health.Check".into()),
            &mut HashSet::new(),
        ));
        assert_eq!(health, ["grpc/health/v1/health.proto"]);
    }

    #[test]
    fn unknown_names_are_not_found() {
        let index = index_with(FileDescriptorProto { name: Some("x.proto".into()), ..Default::default() });
        for request in [
            Request::FileContainingSymbol("nope.Nope".into()),
            Request::FileByFilename("nope.proto".into()),
            Request::AllExtensionNumbersOfType("nope.Nope".into()),
        ] {
            match index.answer(&request, &mut HashSet::new()) {
                Answer::ErrorResponse(error) => assert_eq!(error.error_code, 5),
                other => panic!("{request:?}: {other:?}"),
            }
        }
    }
}
