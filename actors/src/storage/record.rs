//! The byte form of a log record: `[len u32 LE][crc32 u32 LE][postcard payload]`.
//!
//! Metadata travels as JSON text inside the payload because postcard, being compact and
//! non-self-describing, cannot carry `serde_json::Value` directly.

use serde::{Deserialize, Serialize};

use crate::index::hnsw::Op;
use crate::types::Metadata;

/// A record longer than this is taken for corruption.
pub const MAX_RECORD_BYTES: usize = 256 << 20;
pub const HEADER_BYTES: usize = 8;

#[derive(Serialize, Deserialize)]
enum WireOp {
    Upsert {
        id: String,
        vector: Vec<f32>,
        metadata: Option<String>,
    },
    Delete {
        id: String,
    },
    SetMetadata {
        id: String,
        metadata: Option<String>,
    },
}

#[derive(Serialize, Deserialize)]
struct WireRecord {
    seq: u64,
    op: WireOp,
}

fn meta_text(m: &Option<Metadata>) -> Option<String> {
    m.as_ref()
        .map(|m| serde_json::to_string(m).unwrap_or_else(|_| "{}".into()))
}

fn meta_parse(s: Option<String>) -> Result<Option<Metadata>, String> {
    s.map(|t| serde_json::from_str(&t).map_err(|e| format!("metadata: {e}")))
        .transpose()
}

/// Appends the framed record for `(seq, op)` to `out`.
pub fn encode(seq: u64, op: &Op, out: &mut Vec<u8>) {
    let op = match op {
        Op::Upsert {
            id,
            vector,
            metadata,
        } => WireOp::Upsert {
            id: id.clone(),
            vector: vector.clone(),
            metadata: meta_text(metadata),
        },
        Op::Delete { id } => WireOp::Delete { id: id.clone() },
        Op::SetMetadata { id, metadata } => WireOp::SetMetadata {
            id: id.clone(),
            metadata: meta_text(metadata),
        },
    };
    let payload = postcard::to_stdvec(&WireRecord { seq, op }).unwrap_or_default();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
}

/// Outcome of decoding at one position of a segment.
pub enum Decoded {
    Record {
        seq: u64,
        op: Op,
        len: usize,
    },
    /// Clean end of data.
    End,
    /// A torn or damaged record: everything from here on is dropped.
    Corrupt(String),
}

/// Decodes the record at the start of `buf`.
pub fn decode(buf: &[u8]) -> Decoded {
    if buf.is_empty() {
        return Decoded::End;
    }
    if buf.len() < HEADER_BYTES {
        return Decoded::Corrupt(format!("torn header ({} bytes)", buf.len()));
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if len > MAX_RECORD_BYTES {
        return Decoded::Corrupt(format!("record length {len} is implausible"));
    }
    let Some(payload) = buf.get(HEADER_BYTES..HEADER_BYTES + len) else {
        return Decoded::Corrupt(format!(
            "torn record: {len} bytes announced, {} present",
            buf.len() - HEADER_BYTES
        ));
    };
    if crc32fast::hash(payload) != crc {
        return Decoded::Corrupt("checksum mismatch".into());
    }
    let rec: WireRecord = match postcard::from_bytes(payload) {
        Ok(r) => r,
        Err(e) => return Decoded::Corrupt(format!("undecodable record: {e}")),
    };
    let op = match rec.op {
        WireOp::Upsert {
            id,
            vector,
            metadata,
        } => meta_parse(metadata).map(|metadata| Op::Upsert {
            id,
            vector,
            metadata,
        }),
        WireOp::Delete { id } => Ok(Op::Delete { id }),
        WireOp::SetMetadata { id, metadata } => {
            meta_parse(metadata).map(|metadata| Op::SetMetadata { id, metadata })
        }
    };
    match op {
        Ok(op) => Decoded::Record {
            seq: rec.seq,
            op,
            len: HEADER_BYTES + len,
        },
        Err(e) => Decoded::Corrupt(e),
    }
}
