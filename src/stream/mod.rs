//! The lean connection layer (PROTOCOL.md §Streams, §SSE): connections whose first request is a
//! WebSocket upgrade or an SSE `GET` are served here, outside actix-web, so an idle stream holds
//! no buffer of its own (see `accept` for why and how they are picked).
//!
//! - `accept`: peeking at the request line, routing, the WebSocket upgrade.
//! - `http1`: request heads and raw responses; `conn`: the shared socket, scratch buffer,
//!   reading a head and refusing it.
//! - `wire`: RFC 6455 framing; `inbox`: inbound frames to whole messages; `outbox`: the bounded
//!   outbound queue; `proto`: the JSON frames; `push`: hub events into a stream's mailbox.
//! - `session`: the WebSocket session actor (our frames, or agentic-flow's `federation`
//!   dialect); `sse`: the SSE stream actor.

pub mod accept;
pub mod conn;
pub mod federation;
pub mod http1;
pub mod inbox;
pub mod outbox;
pub mod proto;
pub mod push;
pub mod session;
pub mod sse;
pub mod wire;
