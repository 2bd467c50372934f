//! The byte form of a log record, in three versions.
//!
//! - **v3** (written today): a segment starts with an 8-byte header (`RVWAL`, 0, version u16 LE);
//!   each record is `[magic u32 LE][len u32 LE][crc32 u32 LE][postcard payload]`, the checksum
//!   covering the length and the payload. The magic lets replay re-synchronise after damage in
//!   the middle of a segment (scan for the next magic whose checksum holds) instead of dropping
//!   everything after it. The payload carries the version the write gives its point (stamp and
//!   version vector, see `version.rs`), so replay restores versions and tombstones exactly.
//! - **v2** (read only): the same framing; the payload carried only the stamp (origin time,
//!   region, instance), read as a version whose vector holds its own region alone.
//! - **v1** (round 1, read only): no segment header, `[len u32][crc32 u32][payload]`.
//!   Re-synchronising there means trying every offset; a false match needs a 32-bit checksum
//!   collision *and* the next sequence number.
//!
//! Metadata travels as JSON text inside the payload because postcard, being compact and
//! non-self-describing, cannot carry `serde_json::Value` directly.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::index::hnsw::Op;
use crate::types::Metadata;
use crate::version::PointVersion;

/// A record longer than this is taken for corruption.
pub const MAX_RECORD_BYTES: usize = 256 << 20;
/// Segment header of the v3 format (written today).
pub const SEGMENT_HEADER: [u8; 8] = [b'R', b'V', b'W', b'A', b'L', 0, 3, 0];
/// Segment header of the v2 format (read only).
const SEGMENT_HEADER_V2: [u8; 8] = [b'R', b'V', b'W', b'A', b'L', 0, 2, 0];
const RECORD_MAGIC: [u8; 4] = *b"RVR2";
const V2_HEADER: usize = 12;
const V1_HEADER: usize = 8;

/// Which framing a segment uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    V1,
    V2,
    V3,
}

impl Format {
    /// The format of a segment from its first bytes, and where its records start.
    pub fn of_segment(data: &[u8]) -> (Format, usize) {
        if data.starts_with(&SEGMENT_HEADER) {
            (Format::V3, SEGMENT_HEADER.len())
        } else if data.starts_with(&SEGMENT_HEADER_V2) {
            (Format::V2, SEGMENT_HEADER_V2.len())
        } else {
            (Format::V1, 0)
        }
    }
}

/// Who made a write and when (format v2's payload; v3 carries a whole `PointVersion`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct WriteStamp {
    /// Origin wall-clock time, ns since the Unix epoch.
    pub origin_ts_ns: u64,
    pub region: String,
    pub instance: String,
}

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
struct WireRecordV1 {
    seq: u64,
    op: WireOp,
}

#[derive(Serialize, Deserialize)]
struct WireRecordV2 {
    seq: u64,
    stamp: Option<WriteStamp>,
    op: WireOp,
}

#[derive(Serialize, Deserialize)]
struct WireRecordV3 {
    seq: u64,
    version: Option<PointVersion>,
    op: WireOp,
}

impl WriteStamp {
    fn into_version(self) -> PointVersion {
        let region: Arc<str> = Arc::from(self.region);
        PointVersion {
            ts: self.origin_ts_ns,
            vv: vec![(region.clone(), self.origin_ts_ns)],
            region,
            instance: Arc::from(self.instance),
        }
    }
}

fn meta_text(m: &Option<Arc<Metadata>>) -> Result<Option<String>, String> {
    m.as_ref()
        .map(|m| serde_json::to_string(m.as_ref()).map_err(|e| format!("metadata: {e}")))
        .transpose()
}

fn meta_parse(s: Option<String>) -> Result<Option<Arc<Metadata>>, String> {
    s.map(|t| {
        serde_json::from_str(&t)
            .map(Arc::new)
            .map_err(|e| format!("metadata: {e}"))
    })
    .transpose()
}

fn wire_op(op: &Op) -> Result<WireOp, String> {
    Ok(match op {
        Op::Upsert {
            id,
            vector,
            metadata,
        } => WireOp::Upsert {
            id: id.clone(),
            vector: vector.clone(),
            metadata: meta_text(metadata)?,
        },
        Op::Delete { id } => WireOp::Delete { id: id.clone() },
        Op::SetMetadata { id, metadata } => WireOp::SetMetadata {
            id: id.clone(),
            metadata: meta_text(metadata)?,
        },
    })
}

fn op_of(op: WireOp) -> Result<Op, String> {
    match op {
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
    }
}

fn checksum(len: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(len);
    h.update(payload);
    h.finalize()
}

/// Appends the v3 record for `(seq, version, op)` to `out`. Fails (and appends nothing) only if
/// the op cannot be serialised: an empty or partial record never reaches the log.
pub fn encode(
    seq: u64,
    version: Option<&PointVersion>,
    op: &Op,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let rec = WireRecordV3 {
        seq,
        version: version.cloned(),
        op: wire_op(op)?,
    };
    let payload = postcard::to_stdvec(&rec).map_err(|e| format!("encode: {e}"))?;
    if payload.len() > MAX_RECORD_BYTES {
        return Err(format!(
            "record of {} bytes is over the limit",
            payload.len()
        ));
    }
    let len = (payload.len() as u32).to_le_bytes();
    out.extend_from_slice(&RECORD_MAGIC);
    out.extend_from_slice(&len);
    out.extend_from_slice(&checksum(&len, &payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

/// Outcome of decoding at one position of a segment.
#[derive(Debug)]
pub enum Decoded {
    Record {
        seq: u64,
        version: Option<PointVersion>,
        op: Op,
        /// Bytes the record takes, header included.
        len: usize,
    },
    /// Clean end of data.
    End,
    /// Torn or damaged bytes here.
    Corrupt(String),
}

fn word(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Decodes the record at the start of `buf`. Never panics and never allocates more than the
/// record's own (checksummed) payload needs.
pub fn decode(format: Format, buf: &[u8]) -> Decoded {
    if buf.is_empty() {
        return Decoded::End;
    }
    let header = match format {
        Format::V1 => V1_HEADER,
        Format::V2 | Format::V3 => V2_HEADER,
    };
    if buf.len() < header {
        return Decoded::Corrupt(format!("torn header ({} bytes)", buf.len()));
    }
    let (len_at, crc_at) = match format {
        Format::V1 => (0, 4),
        Format::V2 | Format::V3 => {
            if buf[..4] != RECORD_MAGIC {
                return Decoded::Corrupt("record magic missing".into());
            }
            (4, 8)
        }
    };
    let len = word(buf, len_at) as usize;
    let crc = word(buf, crc_at);
    if len > MAX_RECORD_BYTES {
        return Decoded::Corrupt(format!("record length {len} is implausible"));
    }
    let Some(payload) = buf.get(header..header + len) else {
        return Decoded::Corrupt(format!(
            "torn record: {len} bytes announced, {} present",
            buf.len() - header
        ));
    };
    let sum = match format {
        Format::V1 => crc32fast::hash(payload),
        Format::V2 | Format::V3 => checksum(&buf[len_at..len_at + 4], payload),
    };
    if sum != crc {
        return Decoded::Corrupt("checksum mismatch".into());
    }
    let parsed = match format {
        Format::V1 => postcard::from_bytes::<WireRecordV1>(payload).map(|r| (r.seq, None, r.op)),
        Format::V2 => postcard::from_bytes::<WireRecordV2>(payload)
            .map(|r| (r.seq, r.stamp.map(WriteStamp::into_version), r.op)),
        Format::V3 => {
            postcard::from_bytes::<WireRecordV3>(payload).map(|r| (r.seq, r.version, r.op))
        }
    };
    let (seq, version, op) = match parsed {
        Ok(r) => r,
        Err(e) => return Decoded::Corrupt(format!("undecodable record: {e}")),
    };
    match op_of(op) {
        Ok(op) => Decoded::Record {
            seq,
            version,
            op,
            len: header + len,
        },
        Err(e) => Decoded::Corrupt(e),
    }
}

/// The offset of the next intact record after damage at `from`, whose sequence number is
/// above `after`; `None` if nothing intact follows.
pub fn resync(format: Format, data: &[u8], from: usize, after: u64) -> Option<usize> {
    let mut at = from + 1;
    while at < data.len() {
        let candidate = match format {
            Format::V2 | Format::V3 => {
                let rest = &data[at..];
                let i = rest.windows(4).position(|w| w == RECORD_MAGIC)?;
                at + i
            }
            Format::V1 => at,
        };
        if let Decoded::Record { seq, .. } = decode(format, &data[candidate..]) {
            if seq > after {
                return Some(candidate);
            }
        }
        at = candidate + 1;
    }
    None
}

/// A small upsert with metadata, for the storage tests.
#[cfg(test)]
pub(crate) fn sample_upsert(id: &str) -> Op {
    Op::Upsert {
        id: id.into(),
        vector: vec![1.0, 2.0],
        metadata: serde_json::json!({"a": 1})
            .as_object()
            .cloned()
            .map(Arc::new),
    }
}

#[cfg(test)]
mod tests {
    use super::sample_upsert as up;
    use super::*;

    #[test]
    fn a_record_round_trips_with_its_version() {
        let version = PointVersion::local(None, 7, &Arc::from("eu"), &Arc::from("i-1"));
        let mut buf = Vec::new();
        encode(42, Some(&version), &up("a"), &mut buf).unwrap();
        match decode(Format::V3, &buf) {
            Decoded::Record {
                seq,
                version: v,
                op,
                len,
            } => {
                assert_eq!((seq, v, len), (42, Some(version), buf.len()));
                assert_eq!(op, up("a"));
            }
            other @ (Decoded::End | Decoded::Corrupt(_)) => panic!("{other:?}"),
        }
    }

    #[test]
    fn resync_finds_the_record_after_a_damaged_one() {
        let mut buf = Vec::new();
        encode(1, None, &up("a"), &mut buf).unwrap();
        let second = buf.len();
        encode(2, None, &up("b"), &mut buf).unwrap();
        let third = buf.len();
        encode(3, None, &up("c"), &mut buf).unwrap();
        buf[second + 14] ^= 0x40;
        assert!(matches!(
            decode(Format::V3, &buf[second..]),
            Decoded::Corrupt(_)
        ));
        assert_eq!(resync(Format::V3, &buf, second, 1), Some(third));
        assert_eq!(resync(Format::V3, &buf, third, 3), None);
    }

    #[test]
    fn a_v2_record_reads_as_a_version_of_its_own_region() {
        let rec = WireRecordV2 {
            seq: 3,
            stamp: Some(WriteStamp {
                origin_ts_ns: 9,
                region: "us".into(),
                instance: "u1".into(),
            }),
            op: WireOp::Delete { id: "x".into() },
        };
        let payload = postcard::to_stdvec(&rec).unwrap();
        let len = (payload.len() as u32).to_le_bytes();
        let mut buf = SEGMENT_HEADER_V2.to_vec();
        buf.extend_from_slice(&RECORD_MAGIC);
        buf.extend_from_slice(&len);
        buf.extend_from_slice(&checksum(&len, &payload).to_le_bytes());
        buf.extend_from_slice(&payload);
        let (format, at) = Format::of_segment(&buf);
        assert_eq!(format, Format::V2);
        match decode(format, &buf[at..]) {
            Decoded::Record { seq, version, .. } => {
                let v = version.unwrap();
                assert_eq!((seq, v.ts, v.vv), (3, 9, vec![(Arc::from("us"), 9)]));
            }
            other @ (Decoded::End | Decoded::Corrupt(_)) => panic!("{other:?}"),
        }
    }
}
