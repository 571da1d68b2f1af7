//! TCP specifics: socket options and closing without losing the last words.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Options every courier TCP connection gets.
pub(crate) fn configure(stream: &TcpStream) {
    // Calls are small and latency-bound; Nagle's algorithm would hold a
    // request back waiting for the previous one's ACK.
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(%err, "could not set TCP_NODELAY");
    }
}

/// After our final frames are written and the write side shut down, read
/// and discard what the peer still sends for a short while before closing.
///
/// Closing a socket with unread bytes in its receive buffer makes the kernel
/// send RST, and an RST can destroy data the peer has not read yet, such as
/// the goaway explaining why we closed. Lingering (as nginx's
/// `lingering_close` does) lets that explanation arrive.
pub(crate) async fn linger<R: tokio::io::AsyncRead + Unpin>(
    mut read: R,
    max_time: Duration,
    max_bytes: usize,
) {
    let mut scratch = vec![0u8; 16 * 1024];
    let mut discarded = 0usize;
    let _ = tokio::time::timeout(max_time, async {
        while discarded < max_bytes {
            match read.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => discarded += n,
            }
        }
    })
    .await;
}
