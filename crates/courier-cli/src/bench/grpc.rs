//! `courier bench` against gRPC servers: turning the JSON arguments into
//! the protobuf message the method takes, as ghz and grpcurl do.
//!
//! The method's input and output types come from `--proto` files (parsed
//! here, no `protoc`), or else from the server's reflection service
//! (`grpc.reflection.v1`, then `v1alpha`). A courier service defined with
//! serde types has no `.proto`: it is called with `application/grpc+json`,
//! the JSON as it is.

use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use courier::protocol::grpc::reflection::{
    Answer, Request, ServerReflectionRequest, ServerReflectionResponse, V1_METHOD, V1ALPHA_METHOD,
};
use courier::{CallOptions, Channel, Code, Codec, MethodKind};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};

use super::BenchError;

/// How calls to one method are encoded.
pub(crate) enum Encoding {
    /// Protobuf, with the method's message types.
    Protobuf { input: MessageDescriptor, output: MessageDescriptor },
    /// JSON as given (`application/grpc+json`), for serde services.
    Json,
}

impl Encoding {
    pub(crate) fn codec(&self) -> Codec {
        match self {
            Encoding::Protobuf { .. } => Codec::Protobuf,
            Encoding::Json => Codec::Json,
        }
    }

    /// The request body for the JSON arguments.
    pub(crate) fn encode(&self, json: &Bytes) -> Result<Bytes, BenchError> {
        let Encoding::Protobuf { input, .. } = self else { return Ok(json.clone()) };
        let mut deserializer = serde_json::Deserializer::from_slice(json);
        let message = DynamicMessage::deserialize(input.clone(), &mut deserializer).map_err(|err| {
            BenchError::Arguments { message: input.full_name().to_owned(), reason: err.to_string() }
        })?;
        let mut body = BytesMut::new();
        message.encode(&mut body).map_err(|err| BenchError::Arguments {
            message: input.full_name().to_owned(),
            reason: err.to_string(),
        })?;
        Ok(body.freeze())
    }

    /// A reply as JSON text, for the summary.
    pub(crate) fn show(&self, reply: &Bytes) -> Bytes {
        let Encoding::Protobuf { output, .. } = self else { return reply.clone() };
        match DynamicMessage::decode(output.clone(), &reply[..]) {
            Ok(message) => serde_json::to_vec(&message)
                .map(Bytes::from)
                .unwrap_or_else(|err| Bytes::from(err.to_string())),
            Err(err) => {
                Bytes::from(format!("(a reply that does not decode as {}: {err})", output.full_name()))
            }
        }
    }
}

/// Where message types come from.
pub(crate) struct Sources {
    pub(crate) protos: Vec<PathBuf>,
    pub(crate) import_paths: Vec<PathBuf>,
}

/// `package.Service/Method` or `package.Service.Method` to its service and
/// method names.
pub(crate) fn split_method(method: &str) -> Option<(&str, &str)> {
    let (service, name) = method.rsplit_once('/').or_else(|| method.rsplit_once('.'))?;
    (!service.is_empty() && !name.is_empty()).then_some((service, name))
}

/// Find how to encode calls to `service`/`method`.
pub(crate) async fn encoding(
    channel: &Channel,
    sources: &Sources,
    service: &str,
    method: &str,
    kind: MethodKind,
    options: &CallOptions,
) -> Result<Encoding, BenchError> {
    let pool = if sources.protos.is_empty() {
        match reflected_pool(channel, service, options).await? {
            Some(pool) => pool,
            None => return Ok(Encoding::Json),
        }
    } else {
        let includes = if sources.import_paths.is_empty() {
            vec![PathBuf::from(".")]
        } else {
            sources.import_paths.clone()
        };
        let files =
            protox::compile(&sources.protos, &includes).map_err(|err| BenchError::Proto(err.to_string()))?;
        DescriptorPool::from_file_descriptor_set(files).map_err(|err| BenchError::Proto(err.to_string()))?
    };
    let Some(descriptor) = pool.get_service_by_name(service) else {
        return Err(BenchError::Proto(format!("no service `{service}` in the .proto files")));
    };
    let Some(found) = descriptor.methods().find(|m| m.name() == method) else {
        let offered: Vec<String> = descriptor.methods().map(|m| m.name().to_owned()).collect();
        return Err(BenchError::Proto(format!(
            "`{service}` has no method `{method}` (it offers: {})",
            offered.join(", ")
        )));
    };
    let declared = match (found.is_client_streaming(), found.is_server_streaming()) {
        (false, false) => MethodKind::Unary,
        (false, true) => MethodKind::ServerStreaming,
        (true, false) => MethodKind::ClientStreaming,
        (true, true) => MethodKind::Bidirectional,
    };
    if declared != kind {
        return Err(BenchError::Proto(format!(
            "{service}.{method} is {}: {}",
            describe(declared),
            match declared {
                MethodKind::Unary => "drop --stream",
                MethodKind::ServerStreaming => "benchmark it with --stream server",
                MethodKind::ClientStreaming => "benchmark it with --stream client",
                _ => "benchmark it with --stream bidi",
            }
        )));
    }
    Ok(Encoding::Protobuf { input: found.input(), output: found.output() })
}

fn describe(kind: MethodKind) -> &'static str {
    match kind {
        MethodKind::Unary => "a unary method",
        MethodKind::ServerStreaming => "a server-streaming method",
        MethodKind::ClientStreaming => "a client-streaming method",
        _ => "a bidirectional streaming method",
    }
}

/// The server's `.proto` files for `service`, by reflection; `None` if it
/// has none for it (a courier serde service) or offers no reflection.
async fn reflected_pool(
    channel: &Channel,
    service: &str,
    options: &CallOptions,
) -> Result<Option<DescriptorPool>, BenchError> {
    let options = options.clone().with_codec(Codec::Protobuf);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(Request::FileContainingSymbol(service.to_owned())),
    };
    let body = Bytes::from(request.encode_to_vec());
    let mut reply = channel.unary_bytes(V1_METHOD, body.clone(), &options).await;
    if matches!(&reply, Err(status) if status.code() == Code::Unimplemented) {
        reply = channel.unary_bytes(V1ALPHA_METHOD, body, &options).await;
    }
    let reply = match reply {
        Ok(reply) => reply,
        Err(status) if status.code() == Code::Unimplemented => return Ok(None),
        Err(status) => return Err(BenchError::Reflection(status.to_string())),
    };
    let response = ServerReflectionResponse::decode(&reply[..])
        .map_err(|err| BenchError::Reflection(err.to_string()))?;
    let files = match response.message_response {
        Some(Answer::FileDescriptorResponse(files)) => files.file_descriptor_proto,
        // Listed but not described: a courier serde service.
        Some(Answer::ErrorResponse(error)) if error.error_code == Code::NotFound.as_u32() as i32 => {
            return Ok(None);
        }
        Some(Answer::ErrorResponse(error)) => return Err(BenchError::Reflection(error.error_message)),
        _ => return Err(BenchError::Reflection("an answer that is not a file descriptor".to_owned())),
    };
    let mut pool = DescriptorPool::new();
    let files: Result<Vec<prost_types::FileDescriptorProto>, _> =
        files.iter().map(|bytes| prost_types::FileDescriptorProto::decode(&bytes[..])).collect();
    let files = files.map_err(|err| BenchError::Reflection(err.to_string()))?;
    pool.add_file_descriptor_protos(files).map_err(|err| BenchError::Reflection(err.to_string()))?;
    Ok(Some(pool))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_named_either_way() {
        assert_eq!(split_method("helloworld.Greeter/SayHello"), Some(("helloworld.Greeter", "SayHello")));
        assert_eq!(split_method("helloworld.Greeter.SayHello"), Some(("helloworld.Greeter", "SayHello")));
        assert_eq!(split_method("Calculator.Add"), Some(("Calculator", "Add")));
        assert_eq!(split_method("Add"), None);
    }
}
