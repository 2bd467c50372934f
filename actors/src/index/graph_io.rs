//! The graph in a snapshot: one binary file (`graph.bin`) holding every row (list, scale,
//! vector), every node's state and its upper layers, so a restart loads the graph instead of
//! rebuilding it from the log. Loading checks every field against the partition's parameters and
//! every link against the nodes, so a file that passed its checksum but is wrong anyway is an
//! error, never a panic or a graph with dangling links.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::OnceLock;

use super::{atomics, Graph, GraphParams, Storage, ABSENT, MAX_LEVEL, NO_ENTRY, STAGED};
use crate::index::codes::CodeSlab;
use crate::index::slab::VectorSlab;
use crate::types::Metric;

const MAGIC: &[u8; 8] = b"RVGRAPH1";

fn metric_tag(m: Metric) -> u8 {
    match m {
        Metric::Cosine => 0,
        Metric::L2 => 1,
        Metric::Dot => 2,
    }
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// Little-endian words from a reader; the first error ends the words and is kept.
struct Words<'r, R: Read> {
    r: &'r mut R,
    buf: Vec<u8>,
    at: usize,
    left: usize,
    err: Option<io::Error>,
}

impl<R: Read> Iterator for Words<'_, R> {
    type Item = u32;
    fn next(&mut self) -> Option<u32> {
        if self.left == 0 || self.err.is_some() {
            return None;
        }
        if self.at == self.buf.len() {
            let n = (self.left * 4).min(1 << 20);
            self.buf.resize(n, 0);
            if let Err(e) = self.r.read_exact(&mut self.buf) {
                self.err = Some(e);
                return None;
            }
            self.at = 0;
        }
        let w = &self.buf[self.at..self.at + 4];
        self.at += 4;
        self.left -= 1;
        Some(u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
    }
}

impl Graph {
    /// Writes nodes `0..rows`. Writers of this graph must be kept out by the caller (the shard
    /// writer thread is the only one that stages and links); even so, only published nodes'
    /// links are written, and only readable rows' vectors.
    pub fn write_to(&self, w: &mut impl Write, rows: usize) -> io::Result<()> {
        let s = self.store.read();
        let rows = rows.min(s.cap);
        let entry = self.entry.load(Ordering::Acquire);
        let states: Vec<u8> = (0..rows as u32)
            .map(|i| match s.state(i) {
                l if l <= MAX_LEVEL => l,
                l if l <= STAGED => STAGED,
                _ => ABSENT,
            })
            .collect();
        w.write_all(MAGIC)?;
        for x in [self.p.dim, self.p.m, self.p.ef_construction] {
            w.write_all(&(x as u32).to_le_bytes())?;
        }
        w.write_all(&[metric_tag(self.metric)])?;
        w.write_all(&(rows as u64).to_le_bytes())?;
        w.write_all(&entry.to_le_bytes())?;
        w.write_all(&states)?;
        let published = |id: u32| states.get(id as usize).is_some_and(|l| *l <= MAX_LEVEL);
        let mut list = Vec::new();
        // One row's bytes at a time: a write call per row, not per word.
        let mut out: Vec<u8> = Vec::new();
        let mut put_list = |out: &mut Vec<u8>, block: &[AtomicU32]| {
            list.clear();
            if let Some((count, ids)) = block.split_first() {
                let n = (count.load(Ordering::Acquire) as usize).min(ids.len());
                list.extend(ids[..n].iter().map(|x| x.load(Ordering::Acquire)));
                list.retain(|id| published(*id));
                out.extend_from_slice(&(list.len() as u32).to_le_bytes());
                for i in 0..ids.len() {
                    out.extend_from_slice(&list.get(i).copied().unwrap_or(0).to_le_bytes());
                }
            }
        };
        let zeros = vec![0f32; self.p.dim];
        let no_block: Box<[AtomicU32]> = atomics(self.p.m + 1, || AtomicU32::new(0));
        for (i, state) in states.iter().enumerate() {
            out.clear();
            put_list(&mut out, s.vectors.links(i));
            let (scale, v) = if *state <= STAGED {
                (s.vectors.scale(i), s.vectors.row(i))
            } else {
                (0.0, &zeros[..])
            };
            out.extend_from_slice(&scale.to_bits().to_le_bytes());
            for x in v {
                out.extend_from_slice(&x.to_bits().to_le_bytes());
            }
            w.write_all(&out)?;
        }
        for (i, state) in states.iter().enumerate() {
            if (1..=MAX_LEVEL).contains(state) {
                out.clear();
                let upper = s.upper[i].get().map(|b| &b[..]).unwrap_or(&[]);
                for l in 0..*state as usize {
                    let at = l * (self.p.m + 1);
                    put_list(
                        &mut out,
                        upper.get(at..at + self.p.m + 1).unwrap_or(&no_block),
                    );
                }
                w.write_all(&out)?;
            }
        }
        Ok(())
    }

    /// Reads a graph written by `write_to` for a partition of these parameters.
    pub fn read_from(r: &mut impl Read, p: GraphParams, metric: Metric) -> io::Result<Graph> {
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(bad("not a graph file"));
        }
        let g = Graph::new(p, metric);
        let dims = [read_u32(r)?, read_u32(r)?, read_u32(r)?];
        let mut tag = [0u8; 1];
        r.read_exact(&mut tag)?;
        let want = [g.p.dim as u32, g.p.m as u32, g.p.ef_construction as u32];
        if dims[..2] != want[..2] || tag[0] != metric_tag(metric) {
            return Err(bad(format!(
                "graph of dim {} m {} metric {} for a partition of dim {} m {} metric {}",
                dims[0],
                dims[1],
                tag[0],
                want[0],
                want[1],
                metric_tag(metric)
            )));
        }
        let rows = read_u64(r)? as usize;
        let entry = read_u64(r)?;
        if rows > u32::MAX as usize {
            return Err(bad("too many rows"));
        }
        let mut states = vec![0u8; rows];
        r.read_exact(&mut states)?;
        if let Some(s) = states
            .iter()
            .find(|s| **s > MAX_LEVEL && **s != STAGED && **s != ABSENT)
        {
            return Err(bad(format!("unknown node state {s}")));
        }
        let stride = g.stride0() + 1 + g.p.dim;
        let mut words = Words {
            r,
            buf: Vec::new(),
            at: 0,
            left: rows * stride,
            err: None,
        };
        let vectors = VectorSlab::from_words(g.p.dim, g.stride0(), rows, &mut words);
        if let Some(e) = words.err {
            return Err(e);
        }
        let upper: Box<[OnceLock<Box<[AtomicU32]>>]> = atomics(rows, OnceLock::new);
        let mut block = vec![0u8; (g.p.m + 1) * 4];
        for (i, state) in states.iter().enumerate() {
            if (1..=MAX_LEVEL).contains(state) {
                let n = *state as usize * (g.p.m + 1);
                let blocks = atomics(n, || AtomicU32::new(0));
                for chunk in blocks.chunks(g.p.m + 1) {
                    r.read_exact(&mut block)?;
                    for (w, b) in chunk.iter().zip(block.chunks_exact(4)) {
                        w.store(
                            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                            Ordering::Relaxed,
                        );
                    }
                }
                let _ = upper[i].set(blocks);
            }
        }
        let codes = g.p.quantize.then(|| {
            let codes = CodeSlab::new(g.p.dim, rows);
            for (i, state) in states.iter().enumerate() {
                if *state <= STAGED {
                    // SAFETY: the slab is not shared yet: this thread is its only user.
                    #[allow(unsafe_code)]
                    unsafe {
                        codes.write(i, vectors.row(i), vectors.scale(i))
                    };
                }
            }
            codes
        });
        let storage = Storage {
            cap: rows,
            vectors,
            codes,
            levels: states.iter().map(|s| AtomicU8::new(*s)).collect(),
            upper,
        };
        g.check_links(&storage, &states)?;
        let published = states.iter().filter(|s| **s <= MAX_LEVEL).count();
        if published > 0 {
            let (id, level) = ((entry >> 8) as usize, (entry & 0xFF) as u8);
            if entry == NO_ENTRY || states.get(id) != Some(&level) {
                return Err(bad("entry point is not a published node of its level"));
            }
        } else if entry != NO_ENTRY {
            return Err(bad("entry point in an empty graph"));
        }
        *g.store.write() = storage;
        g.entry.store(entry, Ordering::Release);
        g.nodes.store(published, Ordering::Relaxed);
        Ok(g)
    }

    /// Every list's count fits and every id in it is a published node of that layer.
    fn check_links(&self, s: &Storage, states: &[u8]) -> io::Result<()> {
        for (i, state) in states.iter().enumerate() {
            if *state > MAX_LEVEL {
                continue;
            }
            for layer in 0..=*state {
                let block = self.block(s, i as u32, layer);
                let Some((count, ids)) = block.split_first() else {
                    return Err(bad(format!("node {i} lacks its layer {layer} list")));
                };
                if count.load(Ordering::Relaxed) as usize > ids.len() {
                    return Err(bad(format!("node {i}: list longer than its room")));
                }
                for id in self.words(s, i as u32, layer) {
                    let id = id.load(Ordering::Relaxed) as usize;
                    if states.get(id).is_none_or(|l| *l > MAX_LEVEL || *l < layer) {
                        return Err(bad(format!(
                            "node {i} links to {id}, not a node of layer {layer}"
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}
