//! The actix-free vector engine: SIMD distances, the filter language, HNSW partitions.

pub mod distance;
pub mod filter;
pub mod graph;
pub mod hnsw;
mod slab;
pub mod view;
