//! JSON-RPC 1.0 connections, as Go's `net/rpc/jsonrpc` clients expect: the
//! adapter that cuts JSON objects out of the stream
//! (see [`crate::protocol::jsonrpc`]) for the stream-connection runner
//! ([`super::stream_rpc`]), which reads, runs and answers them.
//!
//! A request that cannot be parsed is answered with an error and the
//! connection goes on; bytes that are not a stream of JSON objects end it,
//! after an error reply with a null id (Go's server closes too: it cannot
//! tell where the next request starts). A method returning nothing
//! answers `{}`: Go's client fails a reply whose result and error are both
//! null.
//!
//! Arguments: Go sends one parameter, the argument struct; it becomes the
//! method's arguments as they are (one argument, or an object of named
//! arguments); as many parameters as the method has arguments fill them
//! in order. Field names match ignoring case when no field matches exactly,
//! as Go's decoder does (see [`crate::codec::lenient`]).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use serde_json::{Map, Value};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::ServerShared;
use super::router::Route;
use super::stream_rpc::{self, Next, Parsed, Reply, ReplyWriter, StreamProtocol};
use crate::codec::Codec;
use crate::protocol::jsonrpc::{Request, Splitter, encode_response, error_text, parse_request};
use crate::protocol::sniff::Protocol;
use crate::service::ArgDescriptor;
use crate::status::Status;

/// Serve one JSON-RPC connection.
pub(crate) async fn serve(
    stream: TcpStream,
    sniffed: BytesMut,
    peer: SocketAddr,
    server: Arc<ServerShared>,
    shutdown: watch::Receiver<bool>,
) {
    stream_rpc::serve(JsonRpc::default(), stream, sniffed, peer, server, shutdown).await;
}

/// The reading side of one connection: where the next object ends.
#[derive(Default)]
struct JsonRpc {
    splitter: Splitter,
}

impl StreamProtocol for JsonRpc {
    /// The request's id, echoed back as it came.
    type Tag = Value;
    /// The `params` array.
    type Args = Vec<Value>;
    type Writer = Replies;

    const PROTOCOL: Protocol = Protocol::JsonRpc;
    const CODEC: Codec = Codec::Json;

    fn next_request(&mut self, buf: &mut BytesMut, max_frame: usize) -> Next<Self> {
        let Some((start, end)) = self.splitter.next_object(buf, max_frame).map_err(|err| err.to_string())?
        else {
            return Ok(None);
        };
        let request = buf.split_to(end);
        self.splitter.consumed(end);
        Ok(Some(match parse_request(&request[start..]) {
            Ok(Request { method, params, id }) => Parsed::Call { method, args: params, tag: id },
            Err((err, id)) => Parsed::Refused { tag: id, status: Status::invalid_argument(err.to_string()) },
        }))
    }

    fn in_request(&self, _buf: &[u8]) -> bool {
        self.splitter.in_object()
    }

    fn arguments(route: &Route, params: Vec<Value>) -> Result<Bytes, Status> {
        arguments(route.method.args, params).map(Bytes::from)
    }

    fn writer(&self) -> Replies {
        Replies
    }
}

/// Replies as JSON objects, one per line.
struct Replies;

impl ReplyWriter for Replies {
    type Tag = Value;

    fn write(&mut self, reply: Reply<Value>, out: &mut BytesMut) -> Result<(), String> {
        let encoded = match reply {
            // Go's client takes a null result for a missing one and fails
            // the call; a method returning nothing answers `{}`, as a Go
            // method would.
            Reply::Answer { tag, result: Ok(_), returns_nothing: true } => encode_response(&tag, Ok(b"{}")),
            Reply::Answer { tag, result: Ok(result), .. } => encode_response(&tag, Ok(&result)),
            Reply::Answer { tag, result: Err(status), .. } => encode_response(&tag, Err(error_text(&status))),
            // The request's own id is not known: a null one, as Go's server.
            Reply::StreamRefused(status) => encode_response(&Value::Null, Err(error_text(&status))),
        };
        out.extend_from_slice(&encoded);
        Ok(())
    }
}

/// The method's arguments from the request's parameters.
fn arguments(args: &[ArgDescriptor], mut params: Vec<Value>) -> Result<Vec<u8>, Status> {
    let value = match (args.len(), params.len()) {
        // Go always sends one parameter; a method with none takes `{}`.
        (0, 0) => Value::Object(Map::new()),
        (0, 1) if params[0].is_null() || params[0].as_object().is_some_and(Map::is_empty) => {
            Value::Object(Map::new())
        }
        (_, 1) => params.remove(0),
        // Positional: one parameter per argument, in order.
        (n, given) if n > 1 && given == n => {
            Value::Object(args.iter().map(|arg| arg.name.to_owned()).zip(params).collect())
        }
        (n, given) => {
            return Err(Status::invalid_argument(format!(
                "expected one parameter (the method's {n} argument{}), got {given}",
                if n == 1 { "" } else { "s" }
            )));
        }
    };
    serde_json::to_vec(&value).map_err(|err| Status::invalid_argument(err.to_string()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NONE: &[ArgDescriptor] = &[];
    const ONE: &[ArgDescriptor] = &[ArgDescriptor { name: "text", ty: "String" }];
    const TWO: &[ArgDescriptor] =
        &[ArgDescriptor { name: "a", ty: "i64" }, ArgDescriptor { name: "b", ty: "i64" }];

    #[test]
    fn go_style_parameters_become_arguments() {
        assert_eq!(arguments(TWO, vec![json!({"A": 1, "B": 2})]).expect("one object"), br#"{"A":1,"B":2}"#);
        assert_eq!(arguments(TWO, vec![json!(1), json!(2)]).expect("positional"), br#"{"a":1,"b":2}"#);
        assert_eq!(arguments(ONE, vec![json!("hi")]).expect("one value"), br#""hi""#);
        assert_eq!(arguments(NONE, vec![]).expect("nothing"), b"{}");
        assert_eq!(arguments(NONE, vec![json!({})]).expect("empty object"), b"{}");
        assert!(arguments(ONE, vec![]).is_err());
        assert!(arguments(ONE, vec![json!(1), json!(2)]).is_err());
        assert!(arguments(TWO, vec![json!(1), json!(2), json!(3)]).is_err());
    }
}
