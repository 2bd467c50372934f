//! Snapshots of a partition: its slot table (`points.bin`) and its graph (hnsw_rs's own dump),
//! with a manifest of checksums, written to a temporary directory and renamed into place.
//!
//! Loading verifies every checksum before hnsw_rs sees a byte (its loader asserts on bad input).
//! A snapshot whose graph cannot be used still gives its points, and the graph is rebuilt from
//! them; one whose points are damaged is skipped for an older one. The writer keeps the previous
//! snapshot and the log after it until a newer one is verified, so that fallback loses nothing;
//! when even that is gone, the shard reports a hole instead of starting with less.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hnsw_rs::prelude::{AnnT, HnswIo};
use serde::{Deserialize, Serialize};

use super::wal::sync_dir;
use crate::index::distance::SimdDistance;
use crate::index::hnsw::{Partition, PartitionSpec, Slot, SlotTable};

const PREFIX: &str = "snapshot-";
const TMP: &str = "snapshot.tmp";
const POINTS: &str = "points.bin";
const MANIFEST: &str = "manifest.json";
const GRAPH_BASENAME: &str = "graph";
const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Manifest {
    format: u32,
    seq: u64,
    slots: u64,
    files: Vec<FileSum>,
    has_graph: bool,
}

#[derive(Serialize, Deserialize)]
struct FileSum {
    name: String,
    len: u64,
    crc32: u32,
}

#[derive(Serialize, Deserialize)]
struct WireSlot {
    id: String,
    vector: Vec<f32>,
    metadata: Option<String>,
    version: u64,
    live: bool,
}

/// How a loaded partition got its graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphSource {
    /// Loaded from the snapshot's graph dump: no rebuild.
    Snapshot,
    /// Rebuilt from the snapshot's points (graph dump missing or unusable).
    Rebuilt,
}

pub struct Loaded {
    pub seq: u64,
    pub partition: Partition,
    pub graph: GraphSource,
}

fn snapshot_dirs(shard_dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(shard_dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if let Some(seq) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|n| n.parse::<u64>().ok())
        {
            out.push((seq, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn file_sum(path: &Path) -> io::Result<FileSum> {
    let mut f = File::open(path)?;
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        len += n as u64;
        h.update(&buf[..n]);
    }
    f.sync_all()?;
    Ok(FileSum {
        name: path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned(),
        len,
        crc32: h.finalize(),
    })
}

/// Writes a snapshot of `p` at `seq`, verifies it, and removes every older snapshot except
/// `keep` (the previous good one, kept with the log it needs until this one has proven itself
/// at a load). Returns the snapshot's directory. The caller must keep writes to `p` paused
/// meanwhile (the shard writer does: it calls this).
pub fn write(shard_dir: &Path, seq: u64, p: &Partition, keep: Option<u64>) -> io::Result<PathBuf> {
    let tmp = shard_dir.join(TMP);
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    fs::create_dir_all(&tmp)?;
    let slots = {
        let t = p.table();
        let mut w = BufWriter::with_capacity(1 << 20, File::create(tmp.join(POINTS))?);
        w.write_all(&(t.slots.len() as u64).to_le_bytes())?;
        let mut buf = Vec::new();
        for s in &t.slots {
            let metadata = s
                .metadata
                .as_deref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(io::Error::other)?;
            let wire = WireSlot {
                id: s.id.to_string(),
                vector: s.vector.to_vec(),
                metadata,
                version: s.version,
                live: s.live,
            };
            buf.clear();
            postcard::to_io(&wire, &mut buf).map_err(io::Error::other)?;
            w.write_all(&(buf.len() as u32).to_le_bytes())?;
            w.write_all(&buf)?;
        }
        w.flush()?;
        t.slots.len() as u64
    };
    let has_graph = p.graph().get_nb_point() > 0;
    if has_graph {
        p.graph()
            .file_dump(&tmp, GRAPH_BASENAME)
            .map_err(|e| io::Error::other(format!("graph dump: {e}")))?;
    }
    let mut files = Vec::new();
    for entry in fs::read_dir(&tmp)? {
        files.push(file_sum(&entry?.path())?);
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    let manifest = Manifest {
        format: FORMAT,
        seq,
        slots,
        files,
        has_graph,
    };
    let mut m = File::create(tmp.join(MANIFEST))?;
    m.write_all(&serde_json::to_vec_pretty(&manifest).map_err(io::Error::other)?)?;
    m.sync_all()?;
    sync_dir(&tmp)?;
    let dest = shard_dir.join(format!("{PREFIX}{seq:020}"));
    if dest.exists() {
        fs::remove_dir_all(&dest)?;
    }
    fs::rename(&tmp, &dest)?;
    sync_dir(shard_dir)?;
    // Nothing older goes until the new one reads back whole.
    // The checksums were just computed by reading each file back after it was written; what is
    // left to prove is that the renamed directory holds a readable manifest and every file whole.
    let verified = read_manifest(&dest).and_then(|m| {
        m.files.iter().try_for_each(|f| {
            let len = fs::metadata(dest.join(&f.name)).map_err(|e| format!("{}: {e}", f.name))?;
            (len.len() == f.len)
                .then_some(())
                .ok_or_else(|| format!("{}: {} bytes, manifest says {}", f.name, len.len(), f.len))
        })
    });
    if let Err(e) = verified {
        set_aside(&dest);
        return Err(io::Error::other(format!(
            "new snapshot failed verification: {e}"
        )));
    }
    for (old, path) in snapshot_dirs(shard_dir)? {
        if old < seq && Some(old) != keep {
            fs::remove_dir_all(path)?;
        }
    }
    sync_dir(shard_dir)?;
    Ok(dest)
}

/// Moves a damaged snapshot out of the way (kept for inspection, never loaded again).
pub fn set_aside(dir: &Path) {
    let mut name = dir.as_os_str().to_owned();
    name.push(".damaged");
    if let Err(e) = fs::rename(dir, PathBuf::from(name)) {
        tracing::error!(dir = %dir.display(), error = %e, "could not set a damaged snapshot aside");
    }
}

fn read_manifest(dir: &Path) -> Result<Manifest, String> {
    let text = fs::read(dir.join(MANIFEST)).map_err(|e| format!("manifest: {e}"))?;
    let m: Manifest = serde_json::from_slice(&text).map_err(|e| format!("manifest: {e}"))?;
    if m.format != FORMAT {
        return Err(format!("unknown snapshot format {}", m.format));
    }
    Ok(m)
}

fn verify(dir: &Path, sum: &FileSum) -> Result<(), String> {
    let actual = file_sum(&dir.join(&sum.name)).map_err(|e| format!("{}: {e}", sum.name))?;
    if actual.len != sum.len || actual.crc32 != sum.crc32 {
        return Err(format!("{}: checksum mismatch", sum.name));
    }
    Ok(())
}

fn read_slots(dir: &Path, expected: u64) -> Result<Vec<Slot>, String> {
    let mut r = BufReader::with_capacity(
        1 << 20,
        File::open(dir.join(POINTS)).map_err(|e| e.to_string())?,
    );
    let mut word = [0u8; 8];
    r.read_exact(&mut word).map_err(|e| e.to_string())?;
    let n = u64::from_le_bytes(word);
    if n != expected {
        return Err(format!(
            "points.bin holds {n} slots, manifest says {expected}"
        ));
    }
    let mut slots = Vec::with_capacity(n as usize);
    let mut buf = Vec::new();
    for _ in 0..n {
        let mut len = [0u8; 4];
        r.read_exact(&mut len).map_err(|e| e.to_string())?;
        buf.resize(u32::from_le_bytes(len) as usize, 0);
        r.read_exact(&mut buf).map_err(|e| e.to_string())?;
        let w: WireSlot = postcard::from_bytes(&buf).map_err(|e| e.to_string())?;
        let metadata = w
            .metadata
            .map(|t| serde_json::from_str(&t).map(Arc::new))
            .transpose()
            .map_err(|e| e.to_string())?;
        slots.push(Slot {
            id: Arc::from(w.id),
            vector: w.vector.into_boxed_slice(),
            metadata,
            version: w.version,
            live: w.live,
        });
    }
    Ok(slots)
}

fn load_graph(
    dir: &Path,
    spec: &PartitionSpec,
) -> Result<hnsw_rs::prelude::Hnsw<'static, f32, SimdDistance>, String> {
    // hnsw_rs ties the graph's lifetime to the loader's (for its mmap mode, unused here); the
    // loader is a few paths and flags, leaked once per shard load so the graph can be 'static.
    let io: &'static HnswIo = Box::leak(Box::new(HnswIo::new(dir, GRAPH_BASENAME)));
    let dist = SimdDistance {
        metric: spec.metric,
    };
    // hnsw_rs asserts on malformed input; checksums were verified first, this is the last guard.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        io.load_hnsw_with_dist(dist)
    }))
    .map_err(|_| "graph loader panicked".to_string())?
    .map_err(|e| e.to_string())
}

/// What looking for a snapshot found.
pub struct Found {
    /// The newest usable snapshot, if any.
    pub loaded: Option<Loaded>,
    /// Newer snapshots that could not be used (the log must cover up to their sequence
    /// numbers, or the shard would start with a hole).
    pub damaged: Vec<(u64, PathBuf)>,
}

impl Found {
    /// The highest sequence number a damaged snapshot claims to cover (0: none).
    pub fn claimed(&self) -> u64 {
        self.damaged.iter().map(|(s, _)| *s).max().unwrap_or(0)
    }
}

/// Loads the newest usable snapshot, falling back to older ones past damaged ones.
pub fn load_latest(shard_dir: &Path, spec: PartitionSpec) -> io::Result<Found> {
    let _ = fs::remove_dir_all(shard_dir.join(TMP));
    let mut damaged = Vec::new();
    for (seq, dir) in snapshot_dirs(shard_dir)?.into_iter().rev() {
        let manifest = match read_manifest(&dir) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "snapshot unreadable: falling back to an older one");
                metrics::counter!("ruvector_snapshot_fallbacks_total").increment(1);
                damaged.push((seq, dir));
                continue;
            }
        };
        let points_ok = manifest
            .files
            .iter()
            .find(|f| f.name == POINTS)
            .ok_or_else(|| "points.bin missing".to_string())
            .and_then(|f| verify(&dir, f))
            .and_then(|_| read_slots(&dir, manifest.slots));
        let slots = match points_ok {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "snapshot damaged: falling back to an older one");
                metrics::counter!("ruvector_snapshot_fallbacks_total").increment(1);
                damaged.push((seq, dir));
                continue;
            }
        };
        let graph = if manifest.has_graph {
            manifest
                .files
                .iter()
                .filter(|f| f.name != POINTS)
                .try_for_each(|f| verify(&dir, f))
                .and_then(|_| load_graph(&dir, &spec))
        } else {
            Err("snapshot has no graph (empty partition)".into())
        };
        let loaded = match graph {
            Ok(g) => Loaded {
                seq,
                partition: Partition::from_parts(spec, g, SlotTable::from_slots(slots)),
                graph: GraphSource::Snapshot,
            },
            Err(e) => {
                if manifest.has_graph {
                    tracing::warn!(dir = %dir.display(), error = %e, "graph dump unusable: rebuilding from snapshot points");
                }
                Loaded {
                    seq,
                    partition: Partition::build(spec, slots),
                    graph: GraphSource::Rebuilt,
                }
            }
        };
        return Ok(Found {
            loaded: Some(loaded),
            damaged,
        });
    }
    Ok(Found {
        loaded: None,
        damaged,
    })
}
