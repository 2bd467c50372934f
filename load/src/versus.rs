//! `bench-ann --hnswlib PYTHON`: runs hnswlib (through `load/compare_hnswlib.py`) on the same
//! files in the same sitting and prints both engines side by side: build time, bytes per point,
//! and single-thread QPS at recall@k = 0.95 and 0.99 (each interpolated along its own ef sweep),
//! with our/their ratios. One run, one machine: the ratios hold on a noisy machine where the
//! absolute figures do not.

use std::path::Path;
use std::process::Command;

use serde::Deserialize;
use serde_json::{json, Value};

/// The recall levels the ratios are reported at.
pub const TARGETS: [f64; 2] = [0.95, 0.99];

#[derive(Debug, Deserialize)]
pub struct TheirRow {
    pub ef: usize,
    pub recall: f64,
    pub qps_1_thread: f64,
}

#[derive(Debug, Deserialize)]
pub struct Theirs {
    pub build_s: f64,
    pub index_bytes: f64,
    pub points: usize,
    pub sweep: Vec<TheirRow>,
}

/// What hnswlib is run with: the same parameters as our side.
pub struct Params<'a> {
    pub metric: &'a str,
    pub m: usize,
    pub ef_construction: usize,
    pub efs: &'a [usize],
    pub k: usize,
    pub threads: usize,
}

/// Runs the script with `python` on the data in `dir`.
pub fn run_hnswlib(python: &str, dir: &Path, p: &Params<'_>) -> Result<Theirs, String> {
    let (metric, m, ef_construction, efs, k, threads) =
        (p.metric, p.m, p.ef_construction, p.efs, p.k, p.threads);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("compare_hnswlib.py");
    let out = dir.join("hnswlib.json");
    let efs: Vec<String> = efs.iter().map(|e| e.to_string()).collect();
    let status = Command::new(python)
        .arg(&script)
        .arg(dir)
        .args(["--metric", metric, "--m", &m.to_string()])
        .args(["--ef-construction", &ef_construction.to_string()])
        .args(["--ef", &efs.join(","), "--k", &k.to_string()])
        .args(["--threads", &threads.to_string()])
        .arg("--json")
        .arg(&out)
        .status()
        .map_err(|e| format!("{python}: {e}"))?;
    if !status.success() {
        return Err(format!("hnswlib run failed: {status}"));
    }
    let text = std::fs::read(&out).map_err(|e| e.to_string())?;
    serde_json::from_slice(&text).map_err(|e| e.to_string())
}

/// QPS at `target` recall, linear between the two sweep points around it (None: never reached).
pub fn qps_at(points: &[(f64, f64)], target: f64) -> Option<f64> {
    let mut pts: Vec<(f64, f64)> = points.to_vec();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    if let Some(first) = pts.first().filter(|p| p.0 >= target) {
        return Some(first.1);
    }
    pts.windows(2).find_map(|w| {
        let ((r0, q0), (r1, q1)) = (w[0], w[1]);
        (r0 < target && r1 >= target).then(|| q0 + (q1 - q0) * (target - r0) / (r1 - r0))
    })
}

fn ratio(ours: Option<f64>, theirs: Option<f64>) -> Option<f64> {
    Some(ours? / theirs?)
}

fn show(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.0}"))
}

/// Prints the side-by-side table; answers it as JSON. `ours_pts`: (recall, 1-thread QPS) of our
/// sweep.
pub fn side_by_side(
    ours_build_s: f64,
    ours_bytes_per_point: f64,
    ours_pts: &[(f64, f64)],
    theirs: &Theirs,
) -> Value {
    let their_pts: Vec<(f64, f64)> = theirs
        .sweep
        .iter()
        .map(|r| (r.recall, r.qps_1_thread))
        .collect();
    let their_bpp = theirs.index_bytes / theirs.points.max(1) as f64;
    println!("\nside by side (one sitting):      hnswlib        ours     ours/hnswlib");
    println!(
        "build (s)                   {:>12.2} {:>11.2} {:>12.2}x speed",
        theirs.build_s,
        ours_build_s,
        theirs.build_s / ours_build_s
    );
    println!(
        "bytes per point             {:>12.0} {:>11.0} {:>12.2}x",
        their_bpp,
        ours_bytes_per_point,
        ours_bytes_per_point / their_bpp
    );
    let mut at = Vec::new();
    for target in TARGETS {
        let (o, t) = (qps_at(ours_pts, target), qps_at(&their_pts, target));
        let r = ratio(o, t);
        println!(
            "QPS 1 thread at recall {target:.2}  {:>12} {:>11} {:>12}",
            show(t),
            show(o),
            r.map_or("-".into(), |v| format!("{v:.2}x"))
        );
        at.push(json!({"recall": target, "hnswlib_qps": t, "ours_qps": o, "ratio": r}));
    }
    json!({
        "hnswlib_build_s": theirs.build_s,
        "build_speed_ratio": theirs.build_s / ours_build_s,
        "hnswlib_bytes_per_point": their_bpp,
        "bytes_ratio": ours_bytes_per_point / their_bpp,
        "qps_at": at,
        "hnswlib_sweep": theirs.sweep.iter().map(|r| json!({"ef": r.ef, "recall": r.recall, "qps_1_thread": r.qps_1_thread})).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::qps_at;

    #[test]
    fn qps_is_interpolated_between_the_sweep_points_around_the_target() {
        let pts = [(0.90, 4000.0), (0.96, 2000.0), (0.99, 1000.0)];
        assert_eq!(qps_at(&pts, 0.96), Some(2000.0));
        let mid = qps_at(&pts, 0.93).unwrap();
        assert!((mid - 3000.0).abs() < 1e-6, "{mid}");
        assert_eq!(qps_at(&pts, 0.995), None, "never reached");
        assert_eq!(qps_at(&[(0.97, 500.0)], 0.95), Some(500.0));
    }
}
