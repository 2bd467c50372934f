//! Ids, metrics, points and collection definitions shared by every layer.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{EngineError, Result};

/// Metadata attached to a point: a JSON object.
pub type Metadata = Map<String, Value>;

/// Longest point id in bytes (the contract says 1–256).
pub const MAX_ID_BYTES: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    Cosine,
    L2,
    Dot,
}

impl Metric {
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::L2 => "l2",
            Metric::Dot => "dot",
        }
    }

    pub fn parse(s: &str) -> Result<Metric> {
        match s {
            "cosine" => Ok(Metric::Cosine),
            "l2" => Ok(Metric::L2),
            "dot" => Ok(Metric::Dot),
            other => Err(EngineError::invalid(format!(
                "unknown metric {other:?}: expected cosine, l2 or dot"
            ))),
        }
    }
}

/// HNSW build and search parameters of a collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HnswParams {
    pub m: usize,
    pub ef_construction: usize,
    pub ef_search: usize,
    /// How searches read vectors while they walk the graph (collections made before this
    /// existed read f32: the default).
    #[serde(default)]
    pub quantization: Quantization,
}

/// Vectors a graph search walks over. `Int8` keeps an int8 copy of every vector beside the f32
/// one (one cache line per vector up to 56 dimensions) and re-ranks the walk's best with the
/// f32 vectors, so scores stay exact (docs/ARCHITECTURE.md, "Quantised search").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quantization {
    #[default]
    None,
    Int8,
}

impl Quantization {
    pub fn parse(s: &str) -> Result<Quantization> {
        match s {
            "none" => Ok(Quantization::None),
            "int8" => Ok(Quantization::Int8),
            other => Err(EngineError::invalid(format!(
                "unknown quantization {other:?}: expected none or int8"
            ))),
        }
    }
}

impl HnswParams {
    pub fn validate(&self) -> Result<()> {
        if !(2..=128).contains(&self.m) {
            return Err(EngineError::invalid("hnsw.m must be between 2 and 128"));
        }
        if !(1..=4096).contains(&self.ef_construction) {
            return Err(EngineError::invalid(
                "hnsw.ef_construction must be between 1 and 4096",
            ));
        }
        if !(1..=4096).contains(&self.ef_search) {
            return Err(EngineError::invalid(
                "hnsw.ef_search must be between 1 and 4096",
            ));
        }
        Ok(())
    }
}

/// A collection's definition, persisted as `collection.json` in its directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionSpec {
    pub name: String,
    pub dimension: usize,
    pub metric: Metric,
    pub shards: usize,
    pub hnsw: HnswParams,
}

/// Checks a collection name against `[A-Za-z0-9_-]{1,64}`.
pub fn validate_collection_name(name: &str) -> Result<()> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(EngineError::invalid(format!(
            "collection name {name:?} must match [A-Za-z0-9_-]{{1,64}}"
        )))
    }
}

/// Checks a stored collection name: a client's name, or `tenant.name` for a tenant's
/// collection (the edge adds the tenant; clients cannot write dots).
pub fn validate_stored_collection_name(name: &str) -> Result<()> {
    match name.split_once('.') {
        Some((tenant, rest)) => {
            validate_collection_name(tenant)?;
            validate_collection_name(rest)
        }
        None => validate_collection_name(name),
    }
}

/// Checks a point id: 1–256 bytes, no control characters.
pub fn validate_point_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(EngineError::invalid(format!(
            "point id must be 1 to {MAX_ID_BYTES} bytes, got {}",
            id.len()
        )));
    }
    if id.chars().any(char::is_control) {
        return Err(EngineError::invalid(
            "point id must not contain control characters",
        ));
    }
    Ok(())
}

/// The largest squared norm a stored or query vector may have: f32::MAX / 4 (≈ 8.5e37, a norm
/// of ≈ 9.2e18), so no distance between two acceptable vectors leaves the finite f32 range.
pub const MAX_NORM_SQUARED: f64 = f32::MAX as f64 / 4.0;

/// Checks a vector's length and values for a collection of `dimension` and `metric`.
pub fn validate_vector(v: &[f32], dimension: usize, metric: Metric) -> Result<()> {
    if v.is_empty() {
        return Err(EngineError::invalid("vector must not be empty"));
    }
    if v.len() != dimension {
        return Err(EngineError::DimensionMismatch {
            expected: dimension,
            got: v.len(),
        });
    }
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(EngineError::invalid(format!(
            "vector[{i}] is not a finite 32-bit float"
        )));
    }
    // Every distance the engine computes (f32 SIMD accumulation) must stay finite: for l2,
    // ‖x−q‖² ≤ (‖x‖+‖q‖)² ≤ 4·max‖·‖²; for dot, every partial sum of x·q is at most ‖x‖‖q‖
    // (Cauchy–Schwarz); cosine normalises with ‖x‖². One bound for all three metrics.
    let norm_sq: f64 = v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum();
    if norm_sq > MAX_NORM_SQUARED {
        return Err(EngineError::invalid(format!(
            "vector norm {:.3e} is too large: the squared norm must be at most {MAX_NORM_SQUARED:.3e} \
             (f32::MAX / 4) so that every distance stays a finite 32-bit float",
            norm_sq.sqrt()
        )));
    }
    if metric == Metric::Cosine && v.iter().all(|x| *x == 0.0) {
        return Err(EngineError::invalid(
            "a zero vector has no direction: not allowed with the cosine metric",
        ));
    }
    Ok(())
}

/// Merges a metadata patch into `base`: keys are set, a `null` value removes its key.
pub fn apply_patch(base: &mut Metadata, patch: &Metadata) {
    for (k, v) in patch {
        if v.is_null() {
            base.remove(k);
        } else {
            base.insert(k.clone(), v.clone());
        }
    }
}

/// Checks one point's metadata against the bounds: serialized size (counted, not built) and
/// nesting depth. Metadata lives in memory as JSON values (~80 bytes a node), so a small bound
/// on its text is what keeps one client's points from costing gigabytes.
pub fn validate_metadata(m: &Metadata, max_bytes: usize, max_depth: usize) -> Result<()> {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    fn depth(v: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
            serde_json::Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
            serde_json::Value::Null
            | serde_json::Value::Bool(_)
            | serde_json::Value::Number(_)
            | serde_json::Value::String(_) => 0,
        }
    }
    let mut n = Count(0);
    serde_json::to_writer(&mut n, m).map_err(|e| EngineError::invalid(format!("metadata: {e}")))?;
    if n.0 > max_bytes {
        return Err(EngineError::invalid(format!(
            "metadata of {} bytes is over the limit of {max_bytes} bytes (index.max_metadata_bytes)",
            n.0
        )));
    }
    let d = 1 + m.values().map(depth).max().unwrap_or(0);
    if d > max_depth {
        return Err(EngineError::invalid(format!(
            "metadata nested {d} levels deep; the limit is {max_depth} (index.max_metadata_depth)"
        )));
    }
    Ok(())
}

/// A point as written by clients and read back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub id: String,
    pub vector: Vec<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
}

/// One search hit, before the HTTP layer shapes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub id: std::sync::Arc<str>,
    /// Higher is better.
    pub score: f32,
    /// Lower is better.
    pub distance: f32,
    /// Shared with the stored point (no copy per hit).
    pub metadata: Option<std::sync::Arc<Metadata>>,
    pub vector: Option<Vec<f32>>,
}

impl Hit {
    /// The contract's order: score descending, then id ascending.
    pub fn rank_cmp(a: &Hit, b: &Hit) -> std::cmp::Ordering {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.id.as_ref().cmp(b.id.as_ref()))
    }
}
