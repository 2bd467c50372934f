//! A lean connection's socket: shared by its actor and the readiness stream that wakes the actor
//! when bytes arrive (nothing is read until the actor asks, and no buffer is held meanwhile),
//! the per-thread scratch buffer every stream of a worker reads into, and the two things done
//! before an actor exists: reading a request head within its time limit, and refusing it.

use std::cell::{Cell, RefCell};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use actix::prelude::*;
use futures_util::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::http1::{self, MAX_HEAD};
use super::wire::SCRATCH_BYTES;
use crate::error::ApiError;

thread_local! {
    /// The read buffer every stream of this worker thread shares.
    pub static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; SCRATCH_BYTES].into_boxed_slice());
}

/// The socket, shared by an actor and its readiness stream.
pub struct Conn {
    pub sock: TcpStream,
    /// Set while the actor does not want to read; the readiness stream then ends.
    pub paused: Cell<bool>,
}

impl Conn {
    pub fn new(sock: TcpStream) -> Rc<Conn> {
        Rc::new(Conn {
            sock,
            paused: Cell::new(false),
        })
    }
}

/// Yields whenever the socket is readable, until the connection is paused.
pub struct Readable(pub Rc<Conn>);

impl Stream for Readable {
    type Item = std::io::Result<()>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        if self.0.paused.get() {
            return Poll::Ready(None);
        }
        match self.0.sock.poll_read_ready(cx) {
            Poll::Ready(r) => Poll::Ready(Some(r)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Calls `then` on the actor once the socket is writable (`true`) or has failed (`false`).
pub fn when_writable<A>(
    conn: &Rc<Conn>,
    act: &A,
    ctx: &mut Context<A>,
    then: fn(&mut A, &mut Context<A>, bool),
) where
    A: Actor<Context = Context<A>>,
{
    let conn = conn.clone();
    ctx.spawn(
        async move { conn.sock.writable().await }
            .into_actor(act)
            .map(move |res, act, ctx| then(act, ctx, res.is_ok())),
    );
}

/// How reading a request head ended.
pub enum Head<T> {
    Parsed(T),
    /// Malformed or too large: refuse with this reason.
    Bad(&'static str),
    /// The client went away or ran out of time: nothing to answer.
    Gone,
}

/// Reads a request head until `parse` accepts it (`Ok(Some)`), refuses it, or `MAX_HEAD`
/// bytes or `timeout` pass.
pub async fn read_head<T>(
    io: &mut TcpStream,
    timeout: Duration,
    parse: impl Fn(&[u8]) -> Result<Option<T>, &'static str>,
) -> Head<T> {
    let read = async {
        let mut head = Vec::with_capacity(1024);
        let mut chunk = [0u8; 1024];
        loop {
            let n = io.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
            }
            head.extend_from_slice(&chunk[..n]);
            match parse(&head) {
                Ok(Some(t)) => return Ok(Head::Parsed(t)),
                Ok(None) if head.len() > MAX_HEAD => {
                    return Ok(Head::Bad("request head too large"))
                }
                Ok(None) => {}
                Err(why) => return Ok(Head::Bad(why)),
            }
        }
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(head)) => head,
        Ok(Err(_)) | Err(_) => Head::Gone,
    }
}

/// Answers a request with an error and closes the connection.
pub async fn refuse(mut io: TcpStream, e: &ApiError) {
    let body = http1::refusal(e);
    let _ = tokio::time::timeout(Duration::from_secs(2), io.write_all(&body)).await;
    let _ = io.shutdown().await;
}
