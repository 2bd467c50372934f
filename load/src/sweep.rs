//! What both halves of `bench-ann` (in process and through HTTP) share: the dataset view, one
//! row of the ef sweep, recall@k and the timing helpers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use hdrhistogram::Histogram;
use ruvector_actors::types::Metric;
use serde::Serialize;

/// One point of the ef sweep.
#[derive(Debug, Clone, Serialize)]
pub struct SweepRow {
    pub mode: &'static str,
    pub ef: usize,
    pub recall: f64,
    pub qps_1_thread: f64,
    pub qps_all_threads: f64,
    pub threads: usize,
    pub p50_us: u64,
    pub p99_us: u64,
    /// Server CPU time per query over the 1-thread pass (HTTP, with `--server-pid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_us: Option<f64>,
    /// The server's own p50 for the search route over the 1-thread pass (HTTP), from its
    /// `ruvector_http_request_duration_seconds` histogram.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_p50_us: Option<f64>,
}

pub struct Dataset<'a> {
    pub base: &'a [Vec<f32>],
    pub queries: &'a [Vec<f32>],
    pub truth: &'a [Vec<u32>],
    pub k: usize,
    pub metric: Metric,
}

pub(crate) fn recall(truth: &[u32], got: &[u32], k: usize) -> usize {
    let t = &truth[..k.min(truth.len())];
    got.iter().take(k).filter(|g| t.contains(g)).count()
}

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

/// Runs `one(query index)` over all queries on `threads` threads; returns QPS.
pub(crate) fn parallel_qps(n: usize, threads: usize, one: &(dyn Fn(usize) + Sync)) -> f64 {
    let next = AtomicUsize::new(0);
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                one(i);
            });
        }
    });
    n as f64 / t.elapsed().as_secs_f64()
}
