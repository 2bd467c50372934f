//! The WebSocket session actor: one per stream, owning its socket.
//!
//! Reading: the actor is woken when the socket is readable and reads into its worker thread's
//! scratch buffer (see `wire`); complete frames are handled in place. When `stream.max_inflight`
//! requests are being served, or the outbound queue is half full, it stops reading: a client that
//! sends faster than it is served is slowed by TCP, never dropped.
//!
//! Writing: replies are queued as ready-made frames (bounded in frames and bytes) and written
//! without blocking; the queue's memory is released whenever it empties. Search results are
//! produced lazily from the shard merge while the queue has room, in rank order, one request
//! after another. Pushed events (subscriptions) that would overflow the queue close the stream
//! with 4002, as does queued output that makes no progress for `stream.write_timeout_ms`.
//!
//! Timers are not per stream: the stream registry's sweeper sends every session a `Tick`, on
//! which it pings when quiet, closes with 4001 when idle and enforces the write timeout.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::IoSlice;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::web;
use bytes::Bytes;
use futures_util::Stream;
use ruvector_actors::hub::{Delivery, Sink, StandingQuery};
use ruvector_actors::index::filter::Filter;
use ruvector_actors::router::{Lookup, Ranked};
use ruvector_actors::shard::WriteOp;
use ruvector_actors::types::validate_vector;
use ruvector_actors::EngineError;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tungstenite::protocol::frame::coding::Control;

use super::proto::{self, Request};
use super::wire::{self, close, Incoming, Parsed, WireError};
use super::Permit;
use crate::auth::{Principal, Scope};
use crate::http::error::ApiError;
use crate::http::rest::{self, DEFAULT_COLLECTION};
use crate::http::AppState;
use crate::supervise::{Class, InFlight};

thread_local! {
    /// The read buffer every stream of this worker thread shares.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; wire::SCRATCH_BYTES].into_boxed_slice());
}

/// The socket, shared by the actor and its readiness stream.
struct Conn {
    sock: TcpStream,
    /// Set while the session does not want to read; the readiness stream then ends.
    paused: Cell<bool>,
}

/// Yields whenever the socket is readable.
struct Readable(Rc<Conn>);

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

/// A subscription event for this session.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Push(pub Delivery);

/// The session's mailbox was full when the hub had an event for it: slow consumer.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Overflow;

/// Heartbeat, idle and write-timeout check (from the registry's sweeper).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Tick;

/// Load shedding: close this idle stream (4001).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseIdle;

/// The server is draining: finish in-flight requests, then close with 1001.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

struct WsSink(Addr<Session>);

impl Sink for WsSink {
    fn deliver(&self, d: Delivery) -> bool {
        match self.0.try_send(Push(d)) {
            Ok(()) => true,
            Err(SendError::Full(_)) => {
                self.0.do_send(Overflow);
                false
            }
            Err(SendError::Closed(_)) => false,
        }
    }
}

/// A search whose results are being sent.
struct Cursor {
    id: Value,
    query_id: u64,
    ranked: Ranked,
    sent: usize,
    started: Instant,
}

pub struct Session {
    app: web::Data<AppState>,
    /// `None` until an `auth` frame when authentication is on and the upgrade carried none.
    principal: Option<Arc<Principal>>,
    /// The client's last frame, for the registry (idle closing under load).
    activity: Option<Arc<AtomicU64>>,
    /// Frames refused by the rate limiter in a row that came before the retry time given.
    refusals: u32,
    /// The retry time given with the last refusal.
    retry_at: Option<Instant>,
    opened: Instant,
    conn: Rc<Conn>,
    _permit: Permit,
    reader: Option<SpawnHandle>,
    /// The tail of a frame that has not fully arrived (empty and unallocated otherwise).
    inbuf: Vec<u8>,
    /// A fragmented message being reassembled: (is text, bytes so far).
    frag: Option<(bool, Vec<u8>)>,
    out: VecDeque<Bytes>,
    out_bytes: usize,
    /// Bytes of the front frame already written.
    front_off: usize,
    waiting_writable: bool,
    inflight: usize,
    /// One admission count per request being served.
    inflight_guards: Vec<InFlight>,
    cursors: VecDeque<Cursor>,
    /// Searches whose last frame `pump` queued, not yet settled with `end`.
    finished_cursors: usize,
    /// (subscription, stored collection name, the client's name for it)
    subs: Vec<(u64, Arc<str>, Arc<str>)>,
    last_seen: Instant,
    last_ping: Instant,
    last_progress: Instant,
    /// A pong is queued and not yet written: another ping needs no second one.
    pong_queued: bool,
    /// Control frames (pings, pongs) received in the current one-second window.
    control_frames: u32,
    control_window: Instant,
    closing: Option<Instant>,
    /// The peer sent its close frame.
    peer_closed: bool,
    draining: bool,
    done: bool,
}

/// Socket reads (of up to `wire::SCRATCH_BYTES` each) one wake-up may do before yielding.
const READS_PER_WAKE: usize = 8;
/// First byte of a server pong frame (FIN + opcode 0xA).
const PONG_FIRST_BYTE: u8 = 0x8A;
/// What one queued frame costs beyond its bytes (the `Bytes` handle, its allocation, its queue
/// slot): a 2-byte pong is not free, so it is not counted as 2 bytes.
const FRAME_OVERHEAD: usize = 96;

fn cost(f: &Bytes) -> usize {
    f.len() + FRAME_OVERHEAD
}

impl Session {
    /// Starts the session actor on the current thread for an upgraded socket; `early` holds
    /// bytes the client sent right after its upgrade request.
    pub fn start(
        app: web::Data<AppState>,
        principal: Option<Arc<Principal>>,
        sock: TcpStream,
        permit: Permit,
        early: Vec<u8>,
    ) {
        let now = Instant::now();
        let session = Session {
            app,
            principal,
            activity: None,
            refusals: 0,
            retry_at: None,
            opened: now,
            conn: Rc::new(Conn {
                sock,
                paused: Cell::new(false),
            }),
            _permit: permit,
            reader: None,
            inbuf: early,
            frag: None,
            out: VecDeque::new(),
            out_bytes: 0,
            front_off: 0,
            waiting_writable: false,
            inflight: 0,
            inflight_guards: Vec::new(),
            cursors: VecDeque::new(),
            finished_cursors: 0,
            subs: Vec::new(),
            last_seen: now,
            last_ping: now,
            last_progress: now,
            pong_queued: false,
            control_frames: 0,
            control_window: now,
            closing: None,
            peer_closed: false,
            draining: false,
            done: false,
        };
        session.start();
    }

    fn cfg(&self) -> &crate::settings::StreamSettings {
        &self.app.settings.stream
    }

    // ---------- reading ----------

    /// While closing, reading goes on (the peer's close frame ends the handshake).
    fn wants_pause(&self) -> bool {
        if self.closing.is_some() {
            return false;
        }
        self.draining
            || self.inflight >= self.cfg().max_inflight
            || self.out_bytes >= self.cfg().max_outbound_bytes / 2
            || self.out.len() >= self.cfg().max_outbound_messages / 2
    }

    fn pause(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.reader.take() {
            if self.closing.is_none() && !self.draining && !self.done {
                metrics::counter!("ruvector_stream_read_pauses_total").increment(1);
            }
            self.conn.paused.set(true);
            ctx.cancel_future(h);
        }
    }

    /// Reads again once nothing holds it back (first whatever complete frames wait in `inbuf`).
    fn resume(&mut self, ctx: &mut Context<Self>) {
        if self.reader.is_some() || self.wants_pause() || self.done {
            return;
        }
        if !self.inbuf.is_empty() {
            self.ingest(&mut [], ctx);
            if self.wants_pause() {
                return;
            }
        }
        self.conn.paused.set(false);
        self.reader = Some(ctx.add_stream(Readable(self.conn.clone())));
    }

    fn read_some(&mut self, ctx: &mut Context<Self>) {
        enum Next {
            More,
            Stop,
            Gone,
        }
        // A bounded number of reads per wake-up: a client that writes without pause must not
        // keep this worker thread (and every other stream on it) in one loop. Readiness stays
        // set, so the next poll continues after the other tasks had their turn (tokio's
        // cooperative budget applies to that poll).
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

    /// Handles the complete frames of `inbuf` + `data`, keeping an incomplete tail.
    fn ingest(&mut self, data: &mut [u8], ctx: &mut Context<Self>) {
        if self.inbuf.is_empty() {
            let used = self.frames(data, ctx);
            if used < data.len() && !self.done {
                let rest = &data[used..];
                // Only what has arrived: a declared length is a claim, not bytes (a client
                // announcing a large frame and sending nothing must cost nothing).
                self.inbuf = rest.to_vec();
            }
        } else {
            let mut buf = std::mem::take(&mut self.inbuf);
            buf.extend_from_slice(data);
            let used = self.frames(&mut buf, ctx);
            if used < buf.len() && !self.done {
                buf.drain(..used);
                if buf.capacity() > 2 * buf.len() + 4096 {
                    buf.shrink_to_fit();
                }
                self.inbuf = buf;
            }
        }
    }

    /// Handles complete frames at the start of `buf`; returns the bytes used.
    fn frames(&mut self, buf: &mut [u8], ctx: &mut Context<Self>) -> usize {
        let max = self.cfg().max_frame_bytes;
        let mut pos = 0;
        while pos < buf.len() && !self.done {
            if self.closing.is_none() && self.wants_pause() {
                break;
            }
            match wire::parse_frame(&mut buf[pos..], max) {
                Err(WireError::Close(code, why)) => {
                    self.close(code, why, ctx);
                    return buf.len();
                }
                Ok(Parsed::Partial(_)) => return pos,
                Ok(Parsed::Frame(frame, used)) => {
                    // A bug in one frame's handling must not unwind through the worker thread
                    // (and every other stream on it): this stream alone closes with 1011.
                    let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        self.on_frame(frame, ctx)
                    }));
                    if handled.is_err() {
                        metrics::counter!("ruvector_stream_panics_total").increment(1);
                        tracing::error!("handling a stream frame panicked; the stream is closed");
                        self.close(close::INTERNAL, "internal error", ctx);
                        return buf.len();
                    }
                    pos += used;
                }
            }
        }
        pos
    }

    fn on_frame(&mut self, frame: Incoming<'_>, ctx: &mut Context<Self>) {
        self.last_seen = Instant::now();
        if let Some(a) = &self.activity {
            a.store(self.app.streams.now_ms(), Ordering::Relaxed);
        }
        if self.closing.is_some() {
            // Our close frame is out: only the peer's close matters now.
            if let Incoming::Close(_) = frame {
                self.finish("closed", ctx);
            }
            return;
        }
        match frame {
            Incoming::Text(t) => {
                if self.frag.is_some() {
                    self.close(
                        close::PROTOCOL,
                        "data frame inside a fragmented message",
                        ctx,
                    );
                } else {
                    self.on_text(t, ctx);
                }
            }
            Incoming::Binary => self.binary(),
            Incoming::Ping(p) => {
                if self.control_flood(ctx) {
                    return;
                }
                // One pending pong answers every ping before it (RFC 6455 §5.5.3 allows
                // answering only the most recent), so a ping flood queues nothing more.
                if !self.pong_queued {
                    self.pong_queued = true;
                    let f = wire::control_frame(Control::Pong, p);
                    self.enqueue(f, "ws_pong");
                }
            }
            Incoming::Pong => {
                self.control_flood(ctx);
            }
            Incoming::Close(code) => {
                self.peer_closed = true;
                self.close(code.unwrap_or(close::NORMAL), "", ctx);
            }
            Incoming::Fragment {
                first,
                payload,
                last,
            } => {
                let max = self.cfg().max_frame_bytes;
                match (first, self.frag.as_mut()) {
                    (Some(text), None) => self.frag = Some((text, payload.to_vec())),
                    (None, Some((_, buf))) => {
                        if buf.len() + payload.len() > max {
                            self.close(close::TOO_BIG, "message too big", ctx);
                            return;
                        }
                        buf.extend_from_slice(payload);
                    }
                    _ => {
                        self.close(close::PROTOCOL, "bad fragment sequence", ctx);
                        return;
                    }
                }
                if last {
                    if let Some((text, msg)) = self.frag.take() {
                        if text {
                            self.on_text(&msg, ctx);
                        } else {
                            self.binary();
                        }
                    }
                }
            }
        }
    }

    /// Counts a control frame; a stream past `stream.max_control_frames_per_s` is closed with
    /// 1008 (it does nothing but cost the server).
    fn control_flood(&mut self, ctx: &mut Context<Self>) -> bool {
        let now = Instant::now();
        if now.duration_since(self.control_window) >= Duration::from_secs(1) {
            self.control_window = now;
            self.control_frames = 0;
        }
        self.control_frames += 1;
        if self.control_frames > self.cfg().max_control_frames_per_s {
            metrics::counter!("ruvector_stream_abuse_closes_total").increment(1);
            self.close(close::POLICY, "control frame flood", ctx);
            return true;
        }
        false
    }

    fn binary(&mut self) {
        let e = ApiError::invalid("binary frames are not supported: send JSON text frames");
        self.reply_error(&Value::Null, &e, "binary");
    }

    fn reply_error(&mut self, id: &Value, e: &ApiError, kind: &'static str) {
        metrics::counter!("ruvector_stream_errors_total", "code" => e.code(), "frame" => kind)
            .increment(1);
        let f = wire::text_frame(&proto::error_frame(id, e));
        self.enqueue(f, "error");
    }

    fn on_text(&mut self, text: &[u8], ctx: &mut Context<Self>) {
        if std::str::from_utf8(text).is_err() {
            self.close(close::INVALID_DATA, "text frame is not UTF-8", ctx);
            return;
        }
        let (id, req) = match proto::parse(text) {
            Ok(r) => r,
            Err(bad) => {
                metrics::counter!("ruvector_stream_frames_in_total", "type" => "invalid")
                    .increment(1);
                self.reply_error(&bad.id, &ApiError::from(bad.error), "invalid");
                return;
            }
        };
        let name = req.name();
        metrics::counter!("ruvector_stream_frames_in_total", "type" => name).increment(1);
        if let Request::Auth(a) = &req {
            self.authenticate(&id, &a.token, ctx);
            return;
        }
        let Some(principal) = self.principal.clone() else {
            let e = ApiError::Unauthenticated("send an auth frame first".into());
            self.reply_error(&id, &e, name);
            self.close(close::POLICY, "authentication required", ctx);
            return;
        };
        if let Err(e) = self.gate(&principal, &req) {
            self.reply_error(&id, &e, name);
            if let ApiError::RateLimited { retry_ms, .. } = e {
                // Abuse is sending again before the retry time we gave: a client that waits as
                // told is never closed, even when its key's quota is shared and spent.
                let now = Instant::now();
                if self.retry_at.is_some_and(|t| now < t) {
                    self.refusals += 1;
                }
                self.retry_at = Some(now + Duration::from_millis(retry_ms));
                if self.refusals >= self.app.supervisor.abuse_refusals() {
                    metrics::counter!("ruvector_stream_abuse_closes_total").increment(1);
                    self.close(close::RATE_ABUSE, "rate limit abuse", ctx);
                }
            }
            return;
        }
        self.refusals = 0;
        self.retry_at = None;
        match req {
            Request::Ping => {
                let f = wire::text_frame(
                    &json!({"type": "pong", "id": id, "timestamp": proto::unix_ms()}),
                );
                self.enqueue(f, "pong");
            }
            Request::Auth(_) => {}
            Request::Unsubscribe(u) => {
                match self.subs.iter().position(|(s, _, _)| *s == u.subscription) {
                    Some(at) => {
                        let (sub, coll, _) = self.subs.swap_remove(at);
                        self.app.hub.unsubscribe(&coll, sub);
                        let f = wire::text_frame(
                            &json!({"type": "unsubscribed", "id": id, "subscription": sub}),
                        );
                        self.enqueue(f, "unsubscribed");
                    }
                    None => {
                        let e = ApiError::from(EngineError::NotFound(format!(
                            "subscription {}",
                            u.subscription
                        )));
                        self.reply_error(&id, &e, name);
                    }
                }
            }
            Request::Search(s) => self.search(id, &principal, s, ctx),
            Request::Insert(i) => self.insert(id, &principal, i, ctx),
            Request::Delete(d) => self.delete(id, &principal, d, ctx),
            Request::Subscribe(s) => self.subscribe(id, &principal, s, ctx),
        }
    }

    // ---------- requests ----------

    /// The frame's scope and its rate-limit class (and shedding).
    fn gate(&self, p: &Principal, req: &Request) -> Result<(), ApiError> {
        let (scope, class) = match req {
            Request::Search(_) | Request::Subscribe(_) => (Some(Scope::Read), Class::Read),
            Request::Insert(_) | Request::Delete(_) => (Some(Scope::Write), Class::Write),
            Request::Ping | Request::Unsubscribe(_) | Request::Auth(_) => (None, Class::Read),
        };
        if let Some(scope) = scope {
            p.require(scope)?;
        }
        self.app.supervisor.admit(p, class)
    }

    fn authenticate(&mut self, id: &Value, token: &str, ctx: &mut Context<Self>) {
        if !self.app.auth.enabled() {
            let f =
                wire::text_frame(&json!({"type": "authenticated", "id": id, "auth": "disabled"}));
            self.enqueue(f, "authenticated");
            return;
        }
        let peer = self.conn.sock.peer_addr().ok().map(|a| a.ip());
        match self.app.auth.authenticate(Some(token), peer) {
            Ok(p) => {
                let f = wire::text_frame(&json!({
                    "type": "authenticated", "id": id, "subject": &*p.id, "tenant": p.tenant.as_deref(),
                }));
                self.principal = Some(Arc::new(p));
                self.enqueue(f, "authenticated");
            }
            Err(e) => {
                self.reply_error(id, &e, "auth");
                self.close(close::POLICY, "authentication failed", ctx);
            }
        }
    }

    fn begin(&mut self) {
        self.inflight += 1;
        self.inflight_guards.push(self.app.supervisor.begin());
    }

    /// A request finished: reading may resume, a drain may complete.
    fn end(&mut self, ctx: &mut Context<Self>) {
        self.inflight = self.inflight.saturating_sub(1);
        self.inflight_guards.pop();
        if self.draining && self.inflight == 0 && self.cursors.is_empty() {
            self.close(close::GOING_AWAY, "server draining", ctx);
        }
        self.resume(ctx);
    }

    /// The stored name of the collection a frame names (the default one when it names none),
    /// or an error frame.
    fn collection(
        &mut self,
        id: &Value,
        p: &Principal,
        name: Option<&str>,
        kind: &'static str,
    ) -> Option<String> {
        match p.internal(name.unwrap_or(DEFAULT_COLLECTION)) {
            Ok(c) => Some(c),
            Err(e) => {
                self.reply_error(id, &e, kind);
                None
            }
        }
    }

    /// Serves a write whose answer is one `ack` frame: `fut` yields it (its `id` is filled in),
    /// or the error to answer with.
    fn ack_later<F>(&mut self, id: Value, kind: &'static str, fut: F, ctx: &mut Context<Self>)
    where
        F: std::future::Future<Output = Result<Value, ApiError>> + 'static,
    {
        self.begin();
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            match res {
                Ok(mut frame) => {
                    frame["id"] = id;
                    act.enqueue(wire::text_frame(&frame), "ack");
                }
                Err(e) => act.reply_error(&id, &e, kind),
            }
            act.end(ctx);
            act.flush(ctx);
        }));
    }

    fn search(&mut self, id: Value, p: &Principal, s: proto::SearchFrame, ctx: &mut Context<Self>) {
        let Some(collection) = self.collection(&id, p, s.collection.as_deref(), "search") else {
            return;
        };
        self.begin();
        let query_id = super::next_query_id();
        let stream = s.stream;
        let started = Instant::now();
        let app = self.app.clone();
        let fut = async move {
            let body = s.into_body();
            let c = rest::ask(&app, Lookup(collection)).await??;
            let req = rest::resolve_search(&c, body)?;
            rest::deadline(&app, async { Ok(c.search_ranked(req).await?) }).await
        };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            match res {
                Err(e) => {
                    act.reply_error(&id, &e, "search");
                    act.end(ctx);
                }
                Ok(ranked) if stream => {
                    act.app.supervisor.record_search(started.elapsed());
                    let f = wire::text_frame(
                        &json!({"type": "search_start", "id": id, "query_id": query_id}),
                    );
                    act.enqueue(f, "search_start");
                    act.cursors.push_back(Cursor {
                        id,
                        query_id,
                        ranked,
                        sent: 0,
                        started,
                    });
                }
                Ok(ranked) => {
                    act.app.supervisor.record_search(started.elapsed());
                    let hits: Vec<_> = ranked.collect();
                    let results: Vec<_> = hits.iter().map(rest::hit_json).collect();
                    let f = wire::text_frame(&json!({
                        "type": "search_result", "id": id, "query_id": query_id,
                        "results": results, "took_ms": rest::took_ms(started),
                    }));
                    metrics::histogram!("ruvector_stream_search_seconds")
                        .record(started.elapsed().as_secs_f64());
                    act.enqueue(f, "search_result");
                    act.end(ctx);
                }
            }
            act.flush(ctx);
        }));
    }

    fn insert(&mut self, id: Value, p: &Principal, i: proto::InsertFrame, ctx: &mut Context<Self>) {
        let Some(collection) = self.collection(&id, p, i.collection.as_deref(), "insert") else {
            return;
        };
        let app = self.app.clone();
        let fut = async move {
            let dimension = i.points.first().map(|p| p.vector.len()).filter(|d| *d > 0);
            let (ids, ops) = rest::upserts(i.points, app.settings.index.max_metadata_bytes)?;
            rest::write(&app, collection, ops, dimension).await?;
            Ok(json!({"type": "ack", "id": null, "ids": ids}))
        };
        self.ack_later(id, "insert", fut, ctx);
    }

    fn delete(&mut self, id: Value, p: &Principal, d: proto::DeleteFrame, ctx: &mut Context<Self>) {
        let Some(collection) = self.collection(&id, p, d.collection.as_deref(), "delete") else {
            return;
        };
        let app = self.app.clone();
        let fut = async move {
            if d.ids.is_empty() {
                return Err(ApiError::invalid("ids must not be empty"));
            }
            let ops = d.ids.into_iter().map(|id| WriteOp::Delete { id }).collect();
            let existed = rest::write(&app, collection, ops, None).await?;
            let deleted = existed.iter().filter(|e| **e).count();
            Ok(json!({"type": "ack", "id": null, "deleted": deleted}))
        };
        self.ack_later(id, "delete", fut, ctx);
    }

    fn subscribe(
        &mut self,
        id: Value,
        p: &Principal,
        mut s: proto::SubscribeFrame,
        ctx: &mut Context<Self>,
    ) {
        let shown: Arc<str> = Arc::from(s.collection.as_str());
        s.collection = match p.internal(&s.collection) {
            Ok(c) => c,
            Err(e) => return self.reply_error(&id, &e, "subscribe"),
        };
        if self.subs.len() >= self.cfg().max_subscriptions {
            let e = ApiError::invalid(format!(
                "at most {} subscriptions per stream",
                self.cfg().max_subscriptions
            ));
            self.reply_error(&id, &e, "subscribe");
            return;
        }
        self.begin();
        let app = self.app.clone();
        let fut = async move { prepare_subscription(&app, s).await };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            match res {
                Ok((collection, query, top)) => {
                    let sink = Arc::new(WsSink(ctx.address()));
                    match act.app.hub.subscribe(&collection, query, top, sink, None) {
                        Ok((sub, seq)) => {
                            let f = wire::text_frame(&json!({
                                "type": "subscribed", "id": id, "subscription": sub,
                                "collection": &*shown, "seq": seq,
                            }));
                            act.subs.push((sub, Arc::from(collection.as_str()), shown));
                            act.enqueue(f, "subscribed");
                        }
                        Err(_) => {
                            let e = ApiError::from(EngineError::Internal(
                                "subscription refused".into(),
                            ));
                            act.reply_error(&id, &e, "subscribe");
                        }
                    }
                }
                Err(e) => act.reply_error(&id, &e, "subscribe"),
            }
            act.end(ctx);
            act.flush(ctx);
        }));
    }

    // ---------- writing ----------

    /// Queues a reply frame. Replies to requests are bounded by `max_inflight` and by pausing
    /// reads, so only pushed events can overflow the queue (see `push_event`).
    fn enqueue(&mut self, f: Bytes, kind: &'static str) {
        if self.closing.is_some() || self.done {
            return;
        }
        metrics::counter!("ruvector_stream_frames_out_total", "type" => kind).increment(1);
        if self.out.is_empty() {
            self.last_progress = Instant::now();
        }
        self.queued(cost(&f) as isize);
        self.out.push_back(f);
    }

    /// Tracks the queue's bytes here and in `ruvector_stream_outbound_bytes` (all streams).
    fn queued(&mut self, delta: isize) {
        self.out_bytes = self.out_bytes.saturating_add_signed(delta);
        metrics::gauge!("ruvector_stream_outbound_bytes").increment(delta as f64);
    }

    fn queue_full(&self, extra: usize) -> bool {
        self.out.len() >= self.cfg().max_outbound_messages
            || self.out_bytes + extra > self.cfg().max_outbound_bytes
    }

    /// Search results while the queue has room: in rank order, one search after another.
    fn pump(&mut self) {
        let low_bytes = self.cfg().max_outbound_bytes / 4;
        let low_msgs = (self.cfg().max_outbound_messages / 2).max(1);
        while self.out_bytes < low_bytes && self.out.len() < low_msgs {
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
                        "total_results": c.sent, "took_ms": rest::took_ms(c.started),
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
    fn flush(&mut self, ctx: &mut Context<Self>) {
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
            let mut slices = [IoSlice::new(&[]); 16];
            let n = self.out.len().min(slices.len());
            for (i, b) in self.out.iter().take(n).enumerate() {
                slices[i] = IoSlice::new(if i == 0 { &b[self.front_off..] } else { b });
            }
            match self.conn.sock.try_write_vectored(&slices[..n]) {
                Ok(0) => {
                    self.finish("eof", ctx);
                    return;
                }
                Ok(mut written) => {
                    while written > 0 {
                        let Some(front) = self.out.front() else { break };
                        let left = front.len() - self.front_off;
                        if written >= left {
                            written -= left;
                            // Progress is a whole frame out: a client reading a byte a
                            // second does not keep its write timeout fresh.
                            self.last_progress = Instant::now();
                            if front.first() == Some(&PONG_FIRST_BYTE) {
                                self.pong_queued = false;
                            }
                            let n = cost(front) as isize;
                            self.queued(-n);
                            self.front_off = 0;
                            self.out.pop_front();
                        } else {
                            self.front_off += written;
                            written = 0;
                        }
                    }
                }
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
        // Nothing queued: give the queue's memory back.
        self.out = VecDeque::new();
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
        ctx.spawn(
            async move { conn.sock.writable().await }
                .into_actor(self)
                .map(|res, act, ctx| {
                    act.waiting_writable = false;
                    match res {
                        Ok(()) => act.flush(ctx),
                        Err(_) => act.finish("eof", ctx),
                    }
                }),
        );
    }

    // ---------- closing ----------

    /// Sends a close frame after what is queued, then reads until the
    /// peer's close frame or EOF (so the peer can read everything before the TCP close), or
    /// until `stream.close_grace_ms` passed.
    fn close(&mut self, code: u16, reason: &str, ctx: &mut Context<Self>) {
        if self.closing.is_some() || self.done {
            return;
        }
        metrics::counter!("ruvector_stream_closes_total", "code" => code.to_string()).increment(1);
        if code != close::NORMAL {
            tracing::debug!(code, reason, "closing stream");
        }
        self.cursors.clear();
        self.unsubscribe_all();
        // A slow consumer's backlog is dropped (keeping a half-written frame: the close frame
        // must follow a whole one); otherwise what is queued (e.g. the error that explains the
        // close) goes out first.
        let keep = if code == close::SLOW_CONSUMER {
            usize::from(self.front_off > 0)
        } else {
            self.out.len()
        };
        while self.out.len() > keep {
            if let Some(f) = self.out.pop_back() {
                self.queued(-(cost(&f) as isize));
            }
        }
        let f = wire::close_frame(code, reason);
        self.queued(cost(&f) as isize);
        self.out.push_back(f);
        self.closing = Some(Instant::now());
        let grace = Duration::from_millis(self.cfg().close_grace_ms);
        ctx.run_later(grace, |act, ctx| act.finish("close_timeout", ctx));
        self.flush(ctx);
        self.resume(ctx);
    }

    /// Stops the session now.
    fn finish(&mut self, why: &'static str, ctx: &mut Context<Self>) {
        if self.done {
            return;
        }
        if self.closing.is_none() {
            metrics::counter!("ruvector_stream_closes_total", "code" => why).increment(1);
        }
        self.done = true;
        self.pause(ctx);
        ctx.stop();
    }

    fn unsubscribe_all(&mut self) {
        for (sub, coll, _) in self.subs.drain(..) {
            self.app.hub.unsubscribe(&coll, sub);
        }
    }
}

/// Checks a subscribe frame against its collection; seeds the top-k of a `k` query with a
/// search so that only points entering the current top k are reported.
pub(crate) async fn prepare_subscription(
    app: &AppState,
    s: proto::SubscribeFrame,
) -> Result<(String, StandingQuery, Vec<(f32, Arc<str>)>), ApiError> {
    let c = rest::ask(app, Lookup(s.collection.clone())).await??;
    let filter = match &s.filter {
        None | Some(Value::Null) => None,
        Some(f) => Some(Filter::parse_with(f, c.limits().filter_limits())?),
    };
    if let Some(v) = &s.vector {
        validate_vector(v, c.spec.dimension, c.spec.metric)?;
    }
    if let Some(t) = s.score_threshold {
        if !t.is_finite() {
            return Err(ApiError::invalid("score_threshold must be a finite number"));
        }
    }
    let mut top = Vec::new();
    if let Some(k) = s.k {
        let Some(v) = &s.vector else {
            return Err(ApiError::invalid("\"k\" needs a \"vector\""));
        };
        let req = ruvector_actors::router::SearchRequest {
            vector: v.clone(),
            k,
            ef_search: None,
            filter: filter.clone(),
            score_threshold: s.score_threshold,
            with_vector: false,
            with_metadata: false,
        };
        let hits = rest::deadline(app, async { Ok(c.clone().search(req).await?) }).await?;
        top = hits.into_iter().map(|h| (h.score, h.id)).collect();
    }
    let query = StandingQuery::new(
        c.spec.metric,
        s.vector.as_deref(),
        s.k,
        s.score_threshold,
        filter,
    );
    Ok((s.collection, query, top))
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.cfg().max_outbound_messages);
        self.activity = Some(self.app.streams.register(ctx.address()));
        self.resume(ctx);
        self.flush(ctx);
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        self.unsubscribe_all();
        self.queued(-(self.out_bytes as isize));
        self.app.streams.unregister(&ctx.address());
    }
}

impl StreamHandler<std::io::Result<()>> for Session {
    fn handle(&mut self, r: std::io::Result<()>, ctx: &mut Self::Context) {
        match r {
            Ok(()) => self.read_some(ctx),
            Err(_) => self.finish("eof", ctx),
        }
        self.flush(ctx);
    }

    /// The readiness stream ends when reading pauses; that does not end the session.
    fn finished(&mut self, _: &mut Self::Context) {}
}

impl Handler<Push> for Session {
    type Result = ();

    fn handle(&mut self, Push(d): Push, ctx: &mut Self::Context) {
        let Some((_, _, coll)) = self.subs.iter().find(|(s, _, _)| *s == d.subscription) else {
            return;
        };
        let f = wire::text_frame(&proto::event_frame(coll, &d));
        if self.queue_full(f.len()) {
            metrics::counter!("ruvector_stream_slow_consumers_total").increment(1);
            self.close(
                close::SLOW_CONSUMER,
                "slow consumer: outbound queue full",
                ctx,
            );
            return;
        }
        metrics::counter!("ruvector_stream_events_sent_total").increment(1);
        self.enqueue(f, "event");
        self.flush(ctx);
    }
}

impl Handler<Overflow> for Session {
    type Result = ();

    fn handle(&mut self, _: Overflow, ctx: &mut Self::Context) {
        metrics::counter!("ruvector_stream_slow_consumers_total").increment(1);
        self.close(
            close::SLOW_CONSUMER,
            "slow consumer: events overflowed",
            ctx,
        );
    }
}

impl Handler<Tick> for Session {
    type Result = ();

    fn handle(&mut self, _: Tick, ctx: &mut Self::Context) {
        if self.closing.is_some() || self.done {
            return;
        }
        let now = Instant::now();
        let cfg = self.cfg();
        let idle = Duration::from_millis(cfg.idle_timeout_ms);
        let beat = Duration::from_millis(cfg.heartbeat_interval_ms);
        let write = Duration::from_millis(cfg.write_timeout_ms);
        let auth_wait = Duration::from_millis(self.app.settings.server.client_request_timeout_ms);
        if self.principal.is_none() && now.duration_since(self.opened) >= auth_wait {
            self.close(close::POLICY, "no auth frame in time", ctx);
        } else if now.duration_since(self.last_seen) >= idle {
            self.close(close::IDLE, "idle timeout", ctx);
        } else if !self.out.is_empty() && now.duration_since(self.last_progress) >= write {
            metrics::counter!("ruvector_stream_slow_consumers_total").increment(1);
            self.close(
                close::SLOW_CONSUMER,
                "slow consumer: no write progress",
                ctx,
            );
        } else if now.duration_since(self.last_seen) >= beat
            && now.duration_since(self.last_ping) >= beat
        {
            self.last_ping = now;
            let f = wire::control_frame(Control::Ping, b"");
            self.enqueue(f, "ws_ping");
            self.flush(ctx);
        }
    }
}

impl Handler<CloseIdle> for Session {
    type Result = ();

    fn handle(&mut self, _: CloseIdle, ctx: &mut Self::Context) {
        self.close(close::IDLE, "idle stream closed to shed load", ctx);
    }
}

impl Handler<Drain> for Session {
    type Result = ();

    fn handle(&mut self, _: Drain, ctx: &mut Self::Context) {
        self.draining = true;
        self.pause(ctx);
        if self.inflight == 0 && self.cursors.is_empty() {
            self.close(close::GOING_AWAY, "server draining", ctx);
        }
    }
}
