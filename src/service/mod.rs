//! The service layer: what the server does, independent of how a request arrived. REST
//! handlers, WebSocket sessions and both SSE servers are thin adapters over it — they parse into
//! its shapes, call it and render its answers and `ApiError`s; none imports another.
//!
//! - `shapes`: request and answer shapes shared by every transport, and the defaults.
//! - `call`: calls into the engine under the request deadline.
//! - `gate`: authentication, scopes and admission — one decision for every transport.
//! - `collections`, `points`, `search`, `subscribe`: the operations; `coordination`: agent
//!   coordination through the tenant's coordinator.
//! - `sse`: SSE event text, shared by the two SSE servers; `event_id`: change ids that name
//!   their instance, and resume positions.

pub mod call;
pub mod collections;
pub mod coordination;
pub mod event_id;
pub mod gate;
pub mod points;
pub mod search;
pub mod shapes;
pub mod sse;
pub mod subscribe;
