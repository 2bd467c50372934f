//! `VectorSlab`: the graph's nodes, contiguous by id, each row its layer-0 neighbour list
//! (`links` atomic words: count, ids) followed by its vector — hnswlib's layout, so expanding a
//! node whose distance was just computed finds its list in the cache lines already loaded. A
//! vector is written once per row while other threads read other rows. This is the one place of the engine that needs `unsafe`: Rust has no
//! safe way to let one thread fill row `i` of a shared buffer while others run SIMD kernels over
//! rows they reached through the graph, and every safe alternative measured cost a pointer chase
//! or a lock per distance (docs/ARCHITECTURE.md, "Our own graph").
//!
//! The contract (`write`'s safety section) is kept by `graph.rs`: a row is written by the one
//! thread that claimed its id (a compare-and-swap on the node's level), before the node is
//! published with a release store; readers only reach rows of published nodes, through links and
//! the entry point read with acquire loads. So every read of a row happens after its write.

use std::cell::UnsafeCell;
use std::sync::atomic::AtomicU32;

pub struct VectorSlab {
    dim: usize,
    /// Words of the layer-0 list at the start of each row.
    links: usize,
    cells: Box<[UnsafeCell<f32>]>,
}

// SAFETY: rows are written only under the contract of `write` (one writer per row, before any
// reader can reach it); all other access is shared reads.
#[allow(unsafe_code)]
unsafe impl Sync for VectorSlab {}

impl VectorSlab {
    pub fn new(dim: usize, links: usize, rows: usize) -> VectorSlab {
        VectorSlab {
            dim,
            links,
            cells: (0..(links + dim) * rows)
                .map(|_| UnsafeCell::new(0.0))
                .collect(),
        }
    }

    fn stride(&self) -> usize {
        self.links + self.dim
    }

    /// Row `i`'s layer-0 list words. Only ever accessed atomically.
    #[allow(unsafe_code)]
    pub fn links(&self, i: usize) -> &[AtomicU32] {
        let at = i * self.stride();
        let cells = &self.cells[at..at + self.links];
        // SAFETY: `UnsafeCell<f32>` and `AtomicU32` have the same size and alignment (4), and
        // these words are only ever read and written through atomics (zeroed bits are 0).
        unsafe { &*(cells as *const [UnsafeCell<f32>] as *const [AtomicU32]) }
    }

    /// A copy with `rows` rows (the first rows copied). Needs exclusive access: no writer or
    /// reader can be inside.
    pub fn grown(&mut self, rows: usize) -> VectorSlab {
        let mut cells: Vec<UnsafeCell<f32>> = Vec::with_capacity(self.stride() * rows);
        cells.extend(self.cells.iter_mut().map(|c| UnsafeCell::new(*c.get_mut())));
        cells.resize_with(self.stride() * rows, || UnsafeCell::new(0.0));
        VectorSlab {
            dim: self.dim,
            links: self.links,
            cells: cells.into_boxed_slice(),
        }
    }

    /// Row `i`.
    #[allow(unsafe_code)]
    pub fn row(&self, i: usize) -> &[f32] {
        let at = i * self.stride() + self.links;
        let cells = &self.cells[at..at + self.dim];
        // SAFETY: `UnsafeCell<f32>` has the layout of `f32`; the row is not being written (see
        // `write`: rows are written before they can be reached, and never again).
        unsafe { &*(cells as *const [UnsafeCell<f32>] as *const [f32]) }
    }

    /// Asks the CPU to start loading row `i` (a graph search knows the next rows it will read
    /// one step ahead; a prefetch never faults and changes no memory).
    #[inline]
    #[allow(unsafe_code)]
    pub fn prefetch(&self, i: usize) {
        #[cfg(target_arch = "x86_64")]
        if let Some(c) = self.cells.get(i * self.stride() + self.links) {
            // SAFETY: a prefetch is a hint: it neither reads into the program nor faults.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    c.get() as *const i8
                )
            };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = i;
    }

    /// Writes row `i`.
    ///
    /// # Safety
    /// No other thread may read or write row `i` during this call: the caller holds the only
    /// claim on node `i`, and the node is not yet reachable (published afterwards with a
    /// release store that readers acquire before they read the row).
    #[allow(unsafe_code)]
    pub unsafe fn write(&self, i: usize, v: &[f32]) {
        let at = i * self.stride() + self.links;
        let cells = &self.cells[at..at + self.dim];
        for (c, x) in cells.iter().zip(v) {
            // SAFETY: by this function's contract, nobody else touches this row now.
            unsafe { *c.get() = *x };
        }
    }
}
