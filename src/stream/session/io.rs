//! A session's socket work. Reading: the actor is woken when the socket is readable and reads
//! into its worker thread's scratch buffer; the `Inbox` hands over whole messages. When
//! `stream.max_inflight` requests are being served, or the outbound queue is half full, it stops
//! reading: a client that sends faster than it is served is slowed by TCP, never dropped.
//! Writing: replies wait in the `Outbox` and are written without blocking; search results are
//! produced lazily from the shard merge while the queue has room, in rank order, one search after
//! another.

use std::time::Instant;

use actix::prelude::*;
use bytes::Bytes;
use serde_json::json;

use super::Session;
use crate::service::call::took_ms;
use crate::stream::conn::{when_writable, Readable, SCRATCH};
use crate::stream::inbox::Flow;
use crate::stream::proto;
use crate::stream::wire::{self, close, WireError};

/// Socket reads (of up to `wire::SCRATCH_BYTES` each) one wake-up may do before yielding.
const READS_PER_WAKE: usize = 8;
/// First byte of a server pong frame (FIN + opcode 0xA).
const PONG_FIRST_BYTE: u8 = 0x8A;

impl Session {
    /// While closing, reading goes on (the peer's close frame ends the handshake).
    pub(super) fn wants_pause(&self) -> bool {
        if self.closing.is_some() {
            return false;
        }
        // A federation client does not correlate replies: one request at a time keeps them in
        // order.
        self.draining
            || self.subscribing
            || self.inflight.len() >= self.cfg().max_inflight
            || (self.fed.is_some() && !self.inflight.is_empty())
            || self.out.past(self.bounds(), 2)
    }

    pub(super) fn pause(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.reader.take() {
            if self.closing.is_none() && !self.draining && !self.done {
                metrics::counter!("ruvector_stream_read_pauses_total").increment(1);
            }
            self.conn.paused.set(true);
            ctx.cancel_future(h);
        }
    }

    /// Reads again once nothing holds it back (first whatever complete frames are pending).
    pub(super) fn resume(&mut self, ctx: &mut Context<Self>) {
        if self.reader.is_some() || self.wants_pause() || self.done {
            return;
        }
        if self.inbox.has_pending() {
            self.ingest(&mut [], ctx);
            if self.wants_pause() {
                return;
            }
        }
        self.conn.paused.set(false);
        self.reader = Some(ctx.add_stream(Readable(self.conn.clone())));
    }

    pub(super) fn read_some(&mut self, ctx: &mut Context<Self>) {
        enum Next {
            More,
            Stop,
            Gone,
        }
        // A bounded number of reads per wake-up: a client that writes without pause must not
        // keep this worker thread (and every other stream on it) in one loop. Readiness stays
        // set, so the next poll continues after the other tasks had their turn.
        for _ in 0..READS_PER_WAKE {
            if self.wants_pause() {
                self.pause(ctx);
                return;
            }
            let next = SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                match self.conn.sock.try_read(&mut scratch[..]) {
                    Ok(0) => Next::Gone,
                    Ok(n) => {
                        self.ingest(&mut scratch[..n], ctx);
                        Next::More
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Next::Stop,
                    Err(_) => Next::Gone,
                }
            });
            match next {
                Next::More => continue,
                Next::Stop => return,
                Next::Gone => {
                    self.finish("eof", ctx);
                    return;
                }
            }
        }
    }

    /// Hands the whole messages of what is pending plus `data` to `on_message`.
    fn ingest(&mut self, data: &mut [u8], ctx: &mut Context<Self>) {
        let max = self.cfg().max_frame_bytes;
        let mut inbox = std::mem::take(&mut self.inbox);
        let fed = inbox.feed(data, max, &mut |m| {
            // A bug in one message's handling must not unwind through the worker thread (and
            // every other stream on it): this stream alone closes with 1011.
            let handled =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.on_message(m, ctx)));
            if handled.is_err() {
                metrics::counter!("ruvector_stream_panics_total").increment(1);
                tracing::error!("handling a stream frame panicked; the stream is closed");
                self.close(close::INTERNAL, "internal error", ctx);
            }
            if self.done || (self.closing.is_some() && handled.is_err()) {
                Flow::Stop
            } else if self.closing.is_none() && self.wants_pause() {
                Flow::Pause
            } else {
                Flow::Go
            }
        });
        self.inbox = inbox;
        if let Err(WireError::Close(code, why)) = fed {
            self.close(code, why, ctx);
        }
    }

    /// Queues a reply frame. Replies to requests are bounded by `max_inflight` and by pausing
    /// reads, so only pushed events can overflow the queue (see `Handler<Push>`).
    pub(super) fn enqueue(&mut self, f: Bytes, kind: &'static str) {
        if self.closing.is_some() || self.done {
            return;
        }
        metrics::counter!("ruvector_stream_frames_out_total", "type" => kind).increment(1);
        if self.out.is_empty() {
            self.last_progress = Instant::now();
        }
        self.out.push(f);
    }

    /// Search results while the queue has room: in rank order, one search after another.
    fn pump(&mut self) {
        let b = self.bounds();
        while self.out.cost() < b.bytes / 4 && self.out.len() < (b.frames / 2).max(1) {
            let Some(c) = self.cursors.front_mut() else {
                return;
            };
            let (f, kind, done) = match c.ranked.next() {
                Some(hit) => {
                    c.sent += 1;
                    if c.sent == 1 {
                        metrics::histogram!("ruvector_stream_first_result_seconds")
                            .record(c.started.elapsed().as_secs_f64());
                    }
                    let f = wire::text_frame(&proto::result_frame(&c.id, c.query_id, c.sent, &hit));
                    (f, "result", false)
                }
                None => {
                    metrics::histogram!("ruvector_stream_search_seconds")
                        .record(c.started.elapsed().as_secs_f64());
                    let f = wire::text_frame(&json!({
                        "type": "search_complete", "id": c.id, "query_id": c.query_id,
                        "total_results": c.sent, "took_ms": took_ms(c.started),
                    }));
                    (f, "search_complete", true)
                }
            };
            self.enqueue(f, kind);
            if done {
                self.cursors.pop_front();
                // `end` needs the context: `flush` settles it.
                self.finished_cursors += 1;
            }
        }
    }

    /// Writes what the socket takes without blocking; waits for writability otherwise.
    pub(super) fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.done {
            return;
        }
        loop {
            self.pump();
            while self.finished_cursors > 0 {
                self.finished_cursors -= 1;
                self.end(ctx);
            }
            if self.out.is_empty() {
                break;
            }
            let mut progress = false;
            let mut pong_out = false;
            let written = self.out.write_to(&self.conn.sock, |f| {
                // Progress is a whole frame out: a client reading a byte a second does not keep
                // its write timeout fresh.
                progress = true;
                pong_out |= f.first() == Some(&PONG_FIRST_BYTE);
            });
            if progress {
                self.last_progress = Instant::now();
            }
            if pong_out {
                self.pong_queued = false;
            }
            match written {
                Ok(0) => {
                    self.finish("eof", ctx);
                    return;
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.wait_writable(ctx);
                    return;
                }
                Err(_) => {
                    self.finish("eof", ctx);
                    return;
                }
            }
        }
        if self.closing.is_some() && self.peer_closed {
            // Our reply to the peer's close is out: the handshake is complete.
            self.finish("closed", ctx);
            return;
        }
        self.resume(ctx);
    }

    fn wait_writable(&mut self, ctx: &mut Context<Self>) {
        if self.waiting_writable {
            return;
        }
        self.waiting_writable = true;
        let conn = self.conn.clone();
        when_writable(&conn, self, ctx, |act, ctx, ok| {
            act.waiting_writable = false;
            if ok {
                act.flush(ctx);
            } else {
                act.finish("eof", ctx);
            }
        });
    }
}
