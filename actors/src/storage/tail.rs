//! Reading a shard's log from a position while the writer appends to it: the change-log
//! publisher's view of the log (the log is replication's outbox, see `regions` in the server).
//!
//! The reader keeps its place (segment and byte offset), so each read costs what is new, not a
//! re-read of the segment. It only hands out records up to a sequence number the caller knows
//! to be acknowledged (the shard's applied seq): bytes past it may be a batch being written or
//! one cut back after a failed apply. Damage is skipped exactly as replay skips it.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::record::{self, Decoded, Format};
use super::wal::segments;
use crate::index::hnsw::Op;
use crate::version::PointVersion;

/// One record read from the log.
pub type TailRecord = (u64, Option<PointVersion>, Op);

/// At most this many bytes are read from a segment per call.
const READ_CHUNK: usize = 4 << 20;

pub struct LogTail {
    dir: PathBuf,
    /// The last sequence number handed out (or skipped as already published).
    after: u64,
    /// The segment being read (its first seq) and the offset of the next record in it.
    at: Option<(u64, u64)>,
}

impl LogTail {
    /// A reader that hands out records with `seq > after`.
    pub fn new(dir: &Path, after: u64) -> LogTail {
        LogTail {
            dir: dir.to_path_buf(),
            after,
            at: None,
        }
    }

    /// The last sequence number read.
    pub fn after(&self) -> u64 {
        self.after
    }

    /// Up to `max` records with `after < seq <= upto`, in order. Fewer (or none) when the log
    /// holds no more yet. `Err` only for I/O errors (the caller retries later).
    pub fn read(&mut self, upto: u64, max: usize) -> io::Result<Vec<TailRecord>> {
        let mut out = Vec::new();
        if upto <= self.after {
            return Ok(out);
        }
        let segs = segments(&self.dir)?;
        // Start in the newest segment whose first seq is at or below the next wanted one.
        let (mut first, mut offset) = match self.at {
            Some(at) if segs.iter().any(|(f, _)| *f == at.0) => at,
            _ => match segs.iter().rev().find(|(f, _)| *f <= self.after + 1) {
                Some((f, _)) => (*f, 0),
                // The wanted records are older than every segment (published too late to keep):
                // start at the oldest there is.
                None => match segs.first() {
                    Some((f, _)) => (*f, 0),
                    None => return Ok(out),
                },
            },
        };
        let mut chunk = READ_CHUNK;
        loop {
            let path = segs
                .iter()
                .find(|(f, _)| *f == first)
                .map(|(_, p)| p.clone())
                .ok_or_else(|| io::Error::other("log segment vanished"))?;
            let data = read_from(&path, offset, chunk)?;
            let full = data.len() == chunk;
            let (format, mut pos) = if offset == 0 {
                Format::of_segment(&data)
            } else {
                (segment_format(&path)?, 0)
            };
            let begin = pos;
            let mut stop = false;
            while out.len() < max {
                match record::decode(format, &data[pos..]) {
                    Decoded::Record {
                        seq,
                        version,
                        op,
                        len,
                    } => {
                        if seq > upto {
                            stop = true;
                            break;
                        }
                        pos += len;
                        if seq > self.after {
                            self.after = seq;
                            out.push((seq, version, op));
                        }
                    }
                    Decoded::End => break,
                    // Maybe a record cut by the end of the chunk: read again from it.
                    Decoded::Corrupt(_) if full => break,
                    Decoded::Corrupt(_) => match record::resync(format, &data, pos, self.after) {
                        Some(next) => pos = next,
                        // A record still being written (or a torn tail): try again later.
                        None => {
                            stop = true;
                            break;
                        }
                    },
                }
            }
            offset += pos as u64;
            self.at = Some((first, offset));
            if out.len() >= max || stop || self.after >= upto {
                return Ok(out);
            }
            if full {
                // A record larger than the chunk: read more at once.
                if pos == begin {
                    chunk = (chunk * 2).min(record::MAX_RECORD_BYTES + 64);
                }
                continue;
            }
            // The end of this segment: go on in the next one, if the writer moved there.
            match segs.iter().find(|(f, _)| *f > first) {
                Some((next, _)) => {
                    first = *next;
                    offset = 0;
                }
                None => return Ok(out),
            }
        }
    }
}

/// Up to `chunk` bytes of `path` from `offset`.
fn read_from(path: &Path, offset: u64, chunk: usize) -> io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut data = Vec::new();
    f.take(chunk as u64).read_to_end(&mut data)?;
    Ok(data)
}

fn segment_format(path: &Path) -> io::Result<Format> {
    let mut head = [0u8; 8];
    let mut f = File::open(path)?;
    let n = f.read(&mut head)?;
    Ok(Format::of_segment(&head[..n]).0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::record::sample_upsert as up;
    use crate::storage::wal::WriteLog;

    #[test]
    fn the_tail_hands_out_acknowledged_records_once_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = WriteLog::create(dir.path(), 1).unwrap();
        let a = up("a");
        log.append((1..=3).map(|s| (s, None, &a))).unwrap();
        log.sync().unwrap();
        let mut tail = LogTail::new(dir.path(), 0);
        let seqs = |v: Vec<TailRecord>| v.into_iter().map(|r| r.0).collect::<Vec<_>>();
        // Only what the shard acknowledged.
        assert_eq!(seqs(tail.read(2, 10).unwrap()), vec![1, 2]);
        assert_eq!(seqs(tail.read(3, 10).unwrap()), vec![3]);
        assert!(tail.read(3, 10).unwrap().is_empty());
        log.rotate_after_snapshot(3, 0).unwrap();
        log.append((4..=6).map(|s| (s, None, &a))).unwrap();
        log.sync().unwrap();
        assert_eq!(seqs(tail.read(6, 2).unwrap()), vec![4, 5]);
        assert_eq!(seqs(tail.read(6, 10).unwrap()), vec![6]);
        // A reader starting later finds its place by sequence number.
        let mut late = LogTail::new(dir.path(), 4);
        assert_eq!(seqs(late.read(6, 10).unwrap()), vec![5, 6]);
    }
}
