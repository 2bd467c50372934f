//! One entry of a region's change stream (`ruvector:changes:{region}`): how an acknowledged
//! write travels to the other regions and to the region's other instances.
//!
//! Fields (binary-safe Redis stream fields, short names because every write pays for them):
//! `k` kind (`u` upsert: the point's whole state, `d` delete, `m` metadata only, `x` the whole
//! collection deleted: no `i`, `v`, `md`; see `drops.rs`), `c` collection,
//! `dim` and `met` (dimension and metric: a region that lacks the collection creates it), `i` the
//! point id, `v` the vector (f32 little-endian), `md` metadata JSON (absent: none), `ver` the
//! version the write gave the point (`PointVersion::to_json`). Decoding trusts nothing: whoever
//! can write to a peer's Redis must not be able to crash or wedge this region; the router
//! validates ids, vectors and metadata as it does a client's.

use std::collections::HashMap;

use ruvector_actors::version::PointVersion;
use ruvector_actors::{Metadata, Metric, ReplicatedChange};

/// Most bytes of one entry's metadata JSON or version JSON that decoding accepts.
const MAX_JSON_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEntry {
    pub collection: String,
    pub dimension: usize,
    pub metric: Metric,
    pub id: String,
    pub change: ReplicatedChange,
    pub version: PointVersion,
}

fn vector_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn metric_of(s: &str) -> Option<Metric> {
    [Metric::Cosine, Metric::L2, Metric::Dot]
        .into_iter()
        .find(|m| m.as_str() == s)
}

/// A collection deleted at its origin (`k` = `x`).
#[derive(Debug, Clone, PartialEq)]
pub struct DropEntry {
    pub collection: String,
    pub version: PointVersion,
}

/// One stream entry: a point's change, or a collection's delete.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    Point(ChangeEntry),
    Drop(DropEntry),
}

impl Entry {
    pub fn from_fields(map: &HashMap<String, redis::Value>) -> Result<Entry, String> {
        if !matches!(map.get("k"), Some(redis::Value::BulkString(k)) if k.as_slice() == b"x") {
            return ChangeEntry::from_fields(map).map(Entry::Point);
        }
        let text = |key: &str| -> Result<String, String> {
            match map.get(key) {
                Some(redis::Value::BulkString(b)) if b.len() <= MAX_JSON_BYTES => {
                    String::from_utf8(b.clone()).map_err(|_| format!("field {key} is not UTF-8"))
                }
                Some(_) | None => Err(format!("field {key} missing or too long")),
            }
        };
        let version: serde_json::Value =
            serde_json::from_str(&text("ver")?).map_err(|e| format!("bad JSON: {e}"))?;
        Ok(Entry::Drop(DropEntry {
            collection: text("c")?,
            version: PointVersion::from_json(&version)?,
        }))
    }
}

impl DropEntry {
    /// The stream fields of a collection delete.
    pub fn fields(record: &super::drops::DropRecord) -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("k", b"x".to_vec()),
            ("c", record.collection.as_bytes().to_vec()),
            ("dim", record.dimension.to_string().into_bytes()),
            ("met", record.metric.as_bytes().to_vec()),
            ("ver", record.version.to_string().into_bytes()),
        ]
    }
}

impl ChangeEntry {
    /// The stream fields of this entry, in the order they are written.
    pub fn fields(&self) -> Vec<(&'static str, Vec<u8>)> {
        let (kind, vector, metadata) = match &self.change {
            ReplicatedChange::Upsert { vector, metadata } => ("u", Some(vector), metadata),
            ReplicatedChange::Delete => ("d", None, &None),
            ReplicatedChange::Metadata { metadata } => ("m", None, metadata),
        };
        let mut out = vec![
            ("k", kind.as_bytes().to_vec()),
            ("c", self.collection.as_bytes().to_vec()),
            ("dim", self.dimension.to_string().into_bytes()),
            ("met", self.metric.as_str().as_bytes().to_vec()),
            ("i", self.id.as_bytes().to_vec()),
            ("ver", self.version.to_json().to_string().into_bytes()),
        ];
        if let Some(v) = vector {
            out.push(("v", vector_bytes(v)));
        }
        if let Some(m) = metadata {
            out.push((
                "md",
                serde_json::to_vec(m).unwrap_or_else(|_| b"{}".to_vec()),
            ));
        }
        out
    }

    /// An entry from its stream fields, or why it is not one.
    pub fn from_fields(map: &HashMap<String, redis::Value>) -> Result<ChangeEntry, String> {
        let bytes = |key: &str| -> Result<Option<&[u8]>, String> {
            match map.get(key) {
                None => Ok(None),
                Some(redis::Value::BulkString(b)) => Ok(Some(b.as_slice())),
                Some(_) => Err(format!("field {key} is not a string")),
            }
        };
        let text = |key: &str| -> Result<&str, String> {
            let b = bytes(key)?.ok_or_else(|| format!("field {key} missing"))?;
            std::str::from_utf8(b).map_err(|_| format!("field {key} is not UTF-8"))
        };
        let json = |b: &[u8]| -> Result<serde_json::Value, String> {
            if b.len() > MAX_JSON_BYTES {
                return Err("a JSON field is over 1 MiB".into());
            }
            serde_json::from_slice(b).map_err(|e| format!("bad JSON: {e}"))
        };
        let dimension: usize = text("dim")?
            .parse()
            .map_err(|_| "field dim is not a number")?;
        let metric = metric_of(text("met")?).ok_or("field met names no metric")?;
        let version = PointVersion::from_json(&json(text("ver")?.as_bytes())?)?;
        let metadata = match bytes("md")? {
            None => None,
            Some(b) => match json(b)? {
                serde_json::Value::Object(m) => Some(Metadata::from_iter(m)),
                serde_json::Value::Null => None,
                serde_json::Value::Bool(_)
                | serde_json::Value::Number(_)
                | serde_json::Value::String(_)
                | serde_json::Value::Array(_) => return Err("field md is not an object".into()),
            },
        };
        let change = match text("k")? {
            "u" => {
                let raw = bytes("v")?.ok_or("field v missing")?;
                if raw.len() != dimension.saturating_mul(4) {
                    return Err(format!(
                        "field v holds {} bytes, dimension {dimension} needs {}",
                        raw.len(),
                        dimension.saturating_mul(4)
                    ));
                }
                let vector = raw
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                ReplicatedChange::Upsert { vector, metadata }
            }
            "d" => ReplicatedChange::Delete,
            "m" => ReplicatedChange::Metadata { metadata },
            other => return Err(format!("unknown kind {other:?}")),
        };
        Ok(ChangeEntry {
            collection: text("c")?.to_owned(),
            dimension,
            metric,
            id: text("i")?.to_owned(),
            change,
            version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn as_map(fields: Vec<(&'static str, Vec<u8>)>) -> HashMap<String, redis::Value> {
        fields
            .into_iter()
            .map(|(k, v)| (k.to_owned(), redis::Value::BulkString(v)))
            .collect()
    }

    #[test]
    fn an_entry_round_trips_through_its_fields() {
        let mut md = Metadata::new();
        md.insert("tag".into(), serde_json::json!("x"));
        let e = ChangeEntry {
            collection: "docs".into(),
            dimension: 2,
            metric: Metric::Cosine,
            id: "a/β".into(),
            change: ReplicatedChange::Upsert {
                vector: vec![0.5, -1.0],
                metadata: Some(md),
            },
            version: PointVersion::local(None, 7, &Arc::from("eu"), &Arc::from("e1")),
        };
        assert_eq!(ChangeEntry::from_fields(&as_map(e.fields())).unwrap(), e);
    }

    #[test]
    fn a_malformed_entry_is_refused_with_a_reason() {
        let good = ChangeEntry {
            collection: "docs".into(),
            dimension: 2,
            metric: Metric::L2,
            id: "a".into(),
            change: ReplicatedChange::Delete,
            version: PointVersion::local(None, 7, &Arc::from("eu"), &Arc::from("e1")),
        };
        let mut m = as_map(good.fields());
        m.insert("k".into(), redis::Value::BulkString(b"u".to_vec()));
        m.insert("v".into(), redis::Value::BulkString(vec![0; 12]));
        assert!(ChangeEntry::from_fields(&m)
            .unwrap_err()
            .contains("dimension"));
        let mut m = as_map(good.fields());
        m.insert("ver".into(), redis::Value::BulkString(b"{".to_vec()));
        assert!(ChangeEntry::from_fields(&m).is_err());
        let mut m = as_map(good.fields());
        m.remove("c");
        assert!(ChangeEntry::from_fields(&m)
            .unwrap_err()
            .contains("c missing"));
    }
}
