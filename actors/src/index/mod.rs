//! The actix-free vector engine: distances, the filter language, our HNSW graph and the
//! partitions built on it.

mod codes;
pub mod distance;
pub mod filter;
pub mod graph;
pub mod hnsw;
mod slab;
mod slots;
pub mod versions;
