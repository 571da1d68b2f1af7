//! The standard gRPC health service, `grpc.health.v1.Health`.
//!
//! `Check` answers `SERVING` for the server as a whole (the empty service
//! name) and for every service it offers, `NOT_SERVING` once a graceful
//! shutdown has begun, and `NOT_FOUND` for a service it does not offer.
//! `Watch` sends the current status, then `NOT_SERVING` when the shutdown
//! begins, and ends the stream so the drain need not wait for it.

use bytes::{Bytes, BytesMut};
use h2::RecvStream;
use h2::server::SendResponse;
use http::HeaderMap;
use prost::Message as _;
use tokio::sync::watch;

use super::{read_unary, request_encoding, send_data, send_ok_trailers, send_trailers_only};
use crate::codec::Codec;
use crate::metadata::Metadata;
use crate::protocol::grpc::Encoding;
use crate::server::ServerShared;
use crate::status::Status;

/// The service's name.
pub(crate) const SERVICE: &str = "grpc.health.v1.Health";
const CHECK: &str = "/grpc.health.v1.Health/Check";
const WATCH: &str = "/grpc.health.v1.Health/Watch";

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub(crate) struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    pub(crate) service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub(crate) struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    pub(crate) status: i32,
}

/// `HealthCheckResponse.ServingStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ServingStatus {
    Serving = 1,
    NotServing = 2,
    ServiceUnknown = 3,
}

/// Whether `path` is one of this service's methods.
pub(crate) fn handles(path: &str) -> bool {
    path == CHECK || path == WATCH
}

fn status_of(service: &str, server: &ServerShared, stopping: bool) -> Option<ServingStatus> {
    let known = service.is_empty()
        || service == SERVICE
        || server.router.services().iter().any(|s| s.descriptor().name == service);
    match (known, stopping) {
        (false, _) => None,
        (true, true) => Some(ServingStatus::NotServing),
        (true, false) => Some(ServingStatus::Serving),
    }
}

fn encode(codec: Codec, status: ServingStatus) -> Result<Bytes, Status> {
    let response = HealthCheckResponse { status: status as i32 };
    let mut body = BytesMut::new();
    let encoded = match codec {
        Codec::Protobuf => {
            response.encode(&mut body).map_err(|err| Status::internal(err.to_string()))?;
            Ok(())
        }
        other => other.encode(&response, &mut body).map_err(|err| Status::internal(err.to_string())),
    };
    encoded?;
    super::frame_message(&body, Encoding::Identity, usize::MAX)
}

fn decode(codec: Codec, body: &[u8]) -> Result<HealthCheckRequest, Status> {
    let decoded = match codec {
        Codec::Protobuf => HealthCheckRequest::decode(body).map_err(|err| err.to_string()),
        other => other.decode(body).map_err(|err| err.to_string()),
    };
    decoded.map_err(|err| Status::invalid_argument(format!("malformed HealthCheckRequest: {err}")))
}

/// Answer a `Check` or `Watch`.
pub(crate) async fn serve(
    path: &str,
    headers: &HeaderMap,
    codec: Codec,
    mut body: RecvStream,
    mut respond: SendResponse<Bytes>,
    server: &ServerShared,
    mut shutdown: watch::Receiver<bool>,
) {
    let request = async {
        let encoding = request_encoding(headers)?;
        let (bytes, _memory) = read_unary(&mut body, encoding, server).await?;
        decode(codec, &bytes)
    };
    let request = match request.await {
        Ok(request) => request,
        Err(status) => return send_trailers_only(&mut respond, codec, &status, &Metadata::new()),
    };
    let stopping = *shutdown.borrow();
    let current = status_of(&request.service, server, stopping);
    if path == CHECK {
        let Some(current) = current else {
            let status = Status::not_found(format!("unknown service `{}`", request.service));
            return send_trailers_only(&mut respond, codec, &status, &Metadata::new());
        };
        return send_one(&mut respond, codec, current, server.config.keepalive_interval).await;
    }
    // Watch: now, then at the shutdown.
    let response = super::response_head(codec);
    let Ok(mut stream) = respond.send_response(response, false) else { return };
    let Ok(first) = encode(codec, current.unwrap_or(ServingStatus::ServiceUnknown)) else { return };
    if send_data(&mut stream, first, server.config.keepalive_interval).await.is_err() {
        return;
    }
    if !stopping {
        let reset = std::future::poll_fn(|task| stream.poll_reset(task));
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => {}
            // The client went away.
            _ = reset => return,
        }
        if current.is_some() {
            let Ok(last) = encode(codec, ServingStatus::NotServing) else { return };
            if send_data(&mut stream, last, server.config.keepalive_interval).await.is_err() {
                return;
            }
        }
    }
    send_ok_trailers(&mut stream);
}

async fn send_one(
    respond: &mut SendResponse<Bytes>,
    codec: Codec,
    status: ServingStatus,
    stall: Option<std::time::Duration>,
) {
    let message = match encode(codec, status) {
        Ok(message) => message,
        Err(status) => return send_trailers_only(respond, codec, &status, &Metadata::new()),
    };
    let response = super::response_head(codec);
    let Ok(mut stream) = respond.send_response(response, false) else { return };
    if send_data(&mut stream, message, stall).await.is_ok() {
        send_ok_trailers(&mut stream);
    }
}

/// `grpc/health/v1/health.proto` as a file descriptor, for reflection.
pub(crate) fn file_descriptor() -> prost_types::FileDescriptorProto {
    use prost_types::field_descriptor_proto::{Label, Type};
    use prost_types::{
        DescriptorProto, EnumDescriptorProto, EnumValueDescriptorProto, FieldDescriptorProto,
        FileDescriptorProto, MethodDescriptorProto, ServiceDescriptorProto,
    };
    let field = |name: &str, number: i32, kind: Type, type_name: Option<&str>| FieldDescriptorProto {
        name: Some(name.to_owned()),
        number: Some(number),
        label: Some(Label::Optional as i32),
        r#type: Some(kind as i32),
        type_name: type_name.map(str::to_owned),
        json_name: Some(name.to_owned()),
        ..FieldDescriptorProto::default()
    };
    let value = |name: &str, number: i32| EnumValueDescriptorProto {
        name: Some(name.to_owned()),
        number: Some(number),
        ..EnumValueDescriptorProto::default()
    };
    let method = |name: &str, server_streaming: bool| MethodDescriptorProto {
        name: Some(name.to_owned()),
        input_type: Some(".grpc.health.v1.HealthCheckRequest".to_owned()),
        output_type: Some(".grpc.health.v1.HealthCheckResponse".to_owned()),
        server_streaming: Some(server_streaming),
        ..MethodDescriptorProto::default()
    };
    FileDescriptorProto {
        name: Some("grpc/health/v1/health.proto".to_owned()),
        package: Some("grpc.health.v1".to_owned()),
        message_type: vec![
            DescriptorProto {
                name: Some("HealthCheckRequest".to_owned()),
                field: vec![field("service", 1, Type::String, None)],
                ..DescriptorProto::default()
            },
            DescriptorProto {
                name: Some("HealthCheckResponse".to_owned()),
                field: vec![field(
                    "status",
                    1,
                    Type::Enum,
                    Some(".grpc.health.v1.HealthCheckResponse.ServingStatus"),
                )],
                enum_type: vec![EnumDescriptorProto {
                    name: Some("ServingStatus".to_owned()),
                    value: vec![
                        value("UNKNOWN", 0),
                        value("SERVING", 1),
                        value("NOT_SERVING", 2),
                        value("SERVICE_UNKNOWN", 3),
                    ],
                    ..EnumDescriptorProto::default()
                }],
                ..DescriptorProto::default()
            },
        ],
        service: vec![ServiceDescriptorProto {
            name: Some("Health".to_owned()),
            method: vec![method("Check", false), method("Watch", true)],
            ..ServiceDescriptorProto::default()
        }],
        syntax: Some("proto3".to_owned()),
        ..FileDescriptorProto::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_response_is_standard_protobuf() {
        // SERVING: field 1, varint 1, inside a 5-byte message prefix.
        assert_eq!(
            &encode(Codec::Protobuf, ServingStatus::Serving).expect("encode")[..],
            b"\x00\x00\x00\x00\x02\x08\x01"
        );
        let request = HealthCheckRequest { service: "Calculator".into() };
        assert_eq!(decode(Codec::Protobuf, &request.encode_to_vec()).expect("decode"), request);
    }
}
