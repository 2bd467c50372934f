//! A session's requests: each whole client message is authenticated (an `auth` frame when the
//! upgrade carried no credential), gated (scope, admission, rate limits — with abusers who
//! ignore the retry time closed), and served through the service layer; answers are queued as
//! frames. At most `stream.max_inflight` requests are served at once (reading pauses beyond).

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde_json::{json, Value};
use tungstenite::protocol::frame::coding::Control as WsControl;

use super::{Cursor, Session, Subscription};
use crate::auth::{Principal, Scope};
use crate::error::ApiError;
use crate::registry::next_query_id;
use crate::service::call::took_ms;
use crate::service::coordination::{self, reply_json, StreamSink};
use crate::service::gate;
use crate::service::shapes::{hit_json, DEFAULT_COLLECTION};
use crate::service::{points, search, subscribe};
use crate::stream::inbox::Message;
use crate::stream::proto::{self, Request, TopicFrame};
use crate::stream::push::ActorSink;
use crate::stream::wire::{self, close};
use crate::supervise::Class;
use ruvector_actors::{CoordOp, EngineError};

impl Session {
    pub(super) fn on_message(&mut self, m: Message<'_>, ctx: &mut Context<Self>) {
        self.last_seen = Instant::now();
        if let Some(r) = &self.registration {
            r.seen();
        }
        if self.closing.is_some() {
            // Our close frame is out: only the peer's close matters now.
            if let Message::Close(_) = m {
                self.finish("closed", ctx);
            }
            return;
        }
        match m {
            Message::Text(t) => self.on_text(t, ctx),
            Message::Binary => {
                let e = ApiError::invalid("binary frames are not supported: send JSON text frames");
                self.reply_error(&Value::Null, &e, "binary");
            }
            Message::Ping(p) => {
                if self.control_flood(ctx) {
                    return;
                }
                // One pending pong answers every ping before it (RFC 6455 §5.5.3 allows
                // answering only the most recent), so a ping flood queues nothing more.
                if !self.pong_queued {
                    self.pong_queued = true;
                    self.enqueue(wire::control_frame(WsControl::Pong, p), "ws_pong");
                }
            }
            Message::Pong => {
                self.control_flood(ctx);
            }
            Message::Close(code) => {
                self.peer_closed = true;
                self.close(code.unwrap_or(close::NORMAL), "", ctx);
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

    pub(super) fn reply_error(&mut self, id: &Value, e: &ApiError, kind: &'static str) {
        metrics::counter!("ruvector_stream_errors_total", "code" => e.code(), "frame" => kind)
            .increment(1);
        self.enqueue(wire::text_frame(&proto::error_frame(id, e)), "error");
    }

    fn on_text(&mut self, text: &[u8], ctx: &mut Context<Self>) {
        if std::str::from_utf8(text).is_err() {
            self.close(close::INVALID_DATA, "text frame is not UTF-8", ctx);
            return;
        }
        if self.fed.is_some() {
            return self.on_federation_text(text, ctx);
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
            Request::Unsubscribe(u) => self.unsubscribe(id, u.subscription),
            Request::Search(s) => self.search(id, &principal, s, ctx),
            Request::Insert(i) => self.insert(id, &principal, i, ctx),
            Request::Delete(d) => self.delete(id, &principal, d, ctx),
            Request::Subscribe(s) => self.subscribe(id, &principal, s, ctx),
            Request::Coord(op) => self.coordinate(id, &principal, op, ctx),
            Request::SubscribeTopic(t) => self.subscribe_topic(id, &principal, t, ctx),
            Request::UnsubscribeTopic(t) => self.unsubscribe_topic(id, &principal, t, ctx),
        }
    }

    /// The frame's scope and its rate-limit class (and shedding).
    fn gate(&self, p: &Principal, req: &Request) -> Result<(), ApiError> {
        let (scope, class) = match req {
            Request::Search(_) | Request::Subscribe(_) => (Some(Scope::Read), Class::Read),
            Request::Insert(_) | Request::Delete(_) => (Some(Scope::Write), Class::Write),
            Request::Ping | Request::Unsubscribe(_) | Request::Auth(_) => (None, Class::Read),
            Request::Coord(op) => (Some(Scope::Coordinate), coordination::class(op)),
            Request::SubscribeTopic(_) | Request::UnsubscribeTopic(_) => {
                (Some(Scope::Coordinate), Class::Read)
            }
        };
        gate::admit(&self.app, p, scope, class)
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

    pub(super) fn begin(&mut self) {
        self.inflight.push(self.app.supervisor.begin());
    }

    /// A request finished: reading may resume, a drain may complete.
    pub(super) fn end(&mut self, ctx: &mut Context<Self>) {
        self.inflight.pop();
        if self.draining && self.inflight.is_empty() && self.cursors.is_empty() {
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
        let query_id = next_query_id();
        let stream = s.stream;
        let started = Instant::now();
        let app = self.app.clone();
        let fut = async move { search::search_ranked(&app, collection, s.into_body()).await };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            match res {
                Err(e) => {
                    act.reply_error(&id, &e, "search");
                    act.end(ctx);
                }
                Ok(ranked) if stream => {
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
                    let hits: Vec<_> = ranked.collect();
                    let results: Vec<_> = hits.iter().map(hit_json).collect();
                    let f = wire::text_frame(&json!({
                        "type": "search_result", "id": id, "query_id": query_id,
                        "results": results, "took_ms": took_ms(started),
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
            let ids = points::upsert(&app, collection, i.points, true).await?;
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
            let deleted = points::delete(&app, collection, d.ids).await?;
            Ok(json!({"type": "ack", "id": null, "deleted": deleted}))
        };
        self.ack_later(id, "delete", fut, ctx);
    }

    fn unsubscribe(&mut self, id: Value, subscription: u64) {
        match self.subs.iter().position(|s| s.id == subscription) {
            Some(at) => {
                let s = self.subs.swap_remove(at);
                self.app.hub.unsubscribe(&s.stored, s.id);
                let f = wire::text_frame(
                    &json!({"type": "unsubscribed", "id": id, "subscription": s.id}),
                );
                self.enqueue(f, "unsubscribed");
            }
            None => {
                let e = ApiError::from(EngineError::NotFound(format!(
                    "subscription {subscription}"
                )));
                self.reply_error(&id, &e, "unsubscribe");
            }
        }
    }

    fn subscribe(
        &mut self,
        id: Value,
        p: &Principal,
        s: subscribe::SubscribeRequest,
        ctx: &mut Context<Self>,
    ) {
        if self.subs.len() >= self.cfg().max_subscriptions {
            let e = ApiError::invalid(format!(
                "at most {} subscriptions per stream",
                self.cfg().max_subscriptions
            ));
            self.reply_error(&id, &e, "subscribe");
            return;
        }
        self.begin();
        self.subscribing = true;
        let shown: Arc<str> = Arc::from(s.collection.as_str());
        let app = self.app.clone();
        let caller = p.clone();
        let fut = async move { subscribe::prepare(&app, &caller, s).await };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            let opened = res.and_then(|prepared| {
                let stored: Arc<str> = Arc::from(prepared.collection.as_str());
                let sink = Arc::new(ActorSink(ctx.address()));
                subscribe::open(&act.app, prepared, sink, None).map(|o| (o, stored))
            });
            match opened {
                Ok((o, stored)) => {
                    let f = wire::text_frame(&json!({
                        "type": "subscribed", "id": id, "subscription": o.id,
                        "collection": &*shown, "seq": o.seq,
                    }));
                    act.subs.push(Subscription {
                        id: o.id,
                        stored,
                        shown,
                    });
                    act.enqueue(f, "subscribed");
                }
                Err(e) => act.reply_error(&id, &e, "subscribe"),
            }
            act.subscribing = false;
            act.end(ctx);
            act.flush(ctx);
        }));
    }

    /// This stream as a coordination event sink (its registry id and its mailbox).
    pub(super) fn stream_sink(&mut self, ctx: &mut Context<Self>) -> Option<StreamSink> {
        let id = self.registration.as_ref()?.id();
        self.coordinating = true;
        Some((id, Arc::new(ActorSink(ctx.address()))))
    }

    fn coordinate(&mut self, id: Value, p: &Principal, op: CoordOp, ctx: &mut Context<Self>) {
        // A registering agent's stream hears its swarm's joins and leaves.
        let sink = if matches!(op, CoordOp::AgentRegister { .. }) {
            self.stream_sink(ctx)
        } else {
            None
        };
        let app = self.app.clone();
        let caller = p.clone();
        let fut = async move {
            let reply = coordination::call(&app, &caller, op, sink).await?;
            Ok(reply_json(&reply))
        };
        self.ack_later(id, "coordination", fut, ctx);
    }

    fn subscribe_topic(
        &mut self,
        id: Value,
        p: &Principal,
        t: TopicFrame,
        ctx: &mut Context<Self>,
    ) {
        let Some(sink) = self.stream_sink(ctx) else {
            return;
        };
        self.begin();
        let app = self.app.clone();
        let caller = p.clone();
        let topic = t.topic.clone();
        let fut = async move {
            coordination::subscribe_topic(&app, &caller, t.topic, t.last, sink).await
        };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            match res {
                Ok(last) => {
                    let f = wire::text_frame(
                        &json!({"type": "topic_subscribed", "id": id, "topic": topic}),
                    );
                    act.enqueue(f, "topic_subscribed");
                    for m in last {
                        let f = wire::text_frame(&coordination::frame("message", &m));
                        act.enqueue(f, "message");
                    }
                }
                Err(e) => act.reply_error(&id, &e, "subscribe_topic"),
            }
            act.end(ctx);
            act.flush(ctx);
        }));
    }

    fn unsubscribe_topic(
        &mut self,
        id: Value,
        p: &Principal,
        t: TopicFrame,
        ctx: &mut Context<Self>,
    ) {
        let Some(stream) = self.registration.as_ref().map(|r| r.id()) else {
            return;
        };
        let app = self.app.clone();
        let caller = p.clone();
        let fut = async move {
            coordination::unsubscribe(&app, &caller, stream, Some(t.topic.clone())).await?;
            Ok(json!({"type": "topic_unsubscribed", "id": null, "topic": t.topic}))
        };
        self.ack_later(id, "unsubscribe_topic", fut, ctx);
    }
}
