//! [`Status`] and [`Code`]: the outcome of a call as it crosses the wire.
//!
//! The codes are gRPC's seventeen, with the same numbers, so a status maps to
//! `grpc-status` without a table. A status carries a human message and optional
//! opaque `details` bytes. When a service method returns its own error type
//! (`Result<T, MyError>`), the server encodes that error into `details` and
//! marks the status as an *application error*; the generated client decodes it
//! again, so callers get their own enum back with [`Status::app_error`].

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::codec::Codec;

/// The seventeen gRPC status codes, with gRPC's numbering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Code {
    /// Not an error.
    Ok = 0,
    /// The call was cancelled, typically by the caller.
    Cancelled = 1,
    /// An error with no better code, including errors returned by a handler.
    Unknown = 2,
    /// The caller sent an argument the server cannot accept (for example a body
    /// that does not decode as the method's arguments).
    InvalidArgument = 3,
    /// The deadline passed before the call completed.
    DeadlineExceeded = 4,
    /// A requested entity was not found.
    NotFound = 5,
    /// The entity a caller tried to create already exists.
    AlreadyExists = 6,
    /// The caller may not do this.
    PermissionDenied = 7,
    /// A limit was hit: concurrency, frame size, quota.
    ResourceExhausted = 8,
    /// The system is not in a state that allows the operation.
    FailedPrecondition = 9,
    /// The operation was aborted, typically by a concurrency conflict.
    Aborted = 10,
    /// An argument is out of the valid range.
    OutOfRange = 11,
    /// The service or method does not exist on the server.
    Unimplemented = 12,
    /// An invariant broke inside the server (a handler panicked, say).
    Internal = 13,
    /// The service cannot be reached now; retrying may help.
    Unavailable = 14,
    /// Data was lost or corrupted.
    DataLoss = 15,
    /// The caller is not authenticated.
    Unauthenticated = 16,
}

impl Code {
    /// Every code, in numeric order.
    pub const ALL: [Code; 17] = [
        Code::Ok,
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    /// The numeric value (the `grpc-status` number).
    pub const fn as_u32(self) -> u32 {
        self as u32
    }

    /// The code for a number; numbers outside gRPC's range become
    /// [`Code::Unknown`], as gRPC specifies.
    pub fn from_u32(value: u32) -> Code {
        usize::try_from(value).ok().and_then(|index| Code::ALL.get(index).copied()).unwrap_or(Code::Unknown)
    }

    /// gRPC's name for the code, e.g. `DEADLINE_EXCEEDED`.
    pub const fn grpc_name(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The result of a failed call: a [`Code`], a message and optional details.
///
/// `Status` is what crosses the wire. It is cheap to clone.
#[derive(Clone)]
pub struct Status {
    code: Code,
    message: String,
    details: Bytes,
    application: bool,
    typed: Option<Arc<dyn Any + Send + Sync>>,
    /// The codec `details` are in, when a client decoded this status from
    /// an answer: a discovered channel may reach one instance natively and
    /// another over gRPC, whose binary-codec calls travel as JSON.
    details_codec: Option<Codec>,
}

impl Status {
    /// A status with a code and a message.
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
            details: Bytes::new(),
            application: false,
            typed: None,
            details_codec: None,
        }
    }

    /// Attach opaque details (for example a serialized error payload).
    #[must_use]
    pub fn with_details(mut self, details: impl Into<Bytes>) -> Status {
        self.details = details.into();
        self
    }

    /// The status of a handler that returned its own error type: `details`
    /// holds the error encoded with the call's codec.
    pub fn application(code: Code, message: impl Into<String>, details: Bytes) -> Status {
        Status { application: true, ..Status::new(code, message).with_details(details) }
    }

    /// Note the codec `details` are in (the client does, for answers).
    #[must_use]
    pub(crate) fn with_details_codec(mut self, codec: Codec) -> Status {
        self.details_codec = Some(codec);
        self
    }

    /// The codec `details` are in, if the client that received this status
    /// noted it.
    pub(crate) fn details_codec(&self) -> Option<Codec> {
        self.details_codec
    }

    /// The code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The opaque details; empty when there are none.
    pub fn details(&self) -> &Bytes {
        &self.details
    }

    /// Whether this status carries a service's own error in its details.
    pub fn is_application_error(&self) -> bool {
        self.application
    }

    /// The service's own error, decoded, when the method returned
    /// `Result<T, E>` and the handler returned `Err(E)`.
    ///
    /// ```
    /// # use courier::{Code, Status};
    /// # #[derive(Debug, PartialEq)] enum CalcError { DivisionByZero }
    /// let status = Status::new(Code::Unknown, "division by zero")
    ///     .with_app_error(CalcError::DivisionByZero);
    /// assert_eq!(status.app_error::<CalcError>(), Some(&CalcError::DivisionByZero));
    /// ```
    pub fn app_error<E: Any>(&self) -> Option<&E> {
        self.typed.as_deref().and_then(|typed| typed.downcast_ref())
    }

    /// Attach a decoded application error; generated clients call this.
    #[must_use]
    pub fn with_app_error<E: Any + Send + Sync>(mut self, error: E) -> Status {
        self.application = true;
        self.typed = Some(Arc::new(error));
        self
    }

    /// `Cancelled` with a message.
    pub fn cancelled(message: impl Into<String>) -> Status {
        Status::new(Code::Cancelled, message)
    }
    /// `InvalidArgument` with a message.
    pub fn invalid_argument(message: impl Into<String>) -> Status {
        Status::new(Code::InvalidArgument, message)
    }
    /// `DeadlineExceeded` with a message.
    pub fn deadline_exceeded(message: impl Into<String>) -> Status {
        Status::new(Code::DeadlineExceeded, message)
    }
    /// `NotFound` with a message.
    pub fn not_found(message: impl Into<String>) -> Status {
        Status::new(Code::NotFound, message)
    }
    /// `ResourceExhausted` with a message.
    pub fn resource_exhausted(message: impl Into<String>) -> Status {
        Status::new(Code::ResourceExhausted, message)
    }
    /// `Unimplemented` with a message.
    pub fn unimplemented(message: impl Into<String>) -> Status {
        Status::new(Code::Unimplemented, message)
    }
    /// `Internal` with a message.
    pub fn internal(message: impl Into<String>) -> Status {
        Status::new(Code::Internal, message)
    }
    /// `Unavailable` with a message.
    pub fn unavailable(message: impl Into<String>) -> Status {
        Status::new(Code::Unavailable, message)
    }
    /// `PermissionDenied` with a message: the caller is known and may not
    /// do this.
    pub fn permission_denied(message: impl Into<String>) -> Status {
        Status::new(Code::PermissionDenied, message)
    }
    /// `Unauthenticated` with a message: the caller did not say who it is.
    pub fn unauthenticated(message: impl Into<String>) -> Status {
        Status::new(Code::Unauthenticated, message)
    }
    /// `FailedPrecondition` with a message.
    pub fn failed_precondition(message: impl Into<String>) -> Status {
        Status::new(Code::FailedPrecondition, message)
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Status");
        s.field("code", &self.code).field("message", &self.message);
        if !self.details.is_empty() {
            s.field("details_len", &self.details.len());
        }
        if self.application {
            s.field("application", &true);
        }
        s.finish()
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{}: {}", self.code, self.message)
        }
    }
}

impl std::error::Error for Status {}

impl PartialEq for Status {
    /// Two statuses are equal when code, message, details and the
    /// application flag are; a decoded typed error is not compared.
    fn eq(&self, other: &Status) -> bool {
        self.code == other.code
            && self.message == other.message
            && self.details == other.details
            && self.application == other.application
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_their_numbers() {
        for code in Code::ALL {
            assert_eq!(Code::from_u32(code.as_u32()), code);
        }
        assert_eq!(Code::ALL.len(), 17);
        assert_eq!(Code::from_u32(17), Code::Unknown);
        assert_eq!(Code::from_u32(u32::MAX), Code::Unknown);
        assert_eq!(Code::DeadlineExceeded.as_u32(), 4);
        assert_eq!(Code::Unauthenticated.as_u32(), 16);
    }

    #[test]
    fn display_shows_code_and_message() {
        let status = Status::unavailable("connection refused");
        assert_eq!(status.to_string(), "Unavailable: connection refused");
        assert_eq!(Status::new(Code::Internal, "").to_string(), "Internal");
    }

    #[test]
    fn typed_app_error_downcasts_only_to_its_type() {
        let status =
            Status::application(Code::Unknown, "boom", Bytes::from_static(b"x")).with_app_error(42_u32);
        assert!(status.is_application_error());
        assert_eq!(status.app_error::<u32>(), Some(&42));
        assert_eq!(status.app_error::<String>(), None);
        assert_eq!(status.clone().app_error::<u32>(), Some(&42));
    }
}
