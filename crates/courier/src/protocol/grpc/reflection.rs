//! The messages of gRPC server reflection (`grpc.reflection.v1` and
//! `v1alpha`, which share them), for the server's reflection service and
//! for clients (such as `courier bench`) that ask a server for its
//! `.proto` files.

/// `ServerReflectionRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerReflectionRequest {
    /// The host asked about (unused by courier).
    #[prost(string, tag = "1")]
    pub host: String,
    /// What is asked.
    #[prost(oneof = "Request", tags = "3, 4, 5, 6, 7")]
    pub message_request: Option<Request>,
}

/// `ServerReflectionRequest.message_request`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Request {
    /// A file by its name (`helloworld.proto`).
    #[prost(string, tag = "3")]
    FileByFilename(String),
    /// The file defining a fully qualified symbol.
    #[prost(string, tag = "4")]
    FileContainingSymbol(String),
    /// The file defining an extension.
    #[prost(message, tag = "5")]
    FileContainingExtension(ExtensionRequest),
    /// The extension numbers of a message type.
    #[prost(string, tag = "6")]
    AllExtensionNumbersOfType(String),
    /// Every service.
    #[prost(string, tag = "7")]
    ListServices(String),
}

/// `ExtensionRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExtensionRequest {
    /// The extended message type.
    #[prost(string, tag = "1")]
    pub containing_type: String,
    /// The extension's field number.
    #[prost(int32, tag = "2")]
    pub extension_number: i32,
}

/// `ServerReflectionResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerReflectionResponse {
    /// The host the answer is for.
    #[prost(string, tag = "1")]
    pub valid_host: String,
    /// The request answered.
    #[prost(message, optional, tag = "2")]
    pub original_request: Option<ServerReflectionRequest>,
    /// The answer.
    #[prost(oneof = "Answer", tags = "4, 5, 6, 7")]
    pub message_response: Option<Answer>,
}

/// `ServerReflectionResponse.message_response` (variant names as in the
/// `.proto`).
#[derive(Clone, PartialEq, prost::Oneof)]
#[allow(clippy::enum_variant_names)]
pub enum Answer {
    /// Encoded `FileDescriptorProto`s.
    #[prost(message, tag = "4")]
    FileDescriptorResponse(FileDescriptorResponse),
    /// Extension numbers.
    #[prost(message, tag = "5")]
    AllExtensionNumbersResponse(ExtensionNumberResponse),
    /// The services.
    #[prost(message, tag = "6")]
    ListServicesResponse(ListServiceResponse),
    /// Why the request could not be answered.
    #[prost(message, tag = "7")]
    ErrorResponse(ErrorResponse),
}

/// `FileDescriptorResponse`: encoded `FileDescriptorProto`s.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FileDescriptorResponse {
    /// The files.
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub file_descriptor_proto: Vec<Vec<u8>>,
}

/// `ExtensionNumberResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExtensionNumberResponse {
    /// The message type.
    #[prost(string, tag = "1")]
    pub base_type_name: String,
    /// Its extension numbers.
    #[prost(int32, repeated, tag = "2")]
    pub extension_number: Vec<i32>,
}

/// `ListServiceResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListServiceResponse {
    /// The services.
    #[prost(message, repeated, tag = "1")]
    pub service: Vec<ServiceResponse>,
}

/// `ServiceResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServiceResponse {
    /// A fully qualified service name.
    #[prost(string, tag = "1")]
    pub name: String,
}

/// `ErrorResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ErrorResponse {
    /// A gRPC status code.
    #[prost(int32, tag = "1")]
    pub error_code: i32,
    /// Why.
    #[prost(string, tag = "2")]
    pub error_message: String,
}

/// The reflection method, version 1.
pub const V1_METHOD: &str = "grpc.reflection.v1.ServerReflection.ServerReflectionInfo";
/// The reflection method as older servers name it.
pub const V1ALPHA_METHOD: &str = "grpc.reflection.v1alpha.ServerReflection.ServerReflectionInfo";
