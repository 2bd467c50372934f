//! The actix-free vector engine: SIMD distances, the filter language, HNSW partitions.

pub mod distance;
pub mod filter;
pub mod hnsw;
pub mod view;
