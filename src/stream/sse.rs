//! The lean SSE server: a connection's first `GET /api/v1/stream/subscribe|search`, served by an
//! actor with the WebSocket layer's buffer discipline (no buffer held while quiet, the bounded
//! `Outbox`, one registry sweeper for heartbeats and write timeouts, no timer per stream). The
//! request passes the same gate and service calls as actix-web's SSE handlers (`http::sse`) and
//! sends the same events (`service::sse`), framed as a chunked body; the connection closes when
//! the stream ends. A bad request is answered before the stream starts, with the usual JSON
//! error and status.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::web;
use bytes::Bytes;
use ruvector_actors::Ranked;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;

use super::conn::{read_head, refuse, when_writable, Conn, Head, Readable, SCRATCH};
use super::http1::{self, SseHead};
use super::outbox::{Bounds, Outbox};
use super::push::{ActorSink, Overflow, Push};
use crate::auth::{Principal, Scope};
use crate::error::ApiError;
use crate::registry::{next_query_id, Control, Kind, Permit, Registration};
use crate::service::gate::admit_request;
use crate::service::search::search_ranked;
use crate::service::shapes::{SearchQuery, DEFAULT_COLLECTION};
use crate::service::sse;
use crate::service::subscribe::{self, Prepared, SubscribeQuery};
use crate::state::AppState;
use crate::supervise::Class;

const SUBSCRIBE: &str = "/api/v1/stream/subscribe";
const SEARCH: &str = "/api/v1/stream/search";
/// Socket reads one wake-up may do (a client has nothing to send; what it sends is dropped).
const READS_PER_WAKE: usize = 4;

/// Counts the request as actix-web's `record` does for the routes it serves.
fn record(route: &'static str, status: u16, started: Instant) {
    metrics::counter!("ruvector_http_requests_total", "route" => route, "method" => "GET",
        "status" => status.to_string())
    .increment(1);
    metrics::histogram!("ruvector_http_request_duration_seconds", "route" => route, "method" => "GET")
        .record(started.elapsed().as_secs_f64());
}

fn query<T: DeserializeOwned>(q: &str) -> Result<T, ApiError> {
    serde_urlencoded::from_str(q)
        .map_err(|e| ApiError::invalid(format!("bad query string: Query deserialize error: {e}")))
}

/// What a stream sends.
enum Feed {
    /// Search results, produced from the merge as the queue has room.
    Search(Box<SearchFeed>),
    Subscription {
        id: u64,
        stored: Arc<str>,
        shown: Arc<str>,
    },
    /// The last event is queued.
    Ended,
}

struct SearchFeed {
    ranked: Ranked,
    query_id: u64,
    sent: u64,
    started: Instant,
}

/// How a stream starts: the request's checked form.
enum Start {
    Search(Box<SearchFeed>),
    Subscription {
        prepared: Prepared,
        shown: Arc<str>,
        resume_after: Option<u64>,
    },
}

/// Serves a connection's first SSE request.
pub async fn serve(mut io: TcpStream, app: web::Data<AppState>) {
    let timeout = Duration::from_millis(app.settings.server.client_request_timeout_ms);
    let head = match read_head(&mut io, timeout, http1::parse_sse).await {
        Head::Parsed(h) => h,
        Head::Bad(why) => {
            refuse(io, &ApiError::invalid(why)).await;
            return;
        }
        Head::Gone => return,
    };
    let started = Instant::now();
    let route = if head.path == SUBSCRIBE {
        SUBSCRIBE
    } else {
        SEARCH
    };
    let peer = io.peer_addr().ok().map(|a| a.ip());
    match prepare(&app, route, head, peer).await {
        Ok((start, permit)) => {
            record(route, 200, started);
            SseStream::begin(app, io, permit, start);
        }
        Err(e) => {
            record(route, e.status(), started);
            refuse(io, &e).await;
        }
    }
}

/// The gate, the query and the service call that precede a stream's first byte.
async fn prepare(
    app: &AppState,
    route: &'static str,
    head: SseHead,
    peer: Option<std::net::IpAddr>,
) -> Result<(Start, Permit), ApiError> {
    let caller: Arc<Principal> =
        admit_request(app, head.token.as_deref(), peer, Scope::Read, Class::Stream)?;
    let _busy = app.supervisor.begin();
    if route == SUBSCRIBE {
        let q: SubscribeQuery = query(&head.query)?;
        let (request, resume_after) = q.into_request(head.last_event_id.as_deref())?;
        let shown: Arc<str> = Arc::from(request.collection.as_str());
        let permit = app.streams.admit(Kind::Sse)?;
        let prepared = subscribe::prepare(app, &caller, request).await?;
        return Ok((
            Start::Subscription {
                prepared,
                shown,
                resume_after,
            },
            permit,
        ));
    }
    let started = Instant::now();
    let body = query::<SearchQuery>(&head.query)?.into_body()?;
    let name = caller.internal(body.collection.as_deref().unwrap_or(DEFAULT_COLLECTION))?;
    let permit = app.streams.admit(Kind::Sse)?;
    let ranked = search_ranked(app, name, body).await?;
    let feed = SearchFeed {
        ranked,
        query_id: next_query_id(),
        sent: 0,
        started,
    };
    Ok((Start::Search(Box::new(feed)), permit))
}

pub struct SseStream {
    app: web::Data<AppState>,
    conn: Rc<Conn>,
    permit: Permit,
    registration: Option<Registration>,
    reader: Option<SpawnHandle>,
    out: Outbox,
    feed: Feed,
    waiting_writable: bool,
    last_write: Instant,
    last_progress: Instant,
    done: bool,
}

impl SseStream {
    fn begin(app: web::Data<AppState>, sock: TcpStream, permit: Permit, start: Start) {
        let _ = sock.set_nodelay(true);
        let now = Instant::now();
        SseStream::create(move |ctx| {
            let mut s = SseStream {
                app,
                conn: Conn::new(sock),
                permit,
                registration: None,
                reader: None,
                out: Outbox::default(),
                feed: Feed::Ended,
                waiting_writable: false,
                last_write: now,
                last_progress: now,
                done: false,
            };
            ctx.set_mailbox_capacity(s.app.settings.stream.max_outbound_messages);
            match start {
                Start::Search(f) => {
                    s.out.push(http1::sse_head(&sse::HEADERS));
                    s.out.push(http1::chunk(&sse::search_start(f.query_id)));
                    s.feed = Feed::Search(f);
                }
                Start::Subscription {
                    prepared,
                    shown,
                    resume_after,
                } => {
                    let stored: Arc<str> = Arc::from(prepared.collection.as_str());
                    let sink = Arc::new(ActorSink(ctx.address()));
                    match subscribe::open(&s.app, prepared, sink, resume_after) {
                        Ok(opened) => {
                            s.out.push(http1::sse_head(&sse::HEADERS));
                            for e in sse::subscribed(&opened, &shown) {
                                s.out.push(http1::chunk(&e));
                            }
                            s.feed = Feed::Subscription {
                                id: opened.id,
                                stored,
                                shown,
                            };
                        }
                        Err(e) => s.out.push(Bytes::from(http1::refusal(&e))),
                    }
                }
            }
            s
        });
    }

    fn bounds(&self) -> Bounds {
        let c = &self.app.settings.stream;
        Bounds {
            frames: c.max_outbound_messages,
            bytes: c.max_outbound_bytes,
        }
    }

    /// Queues the stream's last event (if any) and the end of the body; the connection closes
    /// once they are written (or after `stream.close_grace_ms`).
    fn end(&mut self, last: Option<Bytes>, drop_backlog: bool, ctx: &mut Context<Self>) {
        if matches!(self.feed, Feed::Ended) {
            return;
        }
        self.unsubscribe();
        self.feed = Feed::Ended;
        if drop_backlog {
            self.out.truncate(0);
        }
        if let Some(e) = last {
            self.out.push(http1::chunk(&e));
        }
        self.out.push(Bytes::from_static(http1::LAST_CHUNK));
        let grace = Duration::from_millis(self.app.settings.stream.close_grace_ms);
        ctx.run_later(grace, |act, ctx| act.finish(ctx));
        self.flush(ctx);
    }

    fn unsubscribe(&mut self) {
        if let Feed::Subscription { id, stored, .. } = &self.feed {
            self.app.hub.unsubscribe(stored, *id);
        }
    }

    fn finish(&mut self, ctx: &mut Context<Self>) {
        if self.done {
            return;
        }
        self.done = true;
        self.unsubscribe();
        self.feed = Feed::Ended;
        if let Some(h) = self.reader.take() {
            self.conn.paused.set(true);
            ctx.cancel_future(h);
        }
        ctx.stop();
    }

    /// Search results while the queue has room.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        let b = self.bounds();
        while self.out.cost() < b.bytes / 4 && self.out.len() < (b.frames / 2).max(1) {
            let Feed::Search(f) = &mut self.feed else {
                return;
            };
            match f.ranked.next() {
                Some(hit) => {
                    f.sent += 1;
                    if f.sent == 1 {
                        metrics::histogram!("ruvector_stream_first_result_seconds")
                            .record(f.started.elapsed().as_secs_f64());
                    }
                    let e = sse::result(f.query_id, f.sent, &hit);
                    self.out.push(http1::chunk(&e));
                }
                None => {
                    metrics::histogram!("ruvector_stream_search_seconds")
                        .record(f.started.elapsed().as_secs_f64());
                    let e = sse::search_complete(f.query_id, f.sent, f.started);
                    self.end(Some(e), false, ctx);
                    return;
                }
            }
        }
    }

    /// Writes what the socket takes without blocking; waits for writability otherwise.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.done {
            return;
        }
        loop {
            self.pump(ctx);
            if self.done || self.out.is_empty() {
                break;
            }
            let mut progress = false;
            let written = self.out.write_to(&self.conn.sock, |_| progress = true);
            if progress {
                self.last_progress = Instant::now();
            }
            match written {
                Ok(0) => return self.finish(ctx),
                Ok(_) => self.last_write = Instant::now(),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return self.wait_writable(ctx);
                }
                Err(_) => return self.finish(ctx),
            }
        }
        if matches!(self.feed, Feed::Ended) && self.out.is_empty() {
            self.finish(ctx);
        }
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
                act.finish(ctx);
            }
        });
    }

    /// The client sends nothing after its request: anything read is dropped, EOF ends the
    /// stream.
    fn read_some(&mut self, ctx: &mut Context<Self>) {
        for _ in 0..READS_PER_WAKE {
            let read = SCRATCH.with(|s| self.conn.sock.try_read(&mut s.borrow_mut()[..]));
            match read {
                Ok(0) => return self.finish(ctx),
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => return self.finish(ctx),
            }
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.done || matches!(self.feed, Feed::Ended) {
            return;
        }
        let c = &self.app.settings.stream;
        let now = Instant::now();
        if !self.out.is_empty()
            && now.duration_since(self.last_progress) >= Duration::from_millis(c.write_timeout_ms)
        {
            // Nothing reaches this client: an explaining event would not either.
            metrics::counter!("ruvector_stream_slow_consumers_total").increment(1);
            return self.finish(ctx);
        }
        if now.duration_since(self.last_write) >= Duration::from_millis(c.heartbeat_interval_ms) {
            self.out.push(http1::chunk(&sse::ping()));
            self.last_write = now;
            self.flush(ctx);
        }
    }
}

impl Actor for SseStream {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let control = ctx.address().recipient();
        self.registration = Some(self.app.streams.register(&self.permit, control));
        self.reader = Some(ctx.add_stream(Readable(self.conn.clone())));
        self.flush(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.unsubscribe();
    }
}

impl StreamHandler<std::io::Result<()>> for SseStream {
    fn handle(&mut self, r: std::io::Result<()>, ctx: &mut Self::Context) {
        match r {
            Ok(()) => self.read_some(ctx),
            Err(_) => self.finish(ctx),
        }
    }

    fn finished(&mut self, _: &mut Self::Context) {}
}

impl Handler<Push> for SseStream {
    type Result = ();

    fn handle(&mut self, Push(d): Push, ctx: &mut Self::Context) {
        let Feed::Subscription { id, shown, .. } = &self.feed else {
            return;
        };
        if *id != d.subscription {
            return;
        }
        let e = http1::chunk(&sse::change(shown, &d));
        if self.out.would_overflow(e.len(), self.bounds()) {
            return self.end(Some(sse::overflowed()), true, ctx);
        }
        self.out.push(e);
        self.flush(ctx);
    }
}

impl Handler<Overflow> for SseStream {
    type Result = ();

    fn handle(&mut self, _: Overflow, ctx: &mut Self::Context) {
        self.end(Some(sse::overflowed()), true, ctx);
    }
}

impl Handler<Control> for SseStream {
    type Result = ();

    fn handle(&mut self, c: Control, ctx: &mut Self::Context) {
        match c {
            Control::Tick => self.tick(ctx),
            // Only WebSocket sessions are judged idle (an SSE client never sends).
            Control::CloseIdle => {}
            Control::Drain => {
                // A search in progress finishes (it is bounded); a subscription ends now.
                if matches!(self.feed, Feed::Subscription { .. }) {
                    self.end(Some(sse::end_draining()), false, ctx);
                }
            }
        }
    }
}
