//! The shard's write-ahead log: numbered segments of checksummed records.
//!
//! Our own small log rather than redb/fjall/okaywal: the shard already keeps every point in
//! memory and snapshots it whole, so all it needs from disk is an append-only sequence of its
//! own ops, keyed by the shard's sequence numbers that snapshots refer to, with one fsync per
//! batch decided by the shard's writer (group commit). A B-tree or LSM store would write every
//! vector twice more and bring its own background compaction; okaywal's checkpoint callbacks
//! fight our snapshot cadence. The format is in `record.rs`.
//!
//! Replay tells damage apart, because an acknowledged write must never vanish silently:
//! - a **torn tail** (nothing intact after the damage, in the newest segment: a crash during an
//!   append) is cut off; the cut bytes are kept beside the segment (`*.torn-<offset>`);
//! - **damage in the middle** with intact records after it: exactly the damaged bytes are
//!   skipped (kept in `*.damaged-<offset>`, counted, logged with file and offset), the file is
//!   left as it is;
//! - a **hole** (sequence numbers missing that no skipped damage explains, or damage that cannot
//!   be re-synchronised followed by later records) is reported to the shard, which holds its
//!   collection back until `ruvector-streaming repair` accepts the loss knowingly.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::record::{self, Decoded, Format, SEGMENT_HEADER};
use crate::index::hnsw::Op;
use crate::version::PointVersion;

const PREFIX: &str = "wal-";
const SUFFIX: &str = ".log";

/// The open, current segment of a shard's log.
pub struct WriteLog {
    dir: PathBuf,
    file: File,
    buf: Vec<u8>,
    /// Bytes known good: a failed append or sync is cut back to this.
    len: u64,
    /// Bytes appended since the last sync.
    unsynced: u64,
}

/// Damage found at one place of one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub file: PathBuf,
    pub offset: u64,
    pub bytes: u64,
    pub reason: String,
}

/// Sequence numbers missing from the log that no skipped damage explains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hole {
    /// The last sequence number present before the hole.
    pub after: u64,
    /// The next one present (`None`: the log ends inside the hole).
    pub next: Option<u64>,
    pub cause: String,
}

impl std::fmt::Display for Hole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.next {
            Some(n) => write!(
                f,
                "records {}..={} missing ({})",
                self.after + 1,
                n - 1,
                self.cause
            ),
            None => write!(f, "records after {} missing ({})", self.after, self.cause),
        }
    }
}

/// What replay found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    pub records: u64,
    pub last_seq: u64,
    /// Torn tails cut off the newest segment.
    pub truncated: Vec<Damage>,
    /// Damaged records skipped in the middle of a segment (the file left as it is).
    pub skipped: Vec<Damage>,
    /// Sequence numbers missing without an explanation: the shard must not start silently
    /// (in repair mode: the holes accepted).
    pub holes: Vec<Hole>,
}

/// How replay treats damage it cannot skip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayMode {
    /// Report holes (the caller holds the collection back).
    Strict,
    /// `repair`: cut a segment at damage that cannot be re-synchronised (keeping the cut bytes
    /// in a side file) and accept the loss.
    Repair,
}

fn segment_name(first_seq: u64) -> String {
    format!("{PREFIX}{first_seq:020}{SUFFIX}")
}

/// Segments in the directory as (first seq, path), oldest first.
pub fn segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(num) = name
            .strip_prefix(PREFIX)
            .and_then(|n| n.strip_suffix(SUFFIX))
        {
            if let Ok(first) = num.parse::<u64>() {
                out.push((first, entry.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// fsync of a directory, so a created, renamed or removed entry is itself durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Keeps damaged bytes beside their segment, so evidence is never destroyed.
fn keep_aside(path: &Path, kind: &str, offset: usize, bytes: &[u8]) -> io::Result<()> {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{kind}-{offset}"));
    let side = PathBuf::from(name);
    let mut f = File::create(&side)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

fn cut(path: &Path, at: usize) -> io::Result<()> {
    let f = OpenOptions::new().write(true).open(path)?;
    f.set_len(at as u64)?;
    f.sync_all()
}

/// Replays every record with `seq > after` in order (`apply(seq, version, op, raw bytes)`),
/// telling torn tails, skippable damage and holes apart (see the module's doc).
pub fn replay(
    dir: &Path,
    after: u64,
    mode: ReplayMode,
    mut apply: impl FnMut(u64, Option<PointVersion>, Op, &[u8]),
) -> io::Result<ReplayReport> {
    let mut report = ReplayReport {
        last_seq: after,
        ..Default::default()
    };
    // Set when skipped damage explains the gap before the next record.
    let mut explained: Option<String> = None;
    let segs = segments(dir)?;
    let count = segs.len();
    for (i, (_, path)) in segs.into_iter().enumerate() {
        let newest = i + 1 == count;
        let data = fs::read(&path)?;
        let (format, mut pos) = Format::of_segment(&data);
        loop {
            match record::decode(format, &data[pos..]) {
                Decoded::Record {
                    seq,
                    version,
                    op,
                    len,
                } => {
                    let raw = &data[pos..pos + len];
                    pos += len;
                    if seq <= report.last_seq {
                        continue;
                    }
                    if seq != report.last_seq + 1 {
                        let after = report.last_seq;
                        match explained.take() {
                            Some(cause) => {
                                let lost = Hole {
                                    after,
                                    next: Some(seq),
                                    cause,
                                };
                                tracing::error!(file = %path.display(), hole = %lost, "acknowledged records lost to damaged bytes were skipped");
                            }
                            None => {
                                let hole = Hole {
                                    after,
                                    next: Some(seq),
                                    cause: format!("no record between {after} and {seq}"),
                                };
                                if mode == ReplayMode::Repair {
                                    tracing::warn!(file = %path.display(), %hole, "repair: accepting a hole in the log");
                                }
                                report.holes.push(hole);
                            }
                        }
                    }
                    explained = None;
                    report.last_seq = seq;
                    report.records += 1;
                    apply(seq, version, op, raw);
                }
                Decoded::End => break,
                Decoded::Corrupt(reason) => {
                    let next = record::resync(format, &data, pos, report.last_seq);
                    let end = next.unwrap_or(data.len());
                    let damage = Damage {
                        file: path.clone(),
                        offset: pos as u64,
                        bytes: (end - pos) as u64,
                        reason: reason.clone(),
                    };
                    match next {
                        Some(next) => {
                            keep_aside(&path, "damaged", pos, &data[pos..next])?;
                            tracing::error!(
                                file = %path.display(),
                                offset = pos,
                                bytes = next - pos,
                                %reason,
                                "write log damaged in the middle: skipping exactly the damaged bytes (kept aside)"
                            );
                            metrics::counter!("ruvector_wal_damaged_records_total").increment(1);
                            explained = Some(format!("damaged bytes at {}:{pos}", path.display()));
                            report.skipped.push(damage);
                            pos = next;
                        }
                        None if newest => {
                            keep_aside(&path, "torn", pos, &data[pos..])?;
                            tracing::warn!(
                                file = %path.display(),
                                offset = pos,
                                dropped_bytes = data.len() - pos,
                                %reason,
                                "torn tail of the write log cut off (bytes kept aside)"
                            );
                            cut(&path, pos)?;
                            metrics::counter!("ruvector_wal_truncations_total").increment(1);
                            report.truncated.push(damage);
                            break;
                        }
                        None => {
                            // Nothing intact follows in an older segment. Harmless if the next
                            // segment continues the sequence; a hole (held back) if not.
                            if mode == ReplayMode::Repair {
                                keep_aside(&path, "cut", pos, &data[pos..])?;
                                cut(&path, pos)?;
                                tracing::warn!(file = %path.display(), offset = pos, %reason, "repair: log cut at damage (bytes kept aside)");
                            } else {
                                tracing::warn!(file = %path.display(), offset = pos, %reason, "damage at the end of an older log segment");
                            }
                            explained = None;
                            report.skipped.push(damage);
                            break;
                        }
                    }
                }
            }
        }
    }
    Ok(report)
}

impl WriteLog {
    /// Opens the segment whose first record will be `next_seq` (created with the v2 header, or
    /// reopened when a previous start left it empty).
    pub fn create(dir: &Path, next_seq: u64) -> io::Result<WriteLog> {
        fs::create_dir_all(dir)?;
        let path = dir.join(segment_name(next_seq));
        let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
        let mut len = file.metadata()?.len();
        let mut head = [0u8; SEGMENT_HEADER.len()];
        let has_header = len >= head.len() as u64
            && File::open(&path)?.read_exact(&mut head).is_ok()
            && head == SEGMENT_HEADER;
        if !has_header {
            if len > 0 {
                // Replay left only a header-less remainder here: start this segment afresh.
                keep_aside(&path, "replaced", 0, &fs::read(&path)?)?;
                file.set_len(0)?;
            }
            file.write_all(&SEGMENT_HEADER)?;
            file.sync_all()?;
            len = SEGMENT_HEADER.len() as u64;
        }
        WriteLog::opened(dir, file, len)
    }

    fn opened(dir: &Path, file: File, len: u64) -> io::Result<WriteLog> {
        sync_dir(dir)?;
        Ok(WriteLog {
            dir: dir.to_path_buf(),
            file,
            buf: Vec::with_capacity(64 << 10),
            len,
            unsynced: 0,
        })
    }

    /// Writes records (not yet synced). One `write` call for the whole batch; several batches may
    /// be appended before one `sync` (group commit).
    pub fn append<'a>(
        &mut self,
        records: impl IntoIterator<Item = (u64, Option<&'a PointVersion>, &'a Op)>,
    ) -> io::Result<()> {
        self.buf.clear();
        for (seq, version, op) in records {
            record::encode(seq, version, op, &mut self.buf).map_err(io::Error::other)?;
        }
        if let Err(e) = self.file.write_all(&self.buf) {
            // Never leave half a batch in the log: later records would sit behind garbage.
            // Batches appended before it (awaiting one sync together) stay.
            let _ = self.file.set_len(self.len + self.unsynced);
            return Err(e);
        }
        self.unsynced += self.buf.len() as u64;
        // Do not keep a huge buffer alive after one large batch.
        if self.buf.capacity() > 4 << 20 {
            self.buf = Vec::with_capacity(64 << 10);
        }
        Ok(())
    }

    /// Makes everything appended so far durable.
    pub fn sync(&mut self) -> io::Result<()> {
        if let Err(e) = self.file.sync_data() {
            // The batch is refused, so it must not come back on replay either.
            let _ = self.file.set_len(self.len);
            self.unsynced = 0;
            return Err(e);
        }
        self.commit_len();
        Ok(())
    }

    /// Counts the appended bytes as good (after a sync, or at once with `fsync = "never"`).
    pub fn commit_len(&mut self) {
        self.len += self.unsynced;
        self.unsynced = 0;
    }

    /// The log's length now: a mark to cut back to with `cut_back`.
    pub fn mark(&self) -> u64 {
        self.len
    }

    /// Removes everything written after `mark` (a batch that could not be applied: it was
    /// never acknowledged, so it must not come back on replay).
    pub fn cut_back(&mut self, mark: u64) -> io::Result<()> {
        self.file.set_len(mark)?;
        self.file.sync_all()?;
        self.len = mark;
        self.unsynced = 0;
        Ok(())
    }

    /// After a snapshot at `seq`: opens a new segment at `seq + 1` and deletes every segment
    /// whose records are all at or below `keep_after` (the sequence number of the snapshot kept
    /// for fallback, or `seq` itself when there is none, or the last record published to the
    /// change log when that is lower: the log is the outbox of replication).
    pub fn rotate_after_snapshot(&mut self, seq: u64, keep_after: u64) -> io::Result<()> {
        self.file.sync_data()?;
        let next = WriteLog::create(&self.dir, seq + 1)?;
        *self = next;
        let segs = segments(&self.dir)?;
        for pair in segs.windows(2) {
            let ((_, path), (next_first, _)) = (&pair[0], &pair[1]);
            if *next_first <= keep_after + 1 {
                fs::remove_file(path)?;
            }
        }
        sync_dir(&self.dir)
    }
}

#[cfg(test)]
#[path = "wal_tests.rs"]
mod tests;
