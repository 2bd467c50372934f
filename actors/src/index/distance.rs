//! Distances in the form the graph orders by: lower is closer, never negative, never NaN.
//!
//! - cosine: queries are normalised; stored vectors keep the client's values and their inverse
//!   norm beside them (the graph's scale word), so `1 - dot·scale` is the cosine distance;
//!   rounding can make it a hair below zero, hence the clamp.
//! - l2: squared euclidean distance (same order as euclidean, one `sqrt` cheaper).
//! - dot: `f(dot)` with `f` strictly decreasing and positive (`1/(1+x)` for x ≥ 0, `1-x` below),
//!   so the graph sees the same order as "highest dot first". Exact scores are recomputed for the
//!   final hits, so `f` never reaches a client. This is an inner-product graph (ip-NSW, as
//!   hnswlib's `ip` space): measured on 10k×32 low-rank clustered data it gave recall@10 0.98 at
//!   ef 64 where the MIPS-to-L2 reduction (x → (x, √(C²−|x|²))) gave 0.76; on isotropic
//!   clusters the order flips (0.76 vs 0.82), and both need a larger ef there.

use simsimd::SpatialSimilarity;

use crate::types::Metric;

/// The reference distance (simsimd, f64 accumulation) the graph's own must order like: used by
/// tests and the exact paths.
#[derive(Debug, Clone, Copy)]
pub struct SimdDistance {
    pub metric: Metric,
}

/// Dot product in f64 (simsimd's SIMD kernel; lengths are checked before we get here).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f64 {
    f32::dot(a, b).unwrap_or(0.0)
}

/// Squared euclidean distance in f64.
#[inline]
pub fn l2_squared(a: &[f32], b: &[f32]) -> f64 {
    f32::sqeuclidean(a, b).unwrap_or(f64::MAX)
}

/// Strictly decreasing, positive map of a dot product to a graph distance.
#[inline]
pub(crate) fn dot_to_graph_distance(x: f64) -> f32 {
    if x >= 0.0 {
        (1.0 / (1.0 + x)) as f32
    } else {
        (1.0 - x) as f32
    }
}

impl SimdDistance {
    /// Distance between two vectors in graph form (unit length for cosine).
    #[inline]
    pub fn eval(&self, va: &[f32], vb: &[f32]) -> f32 {
        let d = match self.metric {
            Metric::Cosine => (1.0 - dot(va, vb)).max(0.0) as f32,
            Metric::L2 => l2_squared(va, vb) as f32,
            Metric::Dot => dot_to_graph_distance(dot(va, vb)),
        };
        // Validation keeps every vector's norm where distances stay finite; this is the last
        // guard: a NaN would break every ordering built on it.
        if d.is_nan() {
            f32::MAX
        } else {
            d
        }
    }
}

/// The graph's own distance (same order and meaning as `SimdDistance::eval`), accumulated in
/// f32 over eight lanes that the compiler vectorises. Only the graph's traversal uses it; exact
/// scores of answers still come from simsimd. Why: simsimd's f32 dot accumulates in f64 (half
/// the lanes) behind a dispatch call per pair, which is a large share of a low-dimensional
/// distance; measured side by side on 100k × 50 (cosine), our graph's search went from
/// 2,826–3,014 to 3,938–6,471 QPS at ef 64 (docs/ARCHITECTURE.md, "Our own graph"). Ordering
/// needs no f64: the inputs' norms are bounded by validation. `dot_scale` multiplies the dot
/// product (the inverse norms of cosine's stored vectors; 1 otherwise) and is ignored by l2.
#[multiversion::multiversion(targets("x86_64+avx2+fma", "aarch64+neon"))]
pub fn graph_distance(metric: Metric, a: &[f32], b: &[f32], dot_scale: f32) -> f32 {
    const LANES: usize = 8;
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    let d = match metric {
        Metric::L2 => {
            for (x, y) in ca.zip(cb) {
                for i in 0..LANES {
                    let t = x[i] - y[i];
                    acc[i] += t * t;
                }
            }
            let tail: f32 = ra.iter().zip(rb).map(|(x, y)| (x - y) * (x - y)).sum();
            acc.iter().sum::<f32>() + tail
        }
        Metric::Cosine | Metric::Dot => {
            for (x, y) in ca.zip(cb) {
                for i in 0..LANES {
                    acc[i] += x[i] * y[i];
                }
            }
            let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
            let dot = (acc.iter().sum::<f32>() + tail) * dot_scale;
            if metric == Metric::Cosine {
                (1.0 - dot).max(0.0)
            } else {
                dot_to_graph_distance(f64::from(dot))
            }
        }
    };
    if d.is_nan() {
        f32::MAX
    } else {
        d
    }
}

/// Brings a vector into the form the graph stores: unit length for cosine, as is otherwise.
pub fn to_graph_form(metric: Metric, v: &[f32]) -> Vec<f32> {
    match metric {
        Metric::Cosine => {
            let norm = dot(v, v).sqrt();
            if norm > 0.0 {
                v.iter().map(|x| (*x as f64 / norm) as f32).collect()
            } else {
                v.to_vec()
            }
        }
        Metric::L2 | Metric::Dot => v.to_vec(),
    }
}

/// Exact `(score, distance)` of a stored vector for a query already in graph form.
/// score is higher-is-better, distance lower-is-better, as the contract defines them.
#[inline]
pub fn exact_score(metric: Metric, query_graph_form: &[f32], stored: &[f32]) -> (f32, f32) {
    match metric {
        Metric::Cosine => {
            let norm = dot(stored, stored).sqrt();
            let cos = if norm > 0.0 {
                dot(query_graph_form, stored) / norm
            } else {
                0.0
            };
            (cos as f32, (1.0 - cos) as f32)
        }
        Metric::L2 => {
            let d = l2_squared(query_graph_form, stored).sqrt();
            (-d as f32, d as f32)
        }
        Metric::Dot => {
            let d = dot(query_graph_form, stored);
            (d as f32, -d as f32)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_graph_distance_is_positive_and_order_reversing() {
        let xs = [-1e6, -3.0, -0.5, 0.0, 0.25, 1.0, 7.0, 1e6];
        for w in xs.windows(2) {
            let (a, b) = (dot_to_graph_distance(w[0]), dot_to_graph_distance(w[1]));
            assert!(a > b, "{} -> {a} should exceed {} -> {b}", w[0], w[1]);
            assert!(b > 0.0);
        }
    }

    #[test]
    fn overflowing_products_never_give_a_nan_graph_distance() {
        for metric in [Metric::Dot, Metric::L2, Metric::Cosine] {
            let d = SimdDistance { metric }.eval(&[1e20, 1e20], &[1e20, -1e20]);
            assert!(!d.is_nan() && d >= 0.0, "{metric:?} gave {d}");
        }
    }

    #[test]
    fn scores_follow_the_contract() {
        let q = to_graph_form(Metric::Cosine, &[3.0, 4.0]);
        let (s, d) = exact_score(Metric::Cosine, &q, &[6.0, 8.0]);
        assert!((s - 1.0).abs() < 1e-6 && d.abs() < 1e-6);
        let (s, d) = exact_score(Metric::L2, &[0.0, 0.0], &[3.0, 4.0]);
        assert_eq!((s, d), (-5.0, 5.0));
        let (s, d) = exact_score(Metric::Dot, &[1.0, 2.0], &[3.0, 4.0]);
        assert_eq!((s, d), (11.0, -11.0));
        let cos = SimdDistance {
            metric: Metric::Cosine,
        };
        assert!(cos.eval(&q, &q) >= 0.0);
    }
}
