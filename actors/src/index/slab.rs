//! `VectorSlab`: the graph's nodes, contiguous by id, each row its layer-0 neighbour list
//! (`links` atomic words: count, ids), one scale word (the inverse norm for cosine, so the
//! stored vector stays the client's own, exactly) and its vector — hnswlib's layout, so
//! expanding a node whose distance was just computed finds its list in the cache lines already
//! loaded. A vector is written once per row while other threads read other rows. This is the
//! one place of the engine that needs `unsafe`: Rust has no safe way to let one thread fill row
//! `i` of a shared buffer while others run SIMD kernels over rows they reached through the
//! graph, and every safe alternative measured cost a pointer chase or a lock per distance
//! (docs/ARCHITECTURE.md, "Our own graph").
//!
//! The contract (`write`'s safety section) is kept by `graph.rs`: a row is written by the one
//! thread that claimed its id (a compare-and-swap on the node's state), before the node's state
//! says "staged" with a release store; readers only read rows of nodes whose state they loaded
//! with acquire as staged or later (directly, or through links and the entry point, which only
//! name published nodes). So every read of a row happens after its write.

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
        VectorSlab::from_words(dim, links, rows, std::iter::empty())
    }

    /// A slab of `rows` rows filled from raw row words (a snapshot), zero past their end.
    pub fn from_words(
        dim: usize,
        links: usize,
        rows: usize,
        words: impl Iterator<Item = u32>,
    ) -> VectorSlab {
        let len = (links + 1 + dim) * rows;
        let mut cells: Vec<UnsafeCell<f32>> = Vec::with_capacity(len);
        advise_huge_pages(cells.as_ptr() as *const u8, len * 4);
        cells.extend(words.take(len).map(|w| UnsafeCell::new(f32::from_bits(w))));
        cells.resize_with(len, || UnsafeCell::new(0.0));
        VectorSlab {
            dim,
            links,
            cells: cells.into_boxed_slice(),
        }
    }

    /// Words per row: list, scale, vector.
    pub fn stride(&self) -> usize {
        self.links + 1 + self.dim
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
        let words = self.cells.iter_mut().map(|c| c.get_mut().to_bits());
        VectorSlab::from_words(self.dim, self.links, rows, words)
    }

    /// Row `i`'s scale word and vector (written together by `write`).
    #[allow(unsafe_code)]
    fn payload(&self, i: usize) -> &[f32] {
        let at = i * self.stride() + self.links;
        let cells = &self.cells[at..at + 1 + self.dim];
        // SAFETY: `UnsafeCell<f32>` has the layout of `f32`; the row is not being written (see
        // `write`: rows are written before they can be reached, and never again).
        unsafe { &*(cells as *const [UnsafeCell<f32>] as *const [f32]) }
    }

    /// Row `i`'s vector.
    #[inline]
    pub fn row(&self, i: usize) -> &[f32] {
        &self.payload(i)[1..]
    }

    /// Row `i`'s scale (multiplies its dot products; 1 unless cosine).
    #[inline]
    pub fn scale(&self, i: usize) -> f32 {
        self.payload(i)[0]
    }

    /// Asks the CPU to start loading row `i`'s vector, every cache line of it (a graph search
    /// knows the next rows it will read one step ahead; a prefetch never faults and changes no
    /// memory).
    #[inline]
    pub fn prefetch(&self, i: usize) {
        let at = i * self.stride() + self.links;
        self.prefetch_cells(at, 1 + self.dim);
    }

    /// Asks the CPU to start loading row `i`'s layer-0 list (a search about to expand it).
    #[inline]
    pub fn prefetch_links(&self, i: usize) {
        self.prefetch_cells(i * self.stride(), self.links);
    }

    /// Prefetches the cache lines of `len` cells from cell `at` (one per 16 words).
    #[inline]
    fn prefetch_cells(&self, at: usize, len: usize) {
        for line in (at..at + len).step_by(16) {
            if let Some(c) = self.cells.get(line) {
                prefetch_line(c.get() as *const u8);
            }
        }
    }

    /// Writes row `i`'s scale and vector.
    ///
    /// # Safety
    /// No other thread may read or write row `i`'s scale or vector during this call: the caller
    /// holds the only claim on node `i`, and the node's state says "staged" only afterwards,
    /// with a release store that readers acquire before they read the row.
    #[allow(unsafe_code)]
    pub unsafe fn write(&self, i: usize, v: &[f32], scale: f32) {
        let at = i * self.stride() + self.links;
        let cells = &self.cells[at..at + 1 + self.dim];
        let values = std::iter::once(scale).chain(v.iter().copied());
        for (c, x) in cells.iter().zip(values) {
            // SAFETY: by this function's contract, nobody else touches this row now.
            unsafe { *c.get() = x };
        }
    }
}

/// Asks the CPU to start loading the cache line holding `at` into every cache level.
#[inline]
#[allow(unsafe_code)]
pub(super) fn prefetch_line(at: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it neither reads into the program nor faults, whatever the
    // address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(at as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

/// Asks Linux to back `bytes` at `at` with 2 MiB pages (`MADV_HUGEPAGE`) before the memory is
/// first touched. A search reads rows at random across the whole slab: with 4 KiB pages most
/// of those reads also miss the TLB (390k × 50-d rows are 143 MB, 35,000 pages), and in a
/// server the request handling between two searches evicts what the TLB held. Measured through
/// the server (390k × 50, int8, ef 128, one client): 338–348 µs of CPU per query with 4 KiB
/// pages, 280–315 µs with the slabs on 2 MiB pages. Machines whose transparent huge pages are set to
/// `madvise` (a common default) give none without asking. Only the 2 MiB-aligned inside of the
/// range is advised; a refusal (huge pages `never`, other kernels) changes nothing but speed.
#[allow(unsafe_code)]
pub(super) fn advise_huge_pages(at: *const u8, bytes: usize) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = (at as usize).next_multiple_of(HUGE);
        let end = (at as usize).saturating_add(bytes) & !(HUGE - 1);
        if end > start {
            // SAFETY: MADV_HUGEPAGE changes how pages of our own allocation are backed, never
            // their contents; the range lies inside the allocation.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (at, bytes);
}
