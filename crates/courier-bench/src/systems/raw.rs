//! Raw TCP: a 4-byte length and the payload each way, no framework. The
//! client keeps a window of requests in flight on one connection and the
//! server flushes only when it has no more requests buffered, so a burst
//! costs one write each way: the ceiling a framework can approach.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};

use super::BoxError;
use crate::load::Tally;

const MAX_FRAME: u32 = 16 << 20;
const BUFFER: usize = 64 * 1024;

/// A connected socket, driven by [`drive`].
#[derive(Clone)]
pub(crate) struct Connection {
    addr: SocketAddr,
}

pub(crate) async fn serve(listener: TcpListener) -> Result<(), BoxError> {
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = serve_connection(stream).await;
        });
    }
}

async fn serve_connection(stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (read, write) = stream.into_split();
    let mut read = BufReader::with_capacity(BUFFER, read);
    let mut write = BufWriter::with_capacity(BUFFER, write);
    let mut payload = Vec::new();
    loop {
        let Ok(len) = read.read_u32().await else { return Ok(()) };
        if len > MAX_FRAME {
            return Ok(());
        }
        payload.resize(len as usize, 0);
        read.read_exact(&mut payload).await?;
        write.write_u32(len).await?;
        write.write_all(&payload).await?;
        if read.buffer().is_empty() {
            write.flush().await?;
        }
    }
}

pub(crate) async fn connect(addr: SocketAddr) -> Result<Connection, BoxError> {
    // The socket is opened by `drive`, which owns it for the whole run.
    Ok(Connection { addr })
}

/// Keep `window` requests in flight on one connection until `end`.
pub(crate) async fn drive(
    connection: &Connection,
    window: usize,
    payload: &str,
    measure_from: Instant,
    end: Instant,
) -> Result<Tally, BoxError> {
    let stream = TcpStream::connect(connection.addr).await?;
    stream.set_nodelay(true)?;
    if window == 1 {
        return ping_pong(stream, payload, measure_from, end).await;
    }
    let (read, write) = stream.into_split();
    let permits = Arc::new(Semaphore::new(window));
    let (sent_tx, mut sent_rx) = mpsc::unbounded_channel::<Instant>();
    let frame: Vec<u8> = {
        let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(payload.as_bytes());
        frame
    };
    let writer = tokio::spawn({
        let permits = permits.clone();
        async move {
            let mut write = BufWriter::with_capacity(BUFFER, write);
            loop {
                let permit = match permits.try_acquire() {
                    Ok(permit) => permit,
                    Err(_) => {
                        // The window is full: send what is batched, then wait.
                        write.flush().await?;
                        permits.acquire().await.map_err(std::io::Error::other)?
                    }
                };
                permit.forget();
                let now = Instant::now();
                if now >= end {
                    break;
                }
                write.write_all(&frame).await?;
                if sent_tx.send(now).is_err() {
                    break;
                }
            }
            write.flush().await?;
            Ok::<_, std::io::Error>(())
        }
    });
    let mut read = BufReader::with_capacity(BUFFER, read);
    let mut tally = Tally::new();
    let mut reply = vec![0u8; payload.len()];
    while let Some(sent_at) = sent_rx.recv().await {
        let len = read.read_u32().await? as usize;
        if len != payload.len() {
            return Err("the echo differs from the payload".into());
        }
        read.read_exact(&mut reply).await?;
        let done = Instant::now();
        tally.record(sent_at, done, measure_from, end);
        permits.add_permits(1);
    }
    writer.await??;
    Ok(tally)
}

/// One call at a time on one task: write, read the echo, repeat. The
/// round-trip floor.
async fn ping_pong(
    mut stream: TcpStream,
    payload: &str,
    measure_from: Instant,
    end: Instant,
) -> Result<Tally, BoxError> {
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(payload.as_bytes());
    let mut reply = vec![0u8; frame.len()];
    let mut tally = Tally::new();
    loop {
        let started = Instant::now();
        if started >= end {
            return Ok(tally);
        }
        stream.write_all(&frame).await?;
        // Yield once before waiting for the reply. Measured here: without
        // it, tokio parks this worker and wakes the reply on another thread
        // via a futex, and the round trip takes twice as long (p50 65 us
        // against 33 us). courier's connection loop yields before each
        // flush, so without this the "floor" would be slower than courier.
        tokio::task::yield_now().await;
        stream.read_exact(&mut reply).await?;
        tally.record(started, Instant::now(), measure_from, end);
    }
}
