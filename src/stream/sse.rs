//! SSE streams (PROTOCOL.md §SSE): incremental search results and subscriptions.
//!
//! Requests are checked before the stream starts, so a bad one gets the usual JSON error and
//! status. A search's events are produced lazily from the shard merge as actix-web writes them.
//! A subscription's events come from the hub through a bounded channel; a client that lets it
//! fill loses the subscription and the stream ends with an `error` event. `Last-Event-ID` (or
//! `?last_event_id=`) resumes from the hub's replay window, or starts with `event: reset` when
//! the window no longer reaches back that far. `: ping` comments keep quiet streams open.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_util::stream::{self, Stream};
use ruvector_actors::hub::{Delivery, ResetNeeded, Sink};
use ruvector_actors::router::{Lookup, Ranked};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use super::proto::{self, SubscribeFrame};
use super::session::prepare_subscription;
use super::{Kind, Permit};
use crate::http::body::read_json;
use crate::http::error::ApiError;
use crate::http::guard::Caller;
use crate::http::rest::{self, SearchBody, SearchQuery, DEFAULT_COLLECTION};
use crate::http::AppState;

type Chunk = Result<Bytes, actix_web::Error>;

/// One SSE event; the JSON repeats the event name as `"event"`.
fn event(name: &str, id: Option<u64>, data: &impl Serialize) -> Bytes {
    let mut out = format!("event: {name}\n");
    if let Some(id) = id {
        out.push_str(&format!("id: {id}\n"));
    }
    out.push_str("data: ");
    let mut v = out.into_bytes();
    if serde_json::to_writer(&mut v, data).is_err() {
        v.extend_from_slice(b"{}");
    }
    v.extend_from_slice(b"\n\n");
    metrics::counter!("ruvector_stream_frames_out_total", "type" => "sse").increment(1);
    Bytes::from(v)
}

fn sse_response(body: impl Stream<Item = Chunk> + 'static) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body)
}

/// `GET /api/v1/stream/search`: a search by a stored point's id (the query string of
/// `GET /api/v1/search`).
pub async fn search_get(
    app: web::Data<AppState>,
    caller: Caller,
    q: web::Query<SearchQuery>,
) -> Result<HttpResponse, ApiError> {
    search(app, caller, q.into_inner().into_body()?).await
}

/// `POST /api/v1/stream/search` with a search body.
pub async fn search_post(
    app: web::Data<AppState>,
    caller: Caller,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (body, _busy): (SearchBody, _) = read_json(&app, payload).await?;
    search(app, caller, body).await
}

async fn search(
    app: web::Data<AppState>,
    caller: Caller,
    body: SearchBody,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let name = caller.internal(body.collection.as_deref().unwrap_or(DEFAULT_COLLECTION))?;
    let permit = app.streams.admit(Kind::Sse)?;
    let c = rest::ask(&app, Lookup(name)).await??;
    let req = rest::resolve_search(&c, body)?;
    let ranked = rest::deadline(&app, async { Ok(c.search_ranked(req).await?) }).await?;
    app.supervisor.record_search(started.elapsed());
    let query_id = super::next_query_id();
    struct State {
        ranked: Ranked,
        sent: u64,
        started: Instant,
        query_id: u64,
        phase: u8,
        _permit: Permit,
    }
    let state = State {
        ranked,
        sent: 0,
        started,
        query_id,
        phase: 0,
        _permit: permit,
    };
    let body = stream::unfold(state, |mut s| async move {
        let chunk = match s.phase {
            0 => {
                s.phase = 1;
                event(
                    "search_start",
                    Some(0),
                    &json!({"event": "search_start", "query_id": s.query_id}),
                )
            }
            1 => match s.ranked.next() {
                Some(h) => {
                    s.sent += 1;
                    if s.sent == 1 {
                        metrics::histogram!("ruvector_stream_first_result_seconds")
                            .record(s.started.elapsed().as_secs_f64());
                    }
                    #[derive(Serialize)]
                    struct SseResult<'a> {
                        event: &'static str,
                        #[serde(flatten)]
                        hit: proto::RankedHit<'a>,
                    }
                    let hit = proto::ranked_hit(s.query_id, s.sent as usize, &h);
                    event(
                        "result",
                        Some(s.sent),
                        &SseResult {
                            event: "result",
                            hit,
                        },
                    )
                }
                None => {
                    s.phase = 2;
                    metrics::histogram!("ruvector_stream_search_seconds")
                        .record(s.started.elapsed().as_secs_f64());
                    event(
                        "search_complete",
                        Some(s.sent + 1),
                        &json!({"event": "search_complete", "query_id": s.query_id,
                                "total_results": s.sent, "took_ms": rest::took_ms(s.started)}),
                    )
                }
            },
            _ => return None,
        };
        Some((Ok::<_, actix_web::Error>(chunk), s))
    });
    Ok(sse_response(body))
}

#[derive(Deserialize)]
pub struct SubscribeQuery {
    collection: String,
    filter: Option<String>,
    vector: Option<String>,
    k: Option<usize>,
    score_threshold: Option<f32>,
    last_event_id: Option<u64>,
}

struct SseSink(mpsc::Sender<Delivery>);

impl Sink for SseSink {
    fn deliver(&self, d: Delivery) -> bool {
        self.0.try_send(d).is_ok()
    }
}

/// Unsubscribes when the stream is dropped (client gone, drained, or ended).
struct SubGuard {
    app: web::Data<AppState>,
    collection: Arc<str>,
    id: u64,
}

impl Drop for SubGuard {
    fn drop(&mut self) {
        self.app.hub.unsubscribe(&self.collection, self.id);
    }
}

/// `GET /api/v1/stream/subscribe`.
pub async fn subscribe(
    app: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    q: web::Query<SubscribeQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = q.into_inner();
    let json_param = |name: &str, v: Option<String>| -> Result<Option<Value>, ApiError> {
        v.map(|s| {
            serde_json::from_str(&s)
                .map_err(|e| ApiError::invalid(format!("{name} is not JSON: {e}")))
        })
        .transpose()
    };
    let vector: Option<Vec<f32>> = match json_param("vector", q.vector)? {
        None => None,
        Some(v) => Some(
            serde_json::from_value(v)
                .map_err(|_| ApiError::invalid("vector must be an array of numbers"))?,
        ),
    };
    let last_id = match req.headers().get("Last-Event-ID") {
        Some(h) => Some(
            h.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::invalid("Last-Event-ID must be a sequence number"))?,
        ),
        None => q.last_event_id,
    };
    let shown = q.collection.clone();
    let frame = SubscribeFrame {
        collection: caller.internal(&q.collection)?,
        vector,
        k: q.k,
        score_threshold: q.score_threshold,
        filter: json_param("filter", q.filter)?,
    };
    let permit = app.streams.admit(Kind::Sse)?;
    let (collection, query, top) = prepare_subscription(&app, frame).await?;
    let cfg = &app.settings.stream;
    let (tx, rx) = mpsc::channel(cfg.max_outbound_messages);
    let sink = Arc::new(SseSink(tx));
    let mut first = Vec::new();
    let subscribed = match app.hub.subscribe(
        &collection,
        query.clone(),
        top.clone(),
        sink.clone(),
        last_id,
    ) {
        Ok(r) => r,
        Err(ResetNeeded) => {
            let r = app
                .hub
                .subscribe(&collection, query, top, sink, None)
                .map_err(|_| ApiError::invalid("subscription refused"))?;
            metrics::counter!("ruvector_sse_resets_total").increment(1);
            first.push(event(
                "reset",
                None,
                &json!({"event": "reset", "seq": r.1,
                        "message": "the requested position left the replay window"}),
            ));
            r
        }
    };
    let (id, seq) = subscribed;
    first.insert(
        0,
        event(
            "subscribed",
            None,
            &json!({"event": "subscribed", "subscription": id, "collection": shown, "seq": seq}),
        ),
    );
    let stored: Arc<str> = Arc::from(collection.as_str());
    struct State {
        first: std::vec::IntoIter<Bytes>,
        rx: mpsc::Receiver<Delivery>,
        beat: tokio::time::Interval,
        drain: watch::Receiver<bool>,
        collection: Arc<str>,
        ended: bool,
        _guard: SubGuard,
        _permit: Permit,
    }
    let beat_every = Duration::from_millis(cfg.heartbeat_interval_ms);
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + beat_every, beat_every);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = State {
        first: first.into_iter(),
        rx,
        beat,
        drain: app.streams.drain_signal(),
        collection: Arc::from(shown.as_str()),
        ended: false,
        _guard: SubGuard {
            app: app.clone(),
            collection: stored,
            id,
        },
        _permit: permit,
    };
    let body = stream::unfold(state, |mut s| async move {
        if s.ended {
            return None;
        }
        if let Some(b) = s.first.next() {
            return Some((Ok::<_, actix_web::Error>(b), s));
        }
        if *s.drain.borrow() {
            s.ended = true;
            let b = event(
                "end",
                None,
                &json!({"event": "end", "reason": "server draining"}),
            );
            return Some((Ok(b), s));
        }
        let chunk = tokio::select! {
            d = s.rx.recv() => match d {
                Some(d) => {
                    let mut v = serde_json::to_value(proto::event_frame(&s.collection, &d))
                        .unwrap_or(Value::Null);
                    v["event"] = json!("event");
                    metrics::counter!("ruvector_stream_events_sent_total").increment(1);
                    event("event", Some(d.seq), &v)
                }
                None => {
                    s.ended = true;
                    metrics::counter!("ruvector_stream_slow_consumers_total").increment(1);
                    event("error", None, &json!({"event": "error", "code": "overloaded",
                        "message": "slow consumer: events overflowed; reconnect with Last-Event-ID"}))
                }
            },
            _ = s.beat.tick() => Bytes::from_static(b": ping\n\n"),
            _ = s.drain.changed() => {
                s.ended = true;
                event("end", None, &json!({"event": "end", "reason": "server draining"}))
            }
        };
        Some((Ok(chunk), s))
    });
    Ok(sse_response(body))
}
