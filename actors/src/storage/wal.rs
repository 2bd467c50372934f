//! The shard's write-ahead log: numbered segments of checksummed records.
//!
//! Our own small log rather than redb/fjall/okaywal: the shard already keeps every point in
//! memory and snapshots it whole, so all it needs from disk is an append-only sequence of its
//! own ops, keyed by the shard's sequence numbers that snapshots refer to, with one fsync per
//! batch decided by the shard's writer (group commit). A B-tree or LSM store would write every
//! vector twice more and bring its own background compaction; okaywal's checkpoint callbacks
//! fight our snapshot cadence. The format is in `record.rs`; it is ~200 lines and tested below.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::record::{self, Decoded};
use crate::index::hnsw::Op;

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

/// What replay found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    pub records: u64,
    pub last_seq: u64,
    /// Segments cut short at a torn or corrupt record: (file, offset, reason).
    pub truncated: Vec<(PathBuf, u64, String)>,
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

/// Replays every record with `seq > after` in order, truncating each segment at its first
/// torn or corrupt record (the damage is logged and reported, never fatal).
pub fn replay(dir: &Path, after: u64, mut apply: impl FnMut(u64, Op)) -> io::Result<ReplayReport> {
    let mut report = ReplayReport {
        last_seq: after,
        ..Default::default()
    };
    for (_, path) in segments(dir)? {
        let data = fs::read(&path)?;
        let mut pos = 0usize;
        loop {
            match record::decode(&data[pos..]) {
                Decoded::Record { seq, op, len } => {
                    pos += len;
                    if seq > report.last_seq {
                        report.last_seq = seq;
                        report.records += 1;
                        apply(seq, op);
                    }
                }
                Decoded::End => break,
                Decoded::Corrupt(reason) => {
                    tracing::warn!(
                        file = %path.display(),
                        offset = pos,
                        dropped_bytes = data.len() - pos,
                        %reason,
                        "write log damaged: truncating at the last good record"
                    );
                    let f = OpenOptions::new().write(true).open(&path)?;
                    f.set_len(pos as u64)?;
                    f.sync_all()?;
                    report.truncated.push((path.clone(), pos as u64, reason));
                    break;
                }
            }
        }
    }
    Ok(report)
}

impl WriteLog {
    /// Starts a fresh segment whose first record will be `next_seq`.
    pub fn create(dir: &Path, next_seq: u64) -> io::Result<WriteLog> {
        fs::create_dir_all(dir)?;
        let path = dir.join(segment_name(next_seq));
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        sync_dir(dir)?;
        let len = file.metadata()?.len();
        Ok(WriteLog {
            dir: dir.to_path_buf(),
            file,
            buf: Vec::with_capacity(64 << 10),
            len,
            unsynced: 0,
        })
    }

    /// Writes records (not yet synced). One `write` call for the whole batch.
    pub fn append<'a>(
        &mut self,
        records: impl IntoIterator<Item = (u64, &'a Op)>,
    ) -> io::Result<()> {
        self.buf.clear();
        for (seq, op) in records {
            record::encode(seq, op, &mut self.buf);
        }
        if let Err(e) = self.file.write_all(&self.buf) {
            // Never leave half a batch in the log: later records would sit behind garbage.
            let _ = self.file.set_len(self.len);
            return Err(e);
        }
        self.unsynced = self.buf.len() as u64;
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

    /// After a snapshot at `seq`: opens a new segment at `seq + 1` and deletes every older segment
    /// (all their records are covered by the snapshot).
    pub fn rotate_after_snapshot(&mut self, seq: u64) -> io::Result<()> {
        self.file.sync_data()?;
        let next = WriteLog::create(&self.dir, seq + 1)?;
        let keep = self.dir.join(segment_name(seq + 1));
        *self = next;
        for (_, path) in segments(&self.dir)? {
            if path != keep {
                fs::remove_file(&path)?;
            }
        }
        sync_dir(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(id: &str) -> Op {
        Op::Upsert {
            id: id.into(),
            vector: vec![1.0, 2.0],
            metadata: serde_json::json!({"a": 1}).as_object().cloned(),
        }
    }

    #[test]
    fn torn_tail_is_truncated_and_earlier_records_survive() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = WriteLog::create(dir.path(), 1).unwrap();
        let ops: Vec<Op> = (0..10).map(|i| up(&format!("p{i}"))).collect();
        log.append(ops.iter().enumerate().map(|(i, op)| (i as u64 + 1, op)))
            .unwrap();
        log.sync().unwrap();
        drop(log);
        let (_, path) = segments(dir.path()).unwrap().pop().unwrap();
        let len = fs::metadata(&path).unwrap().len();
        // Damage the last record's last bytes.
        let mut data = fs::read(&path).unwrap();
        let n = data.len();
        data[n - 3..].copy_from_slice(&[0xff, 0xfe, 0xfd]);
        fs::write(&path, &data).unwrap();
        let mut seen = vec![];
        let report = replay(dir.path(), 0, |seq, _| seen.push(seq)).unwrap();
        assert_eq!(seen, (1..=9).collect::<Vec<_>>());
        assert_eq!(report.truncated.len(), 1);
        assert!(fs::metadata(&path).unwrap().len() < len);
        // A second replay is clean.
        let again = replay(dir.path(), 0, |_, _| {}).unwrap();
        assert!(again.truncated.is_empty());
        assert_eq!(again.records, 9);
    }

    #[test]
    fn rotation_drops_covered_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = WriteLog::create(dir.path(), 1).unwrap();
        let a = up("a");
        log.append([(1, &a), (2, &a)]).unwrap();
        log.rotate_after_snapshot(2).unwrap();
        log.append([(3, &a)]).unwrap();
        log.sync().unwrap();
        assert_eq!(segments(dir.path()).unwrap().len(), 1);
        let mut seen = vec![];
        replay(dir.path(), 2, |seq, _| seen.push(seq)).unwrap();
        assert_eq!(seen, [3]);
    }
}
