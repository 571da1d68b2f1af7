//! `#[courier::service(name = "..")]` and `#[courier(name = "..")]`: the
//! wire names replace the Rust ones on every protocol, and the Rust names
//! are unknown to callers. The calls here spell the wire names by hand, as
//! a client in another language would; the generated client is checked
//! too, but it would agree with the server even if both ignored a rename.

use std::time::Duration;

use bytes::Bytes;
use courier::{CallOptions, Channel, Code, Codec, ServerHandle};
use courier_tests::{http_post_once, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any one exchange may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(10);

/// Named `Ledger` on the wire; `add_funds` is `Credit`, `balance_of` keeps
/// its default wire name (`BalanceOf`).
#[courier::service(name = "Ledger", version = "1.0.0")]
pub trait Accounts {
    /// Add `amount`; the new balance.
    #[courier(name = "Credit")]
    async fn add_funds(&self, amount: i64) -> i64;
    /// The balance of `account` (always 7 here).
    async fn balance_of(&self, account: String) -> i64;
}

struct Books(std::sync::atomic::AtomicI64);

impl Accounts for Books {
    async fn add_funds(&self, amount: i64) -> i64 {
        self.0.fetch_add(amount, std::sync::atomic::Ordering::SeqCst) + amount
    }

    async fn balance_of(&self, _account: String) -> i64 {
        7
    }
}

async fn server() -> ServerHandle {
    courier::Server::builder()
        .add_service(AccountsServer::new(Books(std::sync::atomic::AtomicI64::new(0))))
        .bind("127.0.0.1:0")
        .await
        .expect("bind")
        .start()
}

fn json() -> CallOptions {
    CallOptions::new().with_codec(Codec::Json).with_timeout(PATIENCE)
}

#[test]
fn the_descriptor_carries_the_wire_names() {
    let descriptor = AccountsClient::DESCRIPTOR;
    assert_eq!(descriptor.name, "Ledger");
    let names: Vec<_> = descriptor.methods.iter().map(|m| m.full_name).collect();
    assert_eq!(names, ["Ledger.Credit", "Ledger.BalanceOf"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_calls_by_the_wire_names_work_and_the_rust_names_are_unknown() {
    within(Duration::from_secs(30), "native calls by name", async {
        let server = server().await;
        let channel = Channel::connect(server.local_addr().to_string()).await.expect("connect");
        let reply = channel.unary_bytes("Ledger.Credit", Bytes::from("5"), &json()).await;
        assert_eq!(reply.as_deref().ok(), Some(&b"5"[..]), "{reply:?}");
        let reply = channel.unary_bytes("Ledger.BalanceOf", Bytes::from(r#""acme""#), &json()).await;
        assert_eq!(reply.as_deref().ok(), Some(&b"7"[..]), "{reply:?}");
        for old in ["Accounts.AddFunds", "Accounts.Credit", "Ledger.AddFunds", "Ledger.add_funds"] {
            let err = channel.unary_bytes(old, Bytes::from("1"), &json()).await.expect_err(old);
            assert_eq!(err.code(), Code::Unimplemented, "{old}: {err}");
        }
        // The generated client speaks the wire names too.
        let client = AccountsClient::new(channel);
        assert_eq!(client.add_funds(2).await.expect("add_funds"), 7);
        server.shutdown().await.expect("shutdown");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_json_and_jsonrpc_route_by_the_wire_names() {
    within(Duration::from_secs(30), "HTTP and JSON-RPC calls by name", async {
        let server = server().await;
        let addr = server.local_addr();
        assert_eq!(http_post_once(addr, "/Ledger/Credit", "5").await, (200, "5".to_owned()));
        assert_eq!(http_post_once(addr, "/Ledger/BalanceOf", r#""acme""#).await, (200, "7".to_owned()));
        for old in ["/Accounts/AddFunds", "/Accounts/Credit", "/Ledger/AddFunds"] {
            let (status, body) = http_post_once(addr, old, "1").await;
            assert_eq!(status, 404, "no {old}: {body}");
            assert!(body.contains("UNIMPLEMENTED"), "{old}: {body}");
        }

        // JSON-RPC 1.0 (Go's net/rpc/jsonrpc): one request per line.
        let mut stream = within(PATIENCE, "connect", TcpStream::connect(addr)).await.expect("connect");
        let mut replies = Vec::new();
        for (id, method) in [(1, "Ledger.Credit"), (2, "Accounts.AddFunds")] {
            let request = format!(r#"{{"method":"{method}","params":[3],"id":{id}}}"#);
            within(PATIENCE, "write", stream.write_all(request.as_bytes())).await.expect("write");
            let mut line = Vec::new();
            while !line.ends_with(b"\n") {
                let mut byte = [0u8; 1];
                let read = within(PATIENCE, "a JSON-RPC reply", stream.read(&mut byte)).await.expect("read");
                assert_eq!(read, 1, "the server closed before replying to {method}");
                line.push(byte[0]);
            }
            replies.push(serde_json::from_slice::<serde_json::Value>(&line).expect("a JSON reply"));
        }
        assert_eq!(replies[0]["result"], 8, "{}", replies[0]);
        assert!(replies[0]["error"].is_null(), "{}", replies[0]);
        assert!(replies[1]["result"].is_null(), "{}", replies[1]);
        let error = replies[1]["error"].as_str().unwrap_or_else(|| panic!("an error: {}", replies[1]));
        assert!(error.contains("Accounts"), "{error}");
        server.shutdown().await.expect("shutdown");
    })
    .await;
}
