//! Replay's treatment of torn tails, mid-segment damage and holes.

use super::record::sample_upsert as up;
use super::*;

fn write_log(dir: &Path, first: u64, n: u64) -> PathBuf {
    let mut log = WriteLog::create(dir, first).unwrap();
    let ops: Vec<Op> = (0..n).map(|i| up(&format!("p{i}"))).collect();
    log.append(
        ops.iter()
            .enumerate()
            .map(|(i, op)| (first + i as u64, None, op)),
    )
    .unwrap();
    log.sync().unwrap();
    dir.join(segment_name(first))
}

fn replay_seqs(dir: &Path, mode: ReplayMode) -> (Vec<u64>, ReplayReport) {
    let mut seen = vec![];
    let report = replay(dir, 0, mode, |seq, _, _, _| seen.push(seq)).unwrap();
    (seen, report)
}

#[test]
fn torn_tail_is_cut_off_kept_aside_and_earlier_records_survive() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 1, 10);
    let len = fs::metadata(&path).unwrap().len();
    let mut data = fs::read(&path).unwrap();
    let n = data.len();
    data[n - 3..].copy_from_slice(&[0xff, 0xfe, 0xfd]);
    fs::write(&path, &data).unwrap();
    let (seen, report) = replay_seqs(dir.path(), ReplayMode::Strict);
    assert_eq!(seen, (1..=9).collect::<Vec<_>>());
    assert_eq!(report.truncated.len(), 1);
    assert!(report.holes.is_empty());
    let cut_len = fs::metadata(&path).unwrap().len();
    assert!(cut_len < len);
    let side: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".torn-"))
        .collect();
    assert_eq!(side.len(), 1, "the cut bytes are kept aside");
    assert_eq!(fs::metadata(side[0].path()).unwrap().len(), len - cut_len);
    let (_, again) = replay_seqs(dir.path(), ReplayMode::Strict);
    assert!(again.truncated.is_empty());
    assert_eq!(again.records, 9);
}

#[test]
fn damage_in_the_middle_skips_exactly_one_record_and_keeps_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 1, 200);
    let before = fs::read(&path).unwrap();
    let mut data = before.clone();
    let mid = data.len() / 2;
    data[mid] ^= 0x5a;
    fs::write(&path, &data).unwrap();
    let (seen, report) = replay_seqs(dir.path(), ReplayMode::Strict);
    assert_eq!(seen.len(), 199, "exactly one record is lost");
    assert_eq!(
        *seen.last().unwrap(),
        200,
        "every record after the damage replays"
    );
    assert_eq!(report.skipped.len(), 1);
    assert!(report.holes.is_empty());
    assert!(report.truncated.is_empty());
    assert_eq!(
        fs::read(&path).unwrap(),
        data,
        "the damaged file is left as it is"
    );
}

#[test]
fn a_gap_between_segments_is_a_hole_in_strict_mode_and_accepted_by_repair() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 1, 5);
    let second = write_log(dir.path(), 6, 5);
    fs::remove_file(&second).unwrap();
    write_log(dir.path(), 11, 5);
    let (seen, report) = replay_seqs(dir.path(), ReplayMode::Strict);
    assert_eq!(report.holes.len(), 1, "{report:?}");
    assert_eq!(report.holes[0].after, 5);
    assert_eq!(report.holes[0].next, Some(11));
    assert_eq!(seen.len(), 10);
    let (seen, repaired) = replay_seqs(dir.path(), ReplayMode::Repair);
    assert_eq!(
        repaired.holes.len(),
        1,
        "repair reports the hole it accepts"
    );
    assert_eq!(seen.len(), 10);
}

#[test]
fn round_one_segments_still_replay() {
    let dir = tempfile::tempdir().unwrap();
    // A v1 record: [len][crc32 of payload][postcard {seq, op}] without a segment header.
    #[derive(serde::Serialize)]
    #[allow(dead_code)]
    enum WireOp {
        Upsert,
        Delete { id: String },
    }
    #[derive(serde::Serialize)]
    struct V1 {
        seq: u64,
        op: WireOp,
    }
    let mut data = Vec::new();
    for seq in 1..=3u64 {
        let payload = postcard::to_stdvec(&V1 {
            seq,
            op: WireOp::Delete {
                id: format!("d{seq}"),
            },
        })
        .unwrap();
        data.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        data.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        data.extend_from_slice(&payload);
    }
    fs::write(dir.path().join(segment_name(1)), &data).unwrap();
    let (seen, report) = replay_seqs(dir.path(), ReplayMode::Strict);
    assert_eq!(seen, [1, 2, 3]);
    assert!(report.truncated.is_empty() && report.skipped.is_empty());
}

#[test]
fn a_cut_back_batch_never_replays() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = WriteLog::create(dir.path(), 1).unwrap();
    let a = up("a");
    log.append([(1, None, &a)]).unwrap();
    log.sync().unwrap();
    let mark = log.mark();
    log.append([(2, None, &a)]).unwrap();
    log.sync().unwrap();
    log.cut_back(mark).unwrap();
    let (seen, _) = replay_seqs(dir.path(), ReplayMode::Strict);
    assert_eq!(seen, [1]);
}

#[test]
fn rotation_keeps_what_the_fallback_snapshot_needs() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = WriteLog::create(dir.path(), 1).unwrap();
    let a = up("a");
    log.append([(1, None, &a), (2, None, &a)]).unwrap();
    // Snapshot at 2, no earlier snapshot to keep: everything up to 2 goes.
    log.rotate_after_snapshot(2, 2).unwrap();
    log.append([(3, None, &a)]).unwrap();
    log.sync().unwrap();
    assert_eq!(segments(dir.path()).unwrap().len(), 1);
    // Snapshot at 3 keeping the one at 2: records after 2 stay.
    log.rotate_after_snapshot(3, 2).unwrap();
    assert_eq!(segments(dir.path()).unwrap().len(), 2);
    let mut seen = vec![];
    replay(dir.path(), 2, ReplayMode::Strict, |seq, _, _, _| {
        seen.push(seq)
    })
    .unwrap();
    assert_eq!(seen, [3]);
}
