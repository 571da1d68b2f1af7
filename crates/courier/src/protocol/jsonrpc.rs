//! JSON-RPC 1.0 as Go's `net/rpc/jsonrpc` speaks it, sans-IO.
//!
//! A connection carries a stream of JSON objects, one per request:
//! `{"method":"Calculator.Add","params":[{"a":10,"b":50}],"id":0}`, and
//! replies `{"id":0,"result":60,"error":null}` (or `"result":null` and the
//! error as a string). Requests may be pipelined; replies may come in any
//! order and are matched by id. Go's decoder matches member names without
//! regard to case, so `"Method"` and `"PARAMS"` are accepted too.
//!
//! [`Splitter`] finds where each request ends, in one pass over the bytes
//! however they are split across reads, and refuses one longer than the
//! limit before buffering more of it.

use serde_json::{Map, Value};

/// What can be wrong with the byte stream itself (the connection closes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// A request longer than the limit.
    #[error("a request exceeds the limit of {max} bytes")]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// Something other than a JSON object where a request should start.
    #[error("expected a JSON object (a request), found {found:?}")]
    NotAnObject {
        /// The offending character.
        found: char,
    },
    /// The bytes are not JSON.
    #[error("invalid JSON: {0}")]
    Syntax(String),
}

/// Finds complete top-level JSON objects in a growing buffer.
#[derive(Debug, Default)]
pub struct Splitter {
    /// Bytes of the buffer already scanned.
    scanned: usize,
    /// Where the current object starts, once its `{` is seen.
    start: Option<usize>,
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl Splitter {
    /// Scan `buf` (which holds everything not yet taken, the same bytes as
    /// last time plus more) and return the range of the first complete
    /// object, if any. After taking it, drain `..end` from the buffer and
    /// call [`Splitter::consumed`].
    pub fn next_object(&mut self, buf: &[u8], max: usize) -> Result<Option<(usize, usize)>, StreamError> {
        while self.scanned < buf.len() {
            let at = self.scanned;
            let byte = buf[at];
            self.scanned += 1;
            let Some(start) = self.start else {
                if byte.is_ascii_whitespace() {
                    if at >= max {
                        return Err(StreamError::TooLarge { max });
                    }
                    continue;
                }
                if byte != b'{' {
                    return Err(StreamError::NotAnObject { found: char::from(byte) });
                }
                self.start = Some(at);
                self.depth = 1;
                continue;
            };
            // Before the byte is taken, so a request one byte over the limit
            // is refused even when that byte is its closing brace.
            if at + 1 - start > max {
                return Err(StreamError::TooLarge { max });
            }
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if byte == b'\\' {
                    self.escaped = true;
                } else if byte == b'"' {
                    self.in_string = false;
                }
            } else {
                match byte {
                    b'"' => self.in_string = true,
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' => {
                        self.depth -= 1;
                        if self.depth == 0 {
                            self.start = None;
                            return Ok(Some((start, at + 1)));
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(None)
    }

    /// The caller drained the first `end` bytes of its buffer.
    pub fn consumed(&mut self, end: usize) {
        self.scanned -= end;
    }

    /// Whether an object has started and not yet ended (in the bytes
    /// scanned so far): the peer is in the middle of a request.
    pub fn in_object(&self) -> bool {
        self.start.is_some()
    }
}

/// One request, as the server sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// `Service.Method`.
    pub method: String,
    /// The arguments: Go sends a one-element array.
    pub params: Vec<Value>,
    /// The caller's id, echoed back as it came.
    pub id: Value,
}

/// Why one request cannot be served (it is answered with an error; the
/// connection goes on).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The object is not valid JSON.
    #[error("invalid JSON: {0}")]
    Syntax(String),
    /// A member is missing or of the wrong type.
    #[error("invalid request: {0}")]
    Shape(&'static str),
}

/// The value of member `name`, matched as Go does: exactly if present,
/// otherwise ignoring ASCII case.
pub fn member<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    object.get(name).or_else(|| object.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, v)| v))
}

/// Parse one request object. On error, the id if one could be read.
pub fn parse_request(bytes: &[u8]) -> Result<Request, (RequestError, Value)> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|err| (RequestError::Syntax(err.to_string()), Value::Null))?;
    let Value::Object(object) = value else {
        return Err((RequestError::Shape("a request is an object"), Value::Null));
    };
    let id = member(&object, "id").cloned().unwrap_or(Value::Null);
    let method = match member(&object, "method") {
        Some(Value::String(method)) => method.clone(),
        _ => return Err((RequestError::Shape("`method` must be a string"), id)),
    };
    let params = match member(&object, "params") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(params)) => params.clone(),
        // Lenient: a bare object is one parameter.
        Some(Value::Object(param)) => vec![Value::Object(param.clone())],
        Some(_) => return Err((RequestError::Shape("`params` must be an array"), id)),
    };
    Ok(Request { method, params, id })
}

/// A status as JSON-RPC's error: the text Go's clients show (`rpc.ServerError`),
/// the status message, or the code's name when there is none. JSON-RPC 1.0
/// as Go speaks it carries a string, so the code itself does not travel.
pub fn error_text(status: &crate::status::Status) -> &str {
    if status.message().is_empty() { status.code().grpc_name() } else { status.message() }
}

/// The reply to a request.
pub fn encode_response(id: &Value, outcome: Result<&[u8], &str>) -> Vec<u8> {
    let id = serde_json::to_string(id).unwrap_or_else(|_| "null".to_owned());
    match outcome {
        Ok(result) => {
            let mut out = Vec::with_capacity(result.len() + id.len() + 32);
            out.extend_from_slice(b"{\"id\":");
            out.extend_from_slice(id.as_bytes());
            out.extend_from_slice(b",\"result\":");
            out.extend_from_slice(if result.is_empty() { b"null" } else { result });
            out.extend_from_slice(b",\"error\":null}\n");
            out
        }
        Err(message) => {
            let message = serde_json::to_string(message).unwrap_or_else(|_| "\"error\"".to_owned());
            format!("{{\"id\":{id},\"result\":null,\"error\":{message}}}\n").into_bytes()
        }
    }
}

/// A request as a client sends it: `{"method":..,"params":[<arg>],"id":..}`
/// and a newline, with the argument already encoded as JSON (Go's server
/// takes exactly one parameter).
pub fn encode_request(method: &str, arg: &[u8], id: u64, out: &mut Vec<u8>) {
    let method = serde_json::to_string(method).unwrap_or_else(|_| "\"\"".to_owned());
    out.extend_from_slice(b"{\"method\":");
    out.extend_from_slice(method.as_bytes());
    out.extend_from_slice(b",\"params\":[");
    out.extend_from_slice(if arg.is_empty() { b"null" } else { arg });
    out.extend_from_slice(b"],\"id\":");
    out.extend_from_slice(id.to_string().as_bytes());
    out.extend_from_slice(b"}\n");
}

/// A reply as a client reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The id of the request it answers (clients send numbers).
    pub id: u64,
    /// The result as JSON, or the error's text.
    pub outcome: Result<Vec<u8>, String>,
}

/// Parse one reply object. `Err`: it is not a reply this client could have
/// asked for (the connection is no longer trustworthy).
pub fn parse_response(bytes: &[u8]) -> Result<Response, RequestError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|err| RequestError::Syntax(err.to_string()))?;
    let Value::Object(object) = value else { return Err(RequestError::Shape("a reply is an object")) };
    let id = member(&object, "id")
        .and_then(Value::as_u64)
        .ok_or(RequestError::Shape("`id` must be the number of a request sent"))?;
    let outcome = match member(&object, "error") {
        None | Some(Value::Null) => {
            let result = member(&object, "result").unwrap_or(&Value::Null);
            Ok(serde_json::to_vec(result).map_err(|err| RequestError::Syntax(err.to_string()))?)
        }
        Some(Value::String(error)) => Err(error.clone()),
        // Other servers send objects (JSON-RPC 2.0 style): keep them whole.
        Some(other) => Err(other.to_string()),
    };
    Ok(Response { id, outcome })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_client_request_and_the_reply_to_it() {
        let mut out = Vec::new();
        encode_request("Arith.Multiply", br#"{"A":7,"B":8}"#, 3, &mut out);
        assert_eq!(out, b"{\"method\":\"Arith.Multiply\",\"params\":[{\"A\":7,\"B\":8}],\"id\":3}\n");
        let parsed = parse_request(&out[..out.len() - 1]).expect("a request");
        assert_eq!(
            (parsed.method.as_str(), parsed.params, parsed.id),
            ("Arith.Multiply", vec![json!({"A":7,"B":8})], json!(3))
        );

        let ok = parse_response(br#"{"id":3,"result":{"Quo":1},"error":null}"#).expect("a reply");
        assert_eq!(ok, Response { id: 3, outcome: Ok(br#"{"Quo":1}"#.to_vec()) });
        let failed = parse_response(br#"{"id":4,"result":null,"error":"divide by zero"}"#).expect("a reply");
        assert_eq!(failed.outcome, Err("divide by zero".to_owned()));
        assert!(parse_response(br#"{"id":"x","result":1}"#).is_err());
        assert!(parse_response(b"[1]").is_err());
        assert!(parse_response(b"{").is_err());
    }

    #[test]
    fn an_error_is_its_message_or_else_its_codes_name() {
        use crate::status::{Code, Status};
        assert_eq!(error_text(&Status::new(Code::NotFound, "no such key")), "no such key");
        assert_eq!(error_text(&Status::new(Code::Unavailable, "")), "UNAVAILABLE");
    }

    fn split_all(input: &[u8], chunk: usize, max: usize) -> Result<Vec<String>, StreamError> {
        let mut splitter = Splitter::default();
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            buf.extend_from_slice(piece);
            while let Some((start, end)) = splitter.next_object(&buf, max)? {
                // An object is at least `{}`: anything shorter would take
                // nothing from the buffer and loop here for ever.
                assert!(end >= start + 2, "object at {start}..{end}");
                out.push(String::from_utf8_lossy(&buf[start..end]).into_owned());
                buf.drain(..end);
                splitter.consumed(end);
            }
        }
        Ok(out)
    }

    #[test]
    fn pipelined_requests_split_whatever_the_reads() {
        let input =
            br#"{"method":"A.B","params":[{"s":"}{\"x"}],"id":1} {"id":2,"params":[[1,[2]]],"method":"A.C"}
{"method":"A.D","params":[],"id":3}"#;
        for chunk in [1, 2, 7, 1000] {
            let objects = split_all(input, chunk, 1024).expect("valid");
            assert_eq!(objects.len(), 3, "chunk {chunk}");
            assert!(objects[0].ends_with("\"id\":1}"));
            assert!(objects[2].contains("A.D"));
        }
    }

    #[test]
    fn the_stream_fails_on_non_objects_and_oversized_requests() {
        assert_eq!(split_all(b"[1,2]", 4, 100), Err(StreamError::NotAnObject { found: '[' }));
        assert_eq!(split_all(b"  x", 4, 100), Err(StreamError::NotAnObject { found: 'x' }));
        let long = format!(r#"{{"method":"{}"}}"#, "m".repeat(200));
        assert_eq!(split_all(long.as_bytes(), 16, 100), Err(StreamError::TooLarge { max: 100 }));
        // An unfinished object waits rather than failing.
        assert_eq!(split_all(br#"{"method":"#, 3, 100), Ok(Vec::new()));
    }

    #[test]
    fn requests_parse_with_members_in_any_case() {
        let request = parse_request(br#"{"Method":"Calculator.Add","PARAMS":[{"a":10,"b":50}],"Id":7}"#)
            .expect("valid");
        assert_eq!(request.method, "Calculator.Add");
        assert_eq!(request.params, vec![json!({"a": 10, "b": 50})]);
        assert_eq!(request.id, json!(7));
        let exact_wins = parse_request(br#"{"method":"A.B","METHOD":"C.D","id":"x"}"#).expect("valid");
        assert_eq!(exact_wins.method, "A.B");
        assert!(exact_wins.params.is_empty());
    }

    #[test]
    fn bad_requests_keep_their_id_when_they_have_one() {
        let (err, id) = parse_request(br#"{"params":[1],"id":9}"#).expect_err("no method");
        assert_eq!(err, RequestError::Shape("`method` must be a string"));
        assert_eq!(id, json!(9));
        let (err, id) = parse_request(br#"{"method":"A.B","params":5,"id":"k"}"#).expect_err("bad params");
        assert_eq!(err, RequestError::Shape("`params` must be an array"));
        assert_eq!(id, json!("k"));
        assert!(matches!(parse_request(b"{not json}"), Err((RequestError::Syntax(_), Value::Null))));
    }

    #[test]
    fn back_to_back_objects_in_one_read_split_exactly() {
        let objects = split_all(br#"{"id":1}{"id":2}[1]"#, 1000, 100);
        // The third is not an object: the stream fails after the two.
        assert_eq!(objects, Err(StreamError::NotAnObject { found: '[' }));
        let objects = split_all(br#"{"id":1}{"id":2}"#, 1000, 100).expect("valid");
        assert_eq!(objects, vec![r#"{"id":1}"#.to_owned(), r#"{"id":2}"#.to_owned()]);
    }

    #[test]
    fn brackets_inside_strings_are_not_structure() {
        let input = br#"{"m":"}"}{"m":"{["}{"m":"\"}"}"#;
        for chunk in [1, 3, 1000] {
            let objects = split_all(input, chunk, 100).expect("valid");
            assert_eq!(objects, [r#"{"m":"}"}"#, r#"{"m":"{["}"#, r#"{"m":"\"}"}"#], "chunk {chunk}");
        }
    }

    #[test]
    fn the_limit_counts_each_request_from_its_own_brace() {
        // An object of exactly the limit is fine, one byte more is not.
        let at_limit = format!(r#"{{"m":"{}"}}"#, "x".repeat(92));
        assert_eq!(at_limit.len(), 100);
        assert_eq!(split_all(at_limit.as_bytes(), 7, 100).map(|o| o.len()), Ok(1));
        let over = format!(r#"{{"m":"{}"}}"#, "x".repeat(93));
        assert_eq!(split_all(over.as_bytes(), 7, 100), Err(StreamError::TooLarge { max: 100 }));
        // Whitespace before a request is not part of it.
        let spaced = format!("{}{at_limit}", " ".repeat(60));
        assert_eq!(split_all(spaced.as_bytes(), 7, 100).map(|o| o.len()), Ok(1));
        // But whitespace alone may not run on past the limit.
        assert_eq!(split_all(&[b' '; 100], 7, 100), Ok(Vec::new()));
        assert_eq!(split_all(&[b'\n'; 101], 7, 100), Err(StreamError::TooLarge { max: 100 }));
    }

    #[test]
    fn the_splitter_knows_when_a_request_is_half_read() {
        let mut splitter = Splitter::default();
        let mut buf = b"  ".to_vec();
        assert_eq!(splitter.next_object(&buf, 100), Ok(None));
        assert!(!splitter.in_object(), "whitespace is not a request");
        buf.extend_from_slice(br#"{"id":[1"#);
        assert_eq!(splitter.next_object(&buf, 100), Ok(None));
        assert!(splitter.in_object());
        buf.extend_from_slice(b"]}");
        assert_eq!(splitter.next_object(&buf, 100), Ok(Some((2, 12))));
        assert!(!splitter.in_object());
    }

    #[test]
    fn request_shapes_go_accepts() {
        // A bare object is taken as the one parameter.
        let request = parse_request(br#"{"method":"A.B","params":{"a":1},"id":1}"#).expect("valid");
        assert_eq!(request.params, vec![json!({"a": 1})]);
        let request = parse_request(br#"{"method":"A.B","params":null}"#).expect("valid");
        assert!(request.params.is_empty());
        assert_eq!(request.id, Value::Null, "no id is a null id");
        let request = parse_request(br#"{"method":"A.B","params":[1,"two"]}"#).expect("valid");
        assert_eq!(request.params, vec![json!(1), json!("two")]);
        assert_eq!(parse_request(b"[1]"), Err((RequestError::Shape("a request is an object"), Value::Null)));
        assert_eq!(
            parse_request(br#"{"method":7,"id":3}"#),
            Err((RequestError::Shape("`method` must be a string"), json!(3)))
        );
    }

    #[test]
    fn responses_look_like_gos() {
        assert_eq!(encode_response(&json!(0), Ok(b"60")), b"{\"id\":0,\"result\":60,\"error\":null}\n");
        assert_eq!(
            encode_response(&json!(1), Err("division by \"zero\"")),
            b"{\"id\":1,\"result\":null,\"error\":\"division by \\\"zero\\\"\"}\n"
        );
        let reply: Value = serde_json::from_slice(&encode_response(&json!("a"), Ok(b""))).expect("JSON");
        assert_eq!(reply, json!({"id": "a", "result": null, "error": null}));
    }
}
