//! The JSON shapes a single-argument method accepts, on every protocol that
//! carries JSON: the bare value (`"k1"`, as Go's net/rpc sends its one
//! argument), or an object whose one member names the argument
//! (`{"key":"k1"}`). Anything else gets an error that names the method, the
//! argument and the shape expected. The rule is documented in
//! `crates/courier/src/arguments.rs`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use courier::{CallOptions, Channel, Codec, ServerHandle};
use courier_tests::{http_post_once, within};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// How long any one exchange may take before the test gives up.
const PATIENCE: Duration = Duration::from_secs(10);

/// How long any one test may take before it fails instead of hanging.
const TEST_LIMIT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    key: String,
    value: String,
}

#[courier::service]
pub trait Kv {
    /// One string argument.
    async fn get(&self, key: String) -> Option<String>;
    /// One argument whose own type has a field named like the argument.
    async fn put(&self, key: Entry) -> String;
    /// Two arguments: always an object (or an array), never unwrapped.
    async fn concat(&self, a: String, b: String) -> String;
}

struct Store;

impl Kv for Store {
    async fn get(&self, key: String) -> Option<String> {
        (key == "k1").then(|| "v1".to_owned())
    }

    async fn put(&self, key: Entry) -> String {
        format!("{}={}", key.key, key.value)
    }

    async fn concat(&self, a: String, b: String) -> String {
        a + &b
    }
}

async fn server() -> ServerHandle {
    courier::Server::builder()
        .add_service(KvServer::new(Store))
        .bind("127.0.0.1:0")
        .await
        .expect("bind")
        .start()
}

/// One JSON-RPC request on a raw socket; the parsed response.
async fn jsonrpc(addr: SocketAddr, method: &str, param: &str) -> serde_json::Value {
    tokio::time::timeout(PATIENCE, async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request = format!(r#"{{"method":"{method}","params":[{param}],"id":7}}"#);
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).await.expect("read");
        serde_json::from_str(&line).unwrap_or_else(|err| panic!("{err}: {line:?}"))
    })
    .await
    .expect("the JSON-RPC exchange took too long")
}

fn json() -> CallOptions {
    CallOptions::new().with_codec(Codec::Json).with_timeout(PATIENCE)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_json_takes_the_bare_value_or_an_object_naming_the_argument() {
    within(TEST_LIMIT, "http_json_takes_the_bare_value_or_an_object_naming_the_argument", async {
        let server = server().await;
        let addr = server.local_addr();

        assert_eq!(http_post_once(addr, "/Kv/Get", r#""k1""#).await, (200, r#""v1""#.to_owned()));
        assert_eq!(http_post_once(addr, "/Kv/Get", r#"{"key":"k1"}"#).await, (200, r#""v1""#.to_owned()));
        assert_eq!(http_post_once(addr, "/Kv/Get", r#"{"Key":"k1"}"#).await, (200, r#""v1""#.to_owned()));

        // The argument's own type is an object with a `key` field: the body is
        // that object; wrapped in `{"key": ...}` it is unwrapped.
        let entry = r#"{"key":"k","value":"v"}"#;
        assert_eq!(http_post_once(addr, "/Kv/Put", entry).await, (200, r#""k=v""#.to_owned()));
        assert_eq!(
            http_post_once(addr, "/Kv/Put", &format!(r#"{{"key":{entry}}}"#)).await,
            (200, r#""k=v""#.to_owned())
        );

        // A key that does not name the argument: a 400 that says what to send.
        let (status, body) = http_post_once(addr, "/Kv/Get", r#"{"name":"k1"}"#).await;
        assert_eq!(status, 400, "{body}");
        let error: serde_json::Value = serde_json::from_str(&body).expect("an error body");
        let message = error["message"].as_str().expect("a message");
        assert!(
            message.contains(
                "Kv.Get takes its one argument `key: String` as the body itself, e.g. \"text\", not wrapped \
                 in an object; got an object with key `name`"
            ),
            "{message}"
        );
        assert!(message.contains("invalid type: map, expected a string"), "{message}");

        // Several arguments stay an object; nothing is unwrapped for them.
        assert_eq!(
            http_post_once(addr, "/Kv/Concat", r#"{"a":"x","b":"y"}"#).await,
            (200, r#""xy""#.to_owned())
        );
        let (status, _) = http_post_once(addr, "/Kv/Concat", r#"{"a":{"a":"x","b":"y"}}"#).await;
        assert_eq!(status, 400);
        let _ = server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonrpc_takes_the_bare_value_or_an_object_naming_the_argument() {
    within(TEST_LIMIT, "jsonrpc_takes_the_bare_value_or_an_object_naming_the_argument", async {
        let server = server().await;
        let addr = server.local_addr();

        for param in [r#""k1""#, r#"{"key":"k1"}"#, r#"{"KEY":"k1"}"#] {
            let reply = jsonrpc(addr, "Kv.Get", param).await;
            assert_eq!(reply["result"], "v1", "{param}: {reply}");
            assert!(reply["error"].is_null(), "{param}: {reply}");
        }
        let reply = jsonrpc(addr, "Kv.Get", r#"{"k":"k1"}"#).await;
        let error = reply["error"].as_str().unwrap_or_else(|| panic!("an error: {reply}"));
        assert!(error.contains("Kv.Get takes its one argument `key: String` as the body itself"), "{error}");
        assert!(error.contains("got an object with key `k`"), "{error}");
        let _ = server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_json_and_grpc_json_unwrap_the_same_way_and_binary_is_unchanged() {
    within(TEST_LIMIT, "native_json_and_grpc_json_unwrap_the_same_way_and_binary_is_unchanged", async {
        let server = server().await;
        let addr = server.local_addr().to_string();

        let native = Channel::connect(addr.clone()).await.expect("connect");
        let grpc = Channel::builder(addr.clone()).grpc().connect().await.expect("connect over gRPC");
        for (protocol, channel) in [("native", &native), ("gRPC", &grpc)] {
            for body in [r#""k1""#, r#"{"key":"k1"}"#] {
                let reply = channel.unary_bytes("Kv.Get", Bytes::from(body), &json()).await;
                assert_eq!(reply.as_deref().ok(), Some(&br#""v1""#[..]), "{protocol} {body}: {reply:?}");
            }
            let status = channel
                .unary_bytes("Kv.Get", Bytes::from(r#"[1]"#), &json())
                .await
                .expect_err("an array is not a string");
            assert_eq!(status.code(), courier::Code::InvalidArgument, "{protocol}: {status}");
            assert!(status.message().contains("got an array"), "{protocol}: {status}");
        }

        // The generated client, binary codec: untouched by any of this.
        let client = KvClient::new(native);
        assert_eq!(client.get("k1".into()).await.expect("get"), Some("v1".to_owned()));
        let entry = Entry { key: "k".into(), value: "v".into() };
        assert_eq!(client.put(entry.clone()).await.expect("put"), "k=v");
        assert_eq!(client.with_codec(Codec::Json).put(entry).await.expect("put as JSON"), "k=v");
        let _ = server.shutdown().await;
    })
    .await;
}
