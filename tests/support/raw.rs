//! Clients driven by hand, byte by byte, for protocols courier's own
//! client does not speak (JSON-RPC, HTTP/1.1), and a bare HTTP/2 client:
//! to send what a well-behaved client never would, and to see exactly what
//! the server answers.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::wait::within;

/// An HTTP/2 connection to `addr` (prior knowledge, no TLS), its
/// connection task spawned; connecting and the handshake under 5 s each.
pub async fn h2_client(addr: SocketAddr) -> h2::client::SendRequest<bytes::Bytes> {
    let tcp = within(Duration::from_secs(5), "connect", TcpStream::connect(addr)).await.expect("connect");
    let (client, connection) = within(Duration::from_secs(5), "the h2 handshake", h2::client::handshake(tcp))
        .await
        .expect("h2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A JSON-RPC connection driven by hand.
pub struct JsonRpc {
    /// The connection.
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl JsonRpc {
    /// Connect to `addr`.
    pub async fn connect(addr: SocketAddr) -> JsonRpc {
        let stream = within(Duration::from_secs(5), "connect", TcpStream::connect(addr)).await;
        JsonRpc { stream: stream.expect("connect"), buf: Vec::new() }
    }

    /// Send `bytes` as they are.
    pub async fn send(&mut self, bytes: &[u8]) {
        within(Duration::from_secs(10), "write", self.stream.write_all(bytes)).await.expect("write");
    }

    /// The next reply, or `None` once the server closes.
    pub async fn reply(&mut self) -> Option<Value> {
        loop {
            let mut values = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Value>();
            if let Some(Ok(value)) = values.next() {
                let end = values.byte_offset();
                self.buf.drain(..end);
                return Some(value);
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut chunk))
                .await
                .expect("the server answers or closes within 5 s")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Send a request and wait for its reply.
    pub async fn call(&mut self, method: &str, params: Value, id: u64) -> Value {
        let request = json!({"method": method, "params": [params], "id": id}).to_string();
        self.send(request.as_bytes()).await;
        self.reply().await.expect("a reply")
    }
}

/// `POST path` with a JSON body on a fresh connection that closes after
/// the answer (within 10 s); the status code and the body.
pub async fn http_post_once(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    within(Duration::from_secs(10), "an HTTP exchange", async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {response:?}"));
        let (_, body) = response.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no body in {response:?}"));
        (status, body.to_owned())
    })
    .await
}

/// One HTTP/1.1 request on a kept-alive connection, by hand.
pub async fn http_post(stream: &mut TcpStream, path: &str, body: &str) -> (u16, String) {
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    within(Duration::from_secs(10), "write", stream.write_all(request.as_bytes())).await.expect("write");
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("an answer within 5 s")
            .expect("read");
        assert!(n > 0, "the server closed a kept-alive connection");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        let Some((head, rest)) = text.split_once("\r\n\r\n") else { continue };
        let length: usize = head
            .lines()
            .find_map(|line| {
                line.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned())
            })
            .and_then(|v| v.parse().ok())
            .expect("a content-length");
        if rest.len() >= length {
            let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status");
            return (status, rest[..length].to_owned());
        }
    }
}
