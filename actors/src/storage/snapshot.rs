//! Snapshots of a partition: its slot table (`points.bin`: ids, metadata, versions), its graph
//! (`graph.bin`: every node's list, vector and state — the one copy of the vectors) and its
//! points' replication versions with the tombstones of deleted ones (`versions.bin`, format 3;
//! a format-2 snapshot loads with none), with a manifest of checksums, written to a temporary directory and renamed into place. A restart
//! loads the graph as it was, so only the log after the snapshot is replayed (and staged, not
//! linked: the shard links it in the background while it serves).
//!
//! Loading verifies every checksum, then the graph's own structure (`Graph::read_from`), and
//! that every slot has its vector. A snapshot that fails any of it is skipped for an older one.
//! The writer keeps the previous snapshot and the log after it until a newer one is verified, so
//! that fallback loses nothing; when even that is gone, the shard reports a hole instead of
//! starting with less. Format 1 (round 1: vectors in `points.bin`, an hnsw_rs dump beside them)
//! still loads: its live points are linked into a new graph.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::wal::sync_dir;
use crate::index::graph::Graph;
use crate::index::hnsw::{Partition, PartitionSpec, Slot, SlotTable};
use crate::index::versions::Versions;
use crate::version::PointVersion;

const PREFIX: &str = "snapshot-";
const TMP: &str = "snapshot.tmp";
const POINTS: &str = "points.bin";
const MANIFEST: &str = "manifest.json";
const GRAPH: &str = "graph.bin";
const VERSIONS: &str = "versions.bin";
/// 3: `versions.bin` added. 2: vectors live in `graph.bin` (read). 1: vectors in `points.bin`,
/// hnsw_rs's dump (read, never written).
const FORMAT: u32 = 3;

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

/// A slot in format 1 (with its vector).
#[derive(Serialize, Deserialize)]
struct WireSlotV1 {
    id: String,
    vector: Vec<f32>,
    metadata: Option<String>,
    version: u64,
    live: bool,
}

/// A slot in format 2 (its vector is the graph's row of the same number).
#[derive(Serialize, Deserialize)]
struct WireSlot {
    id: String,
    metadata: Option<String>,
    version: u64,
    live: bool,
}

/// One entry of `versions.bin`.
#[derive(Serialize, Deserialize)]
struct WireVersion {
    id: String,
    live: bool,
    version: PointVersion,
}

/// How a loaded partition got its graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphSource {
    /// Loaded from the snapshot's graph: no rebuild.
    Snapshot,
    /// Linked anew from a format-1 snapshot's points.
    Rebuilt,
}

pub struct Loaded {
    pub seq: u64,
    pub partition: Partition,
    pub versions: Versions,
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
pub fn write(
    shard_dir: &Path,
    seq: u64,
    p: &Partition,
    versions: &Versions,
    keep: Option<u64>,
) -> io::Result<PathBuf> {
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
        let mut g = BufWriter::with_capacity(1 << 20, File::create(tmp.join(GRAPH))?);
        p.graph().write_to(&mut g, t.slots.len())?;
        g.flush()?;
        t.slots.len() as u64
    };
    write_versions(&tmp.join(VERSIONS), versions)?;
    let has_graph = true;
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

fn write_versions(path: &Path, versions: &Versions) -> io::Result<()> {
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
    w.write_all(&(versions.len() as u64).to_le_bytes())?;
    let mut buf = Vec::new();
    for (id, version, live) in versions.entries() {
        let wire = WireVersion {
            id: id.to_string(),
            live,
            version: PointVersion::clone(version),
        };
        buf.clear();
        postcard::to_io(&wire, &mut buf).map_err(io::Error::other)?;
        w.write_all(&(buf.len() as u32).to_le_bytes())?;
        w.write_all(&buf)?;
    }
    w.flush()
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
    if !(1..=FORMAT).contains(&m.format) {
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

/// Reads a file of length-prefixed records (`points.bin`, `versions.bin`) with `decode`;
/// `expected`: how many the manifest says (`None`: as many as the file says).
fn read_records<T>(
    dir: &Path,
    file: &str,
    expected: Option<u64>,
    mut decode: impl FnMut(&[u8]) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    let mut r = BufReader::with_capacity(
        1 << 20,
        File::open(dir.join(file)).map_err(|e| format!("{file}: {e}"))?,
    );
    let mut word = [0u8; 8];
    r.read_exact(&mut word).map_err(|e| e.to_string())?;
    let n = u64::from_le_bytes(word);
    if expected.is_some_and(|e| e != n) {
        return Err(format!(
            "{file} holds {n} records, manifest says {expected:?}"
        ));
    }
    let mut out = Vec::with_capacity(n.min(1 << 24) as usize);
    let mut buf = Vec::new();
    for _ in 0..n {
        let mut len = [0u8; 4];
        r.read_exact(&mut len).map_err(|e| e.to_string())?;
        buf.resize(u32::from_le_bytes(len) as usize, 0);
        r.read_exact(&mut buf).map_err(|e| e.to_string())?;
        out.push(decode(&buf)?);
    }
    Ok(out)
}

fn metadata_of(text: Option<String>) -> Result<Option<Arc<crate::types::Metadata>>, String> {
    text.map(|t| serde_json::from_str(&t).map(Arc::new))
        .transpose()
        .map_err(|e| e.to_string())
}

fn read_slots(dir: &Path, expected: u64) -> Result<Vec<Slot>, String> {
    read_records(dir, POINTS, Some(expected), |buf| {
        let w: WireSlot = postcard::from_bytes(buf).map_err(|e| e.to_string())?;
        Ok(Slot {
            id: Arc::from(w.id),
            metadata: metadata_of(w.metadata)?,
            version: w.version,
            live: w.live,
        })
    })
}

/// Format 1's live points with their vectors (dead slots carried none).
fn read_points_v1(dir: &Path, expected: u64) -> Result<Vec<(Slot, Vec<f32>)>, String> {
    let all = read_records(dir, POINTS, Some(expected), |buf| {
        let w: WireSlotV1 = postcard::from_bytes(buf).map_err(|e| e.to_string())?;
        let slot = Slot {
            id: Arc::from(w.id),
            metadata: metadata_of(w.metadata)?,
            version: w.version,
            live: w.live,
        };
        Ok((slot, w.vector))
    })?;
    Ok(all.into_iter().filter(|(s, _)| s.live).collect())
}

/// The versions of a format-3 snapshot (its checksum already verified); each distinct region
/// and instance name is held once.
fn read_versions(dir: &Path) -> Result<Versions, String> {
    let mut names: std::collections::HashSet<Arc<str>> = std::collections::HashSet::new();
    let mut intern = |s: Arc<str>| -> Arc<str> {
        match names.get(&s) {
            Some(n) => n.clone(),
            None => {
                names.insert(s.clone());
                s
            }
        }
    };
    let mut out = Versions::default();
    read_records(dir, VERSIONS, None, |buf| {
        let w: WireVersion = postcard::from_bytes(buf).map_err(|e| e.to_string())?;
        let mut v = w.version;
        v.region = intern(v.region);
        v.instance = intern(v.instance);
        for (r, _) in v.vv.iter_mut() {
            *r = intern(r.clone());
        }
        out.restore(Arc::from(w.id), Arc::new(v), w.live);
        Ok(())
    })?;
    Ok(out)
}

/// The graph of a format-2 snapshot, checked against its slots.
fn load_graph(dir: &Path, spec: &PartitionSpec, slots: usize) -> Result<Graph, String> {
    let mut r = BufReader::with_capacity(
        1 << 20,
        File::open(dir.join(GRAPH)).map_err(|e| format!("{GRAPH}: {e}"))?,
    );
    let g = Graph::read_from(&mut r, spec.graph_params(), spec.metric)
        .map_err(|e| format!("{GRAPH}: {e}"))?;
    let read = g.read();
    if let Some(i) = (0..slots as u32).find(|i| read.vector(*i).is_none()) {
        return Err(format!("{GRAPH}: slot {i} has no vector"));
    }
    drop(read);
    Ok(g)
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

/// One snapshot whose files passed their checksums.
fn load_snapshot(
    dir: &Path,
    manifest: &Manifest,
    spec: PartitionSpec,
    seq: u64,
) -> Result<Loaded, String> {
    if manifest.format == 1 {
        let points = read_points_v1(dir, manifest.slots)?;
        if let Some((s, _)) = points.iter().find(|(_, v)| v.len() != spec.dimension) {
            return Err(format!("point {} has the wrong dimension", s.id));
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        return Ok(Loaded {
            seq,
            partition: Partition::build(spec, points, threads),
            versions: Versions::default(),
            graph: GraphSource::Rebuilt,
        });
    }
    let slots = read_slots(dir, manifest.slots)?;
    let graph = load_graph(dir, &spec, slots.len())?;
    let versions = if manifest.format >= 3 {
        read_versions(dir)?
    } else {
        Versions::default()
    };
    Ok(Loaded {
        seq,
        partition: Partition::from_parts(spec, graph, SlotTable::from_slots(slots)),
        versions,
        graph: GraphSource::Snapshot,
    })
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
        let loaded = manifest
            .files
            .iter()
            .try_for_each(|f| verify(&dir, f))
            .and_then(|_| load_snapshot(&dir, &manifest, spec, seq));
        let loaded = match loaded {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "snapshot damaged: falling back to an older one");
                metrics::counter!("ruvector_snapshot_fallbacks_total").increment(1);
                damaged.push((seq, dir));
                continue;
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
