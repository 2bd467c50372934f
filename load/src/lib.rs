//! # ruvector-load
//!
//! Benchmarks and load for ruvector-streaming, as a library (the `ruvector-load` binary and the
//! server's tests share its data generators).
//!
//! ## Layout
//! - `data`: `.fvecs`/`.ivecs` I/O, clustered synthetic data, brute-force ground truth.
//! - `ann`: the `bench-ann` runs, in process and through the HTTP API.
//! - `streams`: `idle-scale`, many idle WebSocket streams and the server's memory per stream.

pub mod ann;
pub mod data;
pub mod streams;
