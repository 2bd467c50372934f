//! Redis key names of replication, in one place so the publisher and the links agree.

/// A region's change stream.
pub fn changes(region: &str) -> String {
    format!("ruvector:changes:{region}")
}
/// The stream's epoch: a new value means the stream was lost.
pub fn epoch(region: &str) -> String {
    format!("ruvector:changes:{region}:epoch")
}
/// Per shard log, the last sequence number the stream holds.
pub fn published(region: &str) -> String {
    format!("ruvector:changes:{region}:published")
}
