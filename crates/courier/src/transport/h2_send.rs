//! Writing to an HTTP/2 stream no faster than the peer reads it.
//!
//! h2's `send_data` accepts any amount and buffers what the peer's
//! flow-control window does not yet allow, without bound. A peer that
//! keeps asking and never reads (never sends WINDOW_UPDATE) would grow that
//! buffer for as long as it likes. Here data is handed to h2 only as
//! capacity is assigned to the stream, so what h2 holds per stream stays
//! within its window and `max_send_buffer_size`; the rest waits, in the
//! caller's future, for at most a stall timeout.

use std::future::poll_fn;
use std::time::Duration;

use bytes::Bytes;
use h2::{Reason, SendStream};

/// Send `data` (not ending the stream), waiting for flow-control capacity
/// as needed, but no longer than `stall` at a time: a peer that grants no
/// window for that long is not reading, and the stream is reset (`CANCEL`)
/// so what waits for it is freed. Fails when the stream is reset or the
/// connection fails.
pub(crate) async fn send_data(
    stream: &mut SendStream<Bytes>,
    mut data: Bytes,
    stall: Option<Duration>,
) -> Result<(), h2::Error> {
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        // Capacity is usually assigned at once (when the windows are open),
        // so the common case never waits.
        let mut available = stream.capacity();
        if available == 0 {
            let granted = poll_fn(|task| stream.poll_capacity(task));
            let granted = match stall {
                None => granted.await,
                Some(stall) => match tokio::time::timeout(stall, granted).await {
                    Ok(granted) => granted,
                    Err(_) => {
                        stream.send_reset(Reason::CANCEL);
                        return Err(Reason::CANCEL.into());
                    }
                },
            };
            available = match granted {
                Some(Ok(n)) => n,
                Some(Err(err)) => return Err(err),
                // The stream's sending side is closed.
                None => return Err(Reason::STREAM_CLOSED.into()),
            };
        }
        let chunk = data.split_to(available.min(data.len()));
        stream.send_data(chunk, false)?;
    }
    Ok(())
}
