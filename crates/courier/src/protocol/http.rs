//! HTTP/1.1 with JSON bodies: the mapping between courier's calls and
//! HTTP's words (paths, statuses, error bodies, the deadline header). The
//! server's adapter (`server::http`) does the I/O; nothing here does.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use serde_json::{Value, json};

pub use super::headers::TIMEOUT_HEADER;
use crate::status::{Code, Status};

/// `/Service/Method` to `Service.Method`.
pub fn method_name(path: &str) -> Option<String> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/'))
        .then(|| format!("{service}.{method}"))
}

/// The deadline a [`TIMEOUT_HEADER`] value asks for.
pub fn parse_timeout(value: &HeaderValue) -> Result<Duration, Status> {
    value.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()).map(Duration::from_millis).ok_or_else(
        || Status::invalid_argument(format!("{TIMEOUT_HEADER} must be a whole number of milliseconds")),
    )
}

/// Whether a body of this type is read as JSON. curl's `-d` labels what
/// it sends `application/x-www-form-urlencoded` whatever it is, so that
/// counts too; forms proper (`multipart`), XML and the like do not.
pub fn is_json(content_type: &HeaderValue) -> bool {
    let essence =
        content_type.to_str().unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    matches!(essence.as_str(), "" | "application/json" | "text/plain" | "application/x-www-form-urlencoded")
        || essence.ends_with("+json")
}

/// The HTTP status for a code (as Google's HTTP APIs map them).
pub fn status_of(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An error's body: `{code, message}`, plus the service's own error when
/// it sent one. The code is gRPC's name for it (`INVALID_ARGUMENT`), so
/// the body says the same thing on every protocol.
pub fn error_body(status: &Status) -> Bytes {
    let code = if status.code() == Code::Ok { Code::Unknown } else { status.code() };
    let mut body = json!({ "code": code.grpc_name(), "message": status.message() });
    if status.is_application_error()
        && let Ok(error) = serde_json::from_slice::<Value>(status.details())
    {
        body["error"] = error;
    }
    Bytes::from(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_statuses_map() {
        assert_eq!(method_name("/Calculator/Add").as_deref(), Some("Calculator.Add"));
        assert_eq!(
            method_name("/helloworld.Greeter/SayHello").as_deref(),
            Some("helloworld.Greeter.SayHello")
        );
        assert_eq!(method_name("/Calculator"), None);
        assert_eq!(method_name("/a/b/c"), None);
        assert_eq!(status_of(Code::InvalidArgument), StatusCode::BAD_REQUEST);
        assert_eq!(status_of(Code::DeadlineExceeded), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(status_of(Code::Unknown), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(status_of(Code::Cancelled).as_u16(), 499);
    }

    #[test]
    fn error_bodies_carry_code_message_and_the_services_error() {
        let status =
            Status::application(Code::Unknown, "division by zero", Bytes::from_static(b"\"DivisionByZero\""));
        let body: Value = serde_json::from_slice(&error_body(&status)).expect("a JSON body");
        assert_eq!(
            body,
            json!({"code": "UNKNOWN", "message": "division by zero", "error": "DivisionByZero"})
        );
    }

    #[test]
    fn timeouts_are_whole_milliseconds() {
        assert_eq!(parse_timeout(&HeaderValue::from_static(" 250 ")).ok(), Some(Duration::from_millis(250)));
        for bad in ["-1", "1.5", "soon", ""] {
            let err = parse_timeout(&HeaderValue::from_static(bad)).expect_err(bad);
            assert_eq!(err.code(), Code::InvalidArgument);
        }
    }

    #[test]
    fn json_content_types_are_accepted() {
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "application/vnd.x+json",
            "text/plain",
            "application/x-www-form-urlencoded",
        ] {
            assert!(is_json(&HeaderValue::from_static(ok)), "{ok}");
        }
        assert!(!is_json(&HeaderValue::from_static("multipart/form-data; boundary=x")));
        assert!(!is_json(&HeaderValue::from_static("application/xml")));
    }
}
