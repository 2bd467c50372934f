//! SSE event text (PROTOCOL.md §SSE), shared by the two SSE servers — the lean one on the stream
//! layer (a connection's first request) and actix-web's (a later request on a keep-alive
//! connection) — so both send byte-identical events. Each event's JSON repeats its name as
//! `"event"`.

use std::time::Instant;

use bytes::Bytes;
use ruvector_actors::Delivery;
use ruvector_actors::Hit;
use serde::Serialize;
use serde_json::{json, Value};

use super::call::took_ms;
use super::event_id::instance_tag;
use super::shapes::{event_frame, ranked_hit, RankedHit};
use super::subscribe::Opened;

/// A comment line that keeps a quiet stream open through proxies.
const PING: &[u8] = b": ping\n\n";

/// A heartbeat (counted as `ruvector_stream_frames_out_total{type="sse_ping"}`).
pub fn ping() -> Bytes {
    metrics::counter!("ruvector_stream_frames_out_total", "type" => "sse_ping").increment(1);
    Bytes::from_static(PING)
}

/// The response head fields of every SSE answer (after the status line).
pub const HEADERS: [(&str, &str); 3] = [
    ("Content-Type", "text/event-stream"),
    ("Cache-Control", "no-cache"),
    ("X-Accel-Buffering", "no"),
];

/// One SSE event.
pub fn event(name: &str, id: Option<u64>, data: &impl Serialize) -> Bytes {
    event_with_id(name, id.map(|i| i.to_string()), data)
}

fn event_with_id(name: &str, id: Option<String>, data: &impl Serialize) -> Bytes {
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

/// A streamed search's first event (id 0).
pub fn search_start(query_id: u64) -> Bytes {
    event(
        "search_start",
        Some(0),
        &json!({"event": "search_start", "query_id": query_id}),
    )
}

/// The hit of rank `rank` (from 1; also its event id).
pub fn result(query_id: u64, rank: u64, hit: &Hit) -> Bytes {
    #[derive(Serialize)]
    struct SseResult<'a> {
        event: &'static str,
        #[serde(flatten)]
        hit: RankedHit<'a>,
    }
    let hit = ranked_hit(query_id, rank as usize, hit);
    event(
        "result",
        Some(rank),
        &SseResult {
            event: "result",
            hit,
        },
    )
}

/// A streamed search's last event, after `sent` results.
pub fn search_complete(query_id: u64, sent: u64, started: Instant) -> Bytes {
    event(
        "search_complete",
        Some(sent + 1),
        &json!({"event": "search_complete", "query_id": query_id,
                "total_results": sent, "took_ms": took_ms(started)}),
    )
}

/// A subscription's first events: `subscribed`, then `reset` when the resume position was lost.
pub fn subscribed(opened: &Opened, shown: &str) -> Vec<Bytes> {
    let mut first = vec![event(
        "subscribed",
        None,
        &json!({"event": "subscribed", "subscription": opened.id, "collection": shown,
                "seq": opened.seq}),
    )];
    if opened.reset {
        first.push(event(
            "reset",
            None,
            &json!({"event": "reset", "seq": opened.seq,
                    "message": "the requested position left the replay window"}),
        ));
    }
    first
}

/// A change matching the subscription; its id is the collection's sequence number and this
/// instance's tag, `<seq>.<tag>` (what `Last-Event-ID` resumes from).
pub fn change(collection_shown: &str, d: &Delivery) -> Bytes {
    let mut v = serde_json::to_value(event_frame(collection_shown, d)).unwrap_or(Value::Null);
    v["event"] = json!("event");
    metrics::counter!("ruvector_stream_events_sent_total").increment(1);
    let id = match instance_tag() {
        "" => d.seq.to_string(),
        tag => format!("{}.{tag}", d.seq),
    };
    event_with_id("event", Some(id), &v)
}

/// The stream ends because the server drains.
pub fn end_draining() -> Bytes {
    event(
        "end",
        None,
        &json!({"event": "end", "reason": "server draining"}),
    )
}

/// The stream ends because its client fell behind the events.
pub fn overflowed() -> Bytes {
    metrics::counter!("ruvector_stream_slow_consumers_total").increment(1);
    event(
        "error",
        None,
        &json!({"event": "error", "code": "overloaded",
                "message": "slow consumer: events overflowed; reconnect with Last-Event-ID"}),
    )
}
