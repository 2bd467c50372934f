//! `CodeSlab`: an int8 copy of every node's vector (scalar quantisation), for collections that
//! ask for it, and the distance kernel that reads it. A graph search spends its time fetching
//! the vectors of neighbours it has not seen, one random row each; an int8 row of up to 56
//! dimensions is one cache line where the f32 row is four (50-d), so the traversal waits on a
//! quarter of the memory and multiplies a quarter of the bytes. The f32 rows stay the truth:
//! the search re-ranks its best candidates with them (`graph_search.rs`), so the scores a client
//! sees are exact and only the order of the traversal is approximate.
//!
//! A row is `[factor: f32][norm²: f32][codes: i8 × dim]`, padded to whole 64-byte lines. Codes
//! scale each vector by its own largest component (`code = round(x · 127 / max|x|)`,
//! `factor = max|x| / 127`), so a vector uses the whole int8 range whatever its magnitude; the
//! query stays f32 (asymmetric distance: only the stored side is rounded). Cosine rows are
//! quantised in unit form; `norm²` is the dequantised row's squared length, for l2.
//!
//! Like `VectorSlab`, a row is written once by the thread that claimed its node, before the
//! node is published to readers (same contract, kept by `graph.rs`).

use std::cell::UnsafeCell;

use super::slab::{advise_huge_pages, prefetch_line};
use crate::types::Metric;

/// One cache line of a code row.
#[repr(C, align(64))]
struct Line(UnsafeCell<[u8; 64]>);

pub struct CodeSlab {
    dim: usize,
    /// Lines per row.
    lines: usize,
    rows: Box<[Line]>,
}

// SAFETY: rows are written only under the contract of `write` (one writer per row, before any
// reader can reach it); all other access is shared reads.
#[allow(unsafe_code)]
unsafe impl Sync for CodeSlab {}

/// Header bytes of a row: factor and norm².
const HEAD: usize = 8;

impl CodeSlab {
    pub fn new(dim: usize, rows: usize) -> CodeSlab {
        let lines = (HEAD + dim).div_ceil(64);
        let mut cells = Vec::with_capacity(rows * lines);
        advise_huge_pages(cells.as_ptr() as *const u8, rows * lines * 64);
        cells.extend((0..rows * lines).map(|_| Line(UnsafeCell::new([0; 64]))));
        CodeSlab {
            dim,
            lines,
            rows: cells.into_boxed_slice(),
        }
    }

    /// Bytes per row.
    pub fn row_bytes(&self) -> usize {
        self.lines * 64
    }

    /// A copy with `rows` rows (the first rows copied). Needs exclusive access.
    pub fn grown(&mut self, rows: usize) -> CodeSlab {
        let mut next = CodeSlab::new(self.dim, rows);
        for (to, from) in next.rows.iter_mut().zip(self.rows.iter_mut()) {
            *to.0.get_mut() = *from.0.get_mut();
        }
        next
    }

    #[allow(unsafe_code)]
    fn bytes(&self, i: usize) -> &[u8] {
        let lines = &self.rows[i * self.lines..(i + 1) * self.lines];
        // SAFETY: the lines are contiguous `[u8; 64]` cells (repr(C), size 64); the row is not
        // being written (see `write`: rows are written before they can be reached, and never
        // again).
        unsafe { std::slice::from_raw_parts(lines.as_ptr() as *const u8, self.lines * 64) }
    }

    /// Row `i`: (factor, norm², codes).
    #[inline]
    pub fn row(&self, i: usize) -> (f32, f32, &[i8]) {
        let b = self.bytes(i);
        let factor = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let norm2 = f32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let codes = &b[HEAD..HEAD + self.dim];
        // Same size and alignment; every bit pattern is a valid i8.
        (factor, norm2, as_i8(codes))
    }

    /// Asks the CPU to start loading row `i` (every line of it).
    #[inline]
    pub fn prefetch(&self, i: usize) {
        for line in self.rows.iter().skip(i * self.lines).take(self.lines) {
            prefetch_line(line.0.get() as *const u8);
        }
    }

    /// Quantises `v · scale` (the graph form: `scale` is the slab's scale word, cosine's inverse
    /// norm, 1 otherwise) into row `i`.
    ///
    /// # Safety
    /// As `VectorSlab::write`: no other thread may read or write row `i` during this call.
    #[allow(unsafe_code)]
    pub unsafe fn write(&self, i: usize, v: &[f32], scale: f32) {
        let mut row = vec![0u8; self.lines * 64];
        let (factor, norm2) = quantise(v, scale, &mut row[HEAD..HEAD + self.dim]);
        row[..4].copy_from_slice(&factor.to_le_bytes());
        row[4..8].copy_from_slice(&norm2.to_le_bytes());
        for (line, chunk) in self.rows[i * self.lines..(i + 1) * self.lines]
            .iter()
            .zip(row.chunks_exact(64))
        {
            // SAFETY: by this function's contract, nobody else touches this row now.
            unsafe { (*line.0.get()).copy_from_slice(chunk) };
        }
    }
}

fn as_i8(b: &[u8]) -> &[i8] {
    #[allow(unsafe_code)]
    // SAFETY: u8 and i8 have the same size and alignment and every bit pattern is valid.
    unsafe {
        std::slice::from_raw_parts(b.as_ptr() as *const i8, b.len())
    }
}

/// Codes of `v · scale` into `out` (as i8 bits); answers (factor, squared length of the
/// dequantised vector).
fn quantise(v: &[f32], scale: f32, out: &mut [u8]) -> (f32, f32) {
    let max = v.iter().fold(0f32, |m, x| m.max((x * scale).abs()));
    let factor = if max > 0.0 && max.is_finite() {
        max / 127.0
    } else {
        1.0
    };
    let mut norm2 = 0f32;
    for (o, x) in out.iter_mut().zip(v) {
        let c = (x * scale / factor).round().clamp(-127.0, 127.0) as i8;
        let back = f32::from(c) * factor;
        norm2 += back * back;
        *o = c as u8;
    }
    (factor, norm2)
}

/// Graph distance between query `q` (graph form) and a code row, the same meaning as
/// `graph_distance`'s: `q_norm2` is the query's squared length (l2 only).
#[inline]
pub fn code_distance(metric: Metric, q: &[f32], q_norm2: f32, row: (f32, f32, &[i8])) -> f32 {
    let (factor, norm2, codes) = row;
    let dot = dot_codes(q, codes) * factor;
    let d = match metric {
        Metric::Cosine => (1.0 - dot).max(0.0),
        Metric::L2 => (q_norm2 - 2.0 * dot + norm2).max(0.0),
        Metric::Dot => super::distance::dot_to_graph_distance(f64::from(dot)),
    };
    if d.is_nan() {
        f32::MAX
    } else {
        d
    }
}

/// Dot product of an f32 query with int8 codes, eight lanes the compiler vectorises (sign
/// extension and conversion per lane).
#[multiversion::multiversion(targets("x86_64+avx2+fma", "aarch64+neon"))]
fn dot_codes(q: &[f32], c: &[i8]) -> f32 {
    const LANES: usize = 8;
    let mut acc = [0f32; LANES];
    let (cq, cc) = (q.chunks_exact(LANES), c.chunks_exact(LANES));
    let (rq, rc) = (cq.remainder(), cc.remainder());
    for (x, y) in cq.zip(cc) {
        for i in 0..LANES {
            acc[i] += x[i] * f32::from(y[i]);
        }
    }
    let tail: f32 = rq.iter().zip(rc).map(|(x, y)| x * f32::from(*y)).sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::distance::{graph_distance, to_graph_form};

    fn slab_with(v: &[f32]) -> CodeSlab {
        let s = CodeSlab::new(v.len(), 1);
        #[allow(unsafe_code)]
        // SAFETY: single-threaded test.
        unsafe {
            s.write(0, v, 1.0)
        };
        s
    }

    #[test]
    fn a_code_row_is_whole_cache_lines_and_one_line_up_to_56_dimensions() {
        assert_eq!(CodeSlab::new(56, 1).row_bytes(), 64);
        assert_eq!(CodeSlab::new(57, 1).row_bytes(), 128);
        assert_eq!(CodeSlab::new(128, 1).row_bytes(), 192);
    }

    #[test]
    fn code_distances_stay_close_to_the_f32_distances_for_every_metric() {
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        };
        for metric in [Metric::Cosine, Metric::L2, Metric::Dot] {
            for _ in 0..200 {
                let a: Vec<f32> = (0..50).map(|_| next() * 3.0).collect();
                let b: Vec<f32> = (0..50).map(|_| next() * 3.0).collect();
                let (qa, qb) = (to_graph_form(metric, &a), to_graph_form(metric, &b));
                let exact = graph_distance(metric, &qa, &qb, 1.0);
                let s = slab_with(&qb);
                let q_norm2: f32 = qa.iter().map(|x| x * x).sum();
                let approx = code_distance(metric, &qa, q_norm2, s.row(0));
                // Each code is within max|b|/254 of its component: the dot product moves by at
                // most Σ|a_i|·max|b|/254, under 1% of |a|·|b| for vectors like these.
                let norms = (q_norm2 * qb.iter().map(|x| x * x).sum::<f32>()).sqrt();
                let tolerance = match metric {
                    Metric::Cosine | Metric::Dot => 0.01 * norms,
                    Metric::L2 => 0.02 * norms,
                };
                assert!(
                    (approx - exact).abs() <= tolerance,
                    "{metric:?}: {approx} vs {exact}"
                );
            }
        }
    }

    #[test]
    fn zero_and_huge_vectors_quantise_without_nan() {
        for v in [vec![0.0f32; 8], vec![1e30f32; 8], vec![-1e-30f32; 8]] {
            let s = slab_with(&v);
            let (factor, norm2, codes) = s.row(0);
            assert!(factor.is_finite() && !norm2.is_nan(), "{v:?}");
            assert!(codes.iter().all(|c| *c >= -127));
            let d = code_distance(Metric::L2, &v, 0.0, s.row(0));
            assert!(!d.is_nan());
        }
    }

    #[test]
    fn a_grown_slab_keeps_its_rows() {
        let mut s = slab_with(&[0.5, -0.25, 1.0]);
        let before = s.row(0).2.to_vec();
        let g = s.grown(4);
        assert_eq!(g.row(0).2, &before[..]);
        assert_eq!(g.row(3).2, &[0, 0, 0]);
    }
}
