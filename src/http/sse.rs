//! SSE through actix-web (PROTOCOL.md §SSE): serves `/api/v1/stream/...` when it is not the first
//! request on its connection, and `POST /api/v1/stream/search` (a body to read). A connection's
//! first `GET` is served by the lean SSE server of the stream layer instead, which holds far less
//! memory per idle stream; both send the same events (`service::sse`).
//!
//! Requests are checked before the stream starts, so a bad one gets the usual JSON error and
//! status. A search's events are produced lazily from the shard merge as actix-web writes them.
//! A subscription's events come from the hub through a bounded channel; a client that lets it
//! fill loses the subscription and the stream ends with an `error` event. `Last-Event-ID` (or
//! `?last_event_id=`) resumes from the hub's replay window, or starts with `event: reset`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_util::stream::{self, Stream};
use ruvector_actors::Ranked;
use ruvector_actors::{Delivery, Sink};
use tokio::sync::{mpsc, watch};

use super::body::read_json;
use super::guard::Caller;
use crate::error::ApiError;
use crate::registry::{next_query_id, Kind, Permit};
use crate::service::search::search_ranked;
use crate::service::shapes::{SearchBody, SearchQuery, DEFAULT_COLLECTION};
use crate::service::sse;
use crate::service::subscribe::{self, SubscribeQuery};
use crate::state::AppState;

type Chunk = Result<Bytes, actix_web::Error>;

fn sse_response(body: impl Stream<Item = Chunk> + 'static) -> HttpResponse {
    let mut res = HttpResponse::Ok();
    for h in sse::HEADERS {
        res.insert_header(h);
    }
    res.streaming(body)
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
    let ranked = search_ranked(&app, name, body).await?;
    enum Phase {
        Start,
        Results,
        Done,
    }
    struct State {
        ranked: Ranked,
        sent: u64,
        started: Instant,
        query_id: u64,
        phase: Phase,
        _permit: Permit,
    }
    let state = State {
        ranked,
        sent: 0,
        started,
        query_id: next_query_id(),
        phase: Phase::Start,
        _permit: permit,
    };
    let body = stream::unfold(state, |mut s| async move {
        let chunk = match s.phase {
            Phase::Start => {
                s.phase = Phase::Results;
                sse::search_start(s.query_id)
            }
            Phase::Results => match s.ranked.next() {
                Some(h) => {
                    s.sent += 1;
                    if s.sent == 1 {
                        metrics::histogram!("ruvector_stream_first_result_seconds")
                            .record(s.started.elapsed().as_secs_f64());
                    }
                    sse::result(s.query_id, s.sent, &h)
                }
                None => {
                    s.phase = Phase::Done;
                    metrics::histogram!("ruvector_stream_search_seconds")
                        .record(s.started.elapsed().as_secs_f64());
                    sse::search_complete(s.query_id, s.sent, s.started)
                }
            },
            Phase::Done => return None,
        };
        Some((Ok::<_, actix_web::Error>(chunk), s))
    });
    Ok(sse_response(body))
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
    let last_event_id = match req.headers().get("Last-Event-ID") {
        Some(h) => Some(
            h.to_str()
                .map_err(|_| ApiError::invalid("Last-Event-ID must be a sequence number"))?,
        ),
        None => None,
    };
    let (request, resume_after) = q.into_inner().into_request(last_event_id)?;
    let shown = request.collection.clone();
    let permit = app.streams.admit(Kind::Sse)?;
    let prepared = subscribe::prepare(&app, &caller, request).await?;
    let stored: Arc<str> = Arc::from(prepared.collection.as_str());
    let cfg = &app.settings.stream;
    let (tx, rx) = mpsc::channel(cfg.max_outbound_messages);
    let opened = subscribe::open(&app, prepared, Arc::new(SseSink(tx)), resume_after)?;
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
        first: sse::subscribed(&opened, &shown).into_iter(),
        rx,
        beat,
        drain: app.lifecycle.drain_signal(),
        collection: Arc::from(shown.as_str()),
        ended: false,
        _guard: SubGuard {
            app: app.clone(),
            collection: stored,
            id: opened.id,
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
            return Some((Ok(sse::end_draining()), s));
        }
        let chunk = tokio::select! {
            d = s.rx.recv() => match d {
                Some(d) => sse::change(&s.collection, &d),
                None => {
                    s.ended = true;
                    sse::overflowed()
                }
            },
            _ = s.beat.tick() => sse::ping(),
            _ = s.drain.changed() => {
                s.ended = true;
                sse::end_draining()
            }
        };
        Some((Ok(chunk), s))
    });
    Ok(sse_response(body))
}
