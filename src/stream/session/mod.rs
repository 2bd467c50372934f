//! The WebSocket session actor: one per stream, owning its socket. This file holds the actor's
//! state and lifecycle — start, registry control (`Tick`: heartbeat, idle and write timeouts;
//! `CloseIdle`; `Drain`), pushed subscription events, closing. Reading and writing are in `io`,
//! request handling in `requests`; the queue and buffer types are `Outbox` and `Inbox`.
//!
//! Timers are not per stream: the registry's sweeper sends every session a `Tick`, on which it
//! pings when quiet, closes with 4001 when idle and enforces the write timeout. Pushed events
//! that would overflow the outbound queue close the stream with 4002.

mod federation;
mod io;
mod requests;

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::web;
use bytes::Bytes;
use ruvector_actors::Ranked;
use serde_json::Value;
use tokio::net::TcpStream;
use tungstenite::protocol::frame::coding::Control as WsControl;

use super::conn::Conn;
use super::federation::FedState;
use super::inbox::Inbox;
use super::outbox::{Bounds, Outbox};
use super::push::{CoordEvent, Overflow, Push};
use super::wire::{self, close};
use crate::auth::Principal;
use crate::registry::{Control, Permit, Registration};
use crate::service::shapes::event_frame;
use crate::settings::StreamSettings;
use crate::state::AppState;
use crate::supervise::InFlight;

/// A search whose results are being sent.
struct Cursor {
    id: Value,
    query_id: u64,
    ranked: Ranked,
    sent: usize,
    started: Instant,
}

/// A standing subscription of this stream.
struct Subscription {
    id: u64,
    /// The stored collection name (the hub's key).
    stored: Arc<str>,
    /// The client's name for it (what events say).
    shown: Arc<str>,
}

pub struct Session {
    app: web::Data<AppState>,
    /// `None` until an `auth` frame when authentication is on and the upgrade carried none.
    principal: Option<Arc<Principal>>,
    /// The registry's handle (set once started); records the client's activity.
    registration: Option<Registration>,
    /// Frames refused by the rate limiter in a row that came before the retry time given.
    refusals: u32,
    /// The retry time given with the last refusal.
    retry_at: Option<Instant>,
    opened: Instant,
    conn: Rc<Conn>,
    permit: Permit,
    reader: Option<SpawnHandle>,
    inbox: Inbox,
    out: Outbox,
    waiting_writable: bool,
    /// One admission count per request being served.
    inflight: Vec<InFlight>,
    cursors: VecDeque<Cursor>,
    /// Searches whose last frame `pump` queued, not yet settled with `end`.
    finished_cursors: usize,
    subs: Vec<Subscription>,
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
    /// The stream joined a swarm or a topic: its coordinator is told when it ends.
    coordinating: bool,
    /// A subscribe is being registered: later frames wait for it, so a write sent right after
    /// a subscribe on the same stream is seen by that subscription.
    subscribing: bool,
    /// Set for agentic-flow's federation dialect (`/api/v1/federation`).
    fed: Option<Box<FedState>>,
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
        federation: bool,
    ) {
        let now = Instant::now();
        let session = Session {
            app,
            principal,
            registration: None,
            refusals: 0,
            retry_at: None,
            opened: now,
            conn: Conn::new(sock),
            permit,
            reader: None,
            inbox: Inbox::with_pending(early),
            out: Outbox::default(),
            waiting_writable: false,
            inflight: Vec::new(),
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
            coordinating: false,
            subscribing: false,
            fed: federation.then(Box::default),
        };
        session.start();
    }

    fn cfg(&self) -> &StreamSettings {
        &self.app.settings.stream
    }

    fn bounds(&self) -> Bounds {
        Bounds {
            frames: self.cfg().max_outbound_messages,
            bytes: self.cfg().max_outbound_bytes,
        }
    }

    /// Sends a close frame after what is queued, then reads until the peer's close frame or
    /// EOF (so the peer can read everything before the TCP close), or until
    /// `stream.close_grace_ms` passed.
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
        // A slow consumer's backlog is dropped; otherwise what is queued (e.g. the error that
        // explains the close) goes out first.
        if code == close::SLOW_CONSUMER {
            self.out.truncate(0);
        }
        self.out.push(wire::close_frame(code, reason));
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
        for s in self.subs.drain(..) {
            self.app.hub.unsubscribe(&s.stored, s.id);
        }
    }

    /// Queues a pushed event (a frame no request asked for); a queue that cannot take it means
    /// a slow consumer, closed with 4002. `false` when the event was not queued.
    fn push_event(&mut self, f: Bytes, kind: &'static str, ctx: &mut Context<Self>) -> bool {
        if self.out.would_overflow(f.len(), self.bounds()) {
            metrics::counter!("ruvector_stream_slow_consumers_total").increment(1);
            self.close(
                close::SLOW_CONSUMER,
                "slow consumer: outbound queue full",
                ctx,
            );
            return false;
        }
        self.enqueue(f, kind);
        self.flush(ctx);
        true
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
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
            self.enqueue(wire::control_frame(WsControl::Ping, b""), "ws_ping");
            self.flush(ctx);
        }
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.cfg().max_outbound_messages);
        let control = ctx.address().recipient();
        self.registration = Some(self.app.streams.register(&self.permit, control));
        self.resume(ctx);
        self.flush(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.unsubscribe_all();
        if let (true, Some(p), Some(r)) = (self.coordinating, &self.principal, &self.registration) {
            let (app, caller, stream) = (self.app.clone(), p.clone(), r.id());
            actix::spawn(async move {
                let _ =
                    crate::service::coordination::unsubscribe(&app, &caller, stream, None).await;
            });
        }
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
        let Some(sub) = self.subs.iter().find(|s| s.id == d.subscription) else {
            return;
        };
        let f = wire::text_frame(&event_frame(&sub.shown, &d));
        if self.push_event(f, "event", ctx) {
            metrics::counter!("ruvector_stream_events_sent_total").increment(1);
        }
    }
}

impl Handler<CoordEvent> for Session {
    type Result = ();

    fn handle(&mut self, e: CoordEvent, ctx: &mut Self::Context) {
        let f = wire::json_text_frame(&e.frame);
        self.push_event(f, e.kind, ctx);
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

impl Handler<Control> for Session {
    type Result = ();

    fn handle(&mut self, c: Control, ctx: &mut Self::Context) {
        match c {
            Control::Tick => self.tick(ctx),
            Control::CloseIdle => self.close(close::IDLE, "idle stream closed to shed load", ctx),
            Control::Drain => {
                self.draining = true;
                self.pause(ctx);
                if self.inflight.is_empty() && self.cursors.is_empty() {
                    self.close(close::GOING_AWAY, "server draining", ctx);
                }
            }
        }
    }
}
