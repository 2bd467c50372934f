//! # ruvector-load
//!
//! Benchmarks and load for ruvector-streaming, as a library (the `ruvector-load` binary and the
//! server's tests share its data generators).
//!
//! ## Layout
//! - `client`: the blocking HTTP client the commands share.
//! - `data`: `.fvecs`/`.ivecs` I/O, clustered synthetic data, brute-force ground truth.
//! - `ann`: the `bench-ann` runs, in process and through the HTTP API.
//! - `streams`: `idle-scale`, many idle WebSocket streams and the server's memory per stream
//!   before and after a burst of large messages.
//! - `abuse`: abusive clients (ping flood, slow bodies, fat metadata) in their own processes and
//!   the latency of a well-behaved client beside them.
//! - `coord`: coordination load — claims by many agents, topic fan-out, idle agents' memory.
//! - `crash`: the crash-cycle benchmark (`kill -9` under concurrent writers, every
//!   acknowledged operation checked after each restart).
//! - `scenario`: the scenario files (`load/scenarios/*.toml`).
//! - `run`: running a scenario (the driver and its measurement); `worker`: one worker's streams;
//!   `report`: the JSON
//!   report, table and SVG chart.

pub mod abuse;
pub mod ann;
pub mod ann_http;
pub mod client;
pub mod coord;
pub mod crash;
pub mod data;
pub mod report;
pub mod run;
pub mod scenario;
pub mod streams;
pub mod sweep;
pub mod versus;
pub mod worker;
