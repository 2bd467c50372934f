//! `bench-ann`: build time, durable insert throughput, and recall@k with QPS over an ef sweep,
//! in process (one partition, the engine alone) and through the HTTP API (the whole server).

use std::time::{Duration, Instant};

use ruvector_actors::index::distance::to_graph_form;
use ruvector_actors::index::hnsw::{Op, Partition, PartitionQuery, PartitionSpec, SearchTuning};
use ruvector_actors::shard::load::load_partition;
use ruvector_actors::storage::snapshot;
use ruvector_actors::storage::wal::ReplayMode;
use ruvector_actors::types::{HnswParams, Metric, Quantization};
use serde_json::{json, Value};
use std::path::PathBuf;

use crate::data;
use crate::sweep::{histogram, parallel_qps, recall, Dataset, SweepRow};

/// The ef sweep of one engine: per ef, recall@k and 1-thread QPS (best of three passes: the
/// machine is shared and noisy; `compare_hnswlib.py` does the same), latency percentiles, and
/// QPS on `threads` threads. `search(query, ef)` answers base-row ids.
fn sweep(
    mode: &'static str,
    d: &Dataset,
    efs: &[usize],
    threads: usize,
    search: &(dyn Fn(usize, usize) -> Vec<u32> + Sync),
) -> Vec<SweepRow> {
    let nq = d.queries.len();
    efs.iter()
        .map(|&ef| {
            let mut h = histogram();
            let mut found = 0;
            let mut best = f64::MAX;
            for _ in 0..3 {
                found = 0;
                let t = Instant::now();
                for i in 0..nq {
                    let q = Instant::now();
                    let got = search(i, ef);
                    let _ = h.record(q.elapsed().as_micros().max(1) as u64);
                    found += recall(&d.truth[i], &got, d.k);
                }
                best = best.min(t.elapsed().as_secs_f64());
            }
            let qps_all = parallel_qps(nq, threads, &|i| {
                std::hint::black_box(search(i, ef));
            });
            SweepRow {
                mode,
                ef,
                recall: found as f64 / (nq * d.k) as f64,
                qps_1_thread: nq as f64 / best,
                qps_all_threads: qps_all,
                threads,
                p50_us: h.value_at_quantile(0.5),
                p99_us: h.value_at_quantile(0.99),
                server_cpu_us: None,
                server_p50_us: None,
            }
        })
        .collect()
}

/// The engine alone: one partition, filled the way a shard fills it (batches of 10,000 applied,
/// then linked by `threads` threads), searched through the partition's own search (hits with
/// exact scores, ids resolved).
pub fn in_process(
    d: &Dataset,
    hnsw: HnswParams,
    efs: &[usize],
    threads: usize,
) -> (Duration, Vec<SweepRow>, Partition) {
    let spec = PartitionSpec {
        metric: d.metric,
        dimension: d.base[0].len(),
        hnsw,
    };
    let p = Partition::new(spec);
    // Room for every point up front, as hnswlib's max_elements: the bytes per point measured
    // below are the structure's, not the slack of growth (at most a third, see graph.rs).
    p.graph().reserve(d.base.len());
    let t = Instant::now();
    for (c, chunk) in d.base.chunks(10_000).enumerate() {
        let ops: Vec<(u64, Op)> = chunk
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let n = c * 10_000 + i;
                (
                    n as u64 + 1,
                    Op::Upsert {
                        id: n.to_string(),
                        vector: v.clone(),
                        metadata: None,
                    },
                )
            })
            .collect();
        p.apply(&ops);
        p.link_all(threads);
    }
    let build = t.elapsed();
    let tuning = SearchTuning {
        exact_scan_max_points: 0,
        exact_scan_selectivity: 0.0,
    };
    let forms: Vec<Vec<f32>> = d
        .queries
        .iter()
        .map(|q| to_graph_form(d.metric, q))
        .collect();
    let search = |i: usize, ef: usize| -> Vec<u32> {
        let (hits, _) = p.search(
            &PartitionQuery {
                vector: &forms[i],
                k: d.k,
                ef,
                filter: None,
                with_vector: false,
                with_metadata: false,
            },
            &tuning,
        );
        hits.iter().filter_map(|h| h.id.parse().ok()).collect()
    };
    let rows = sweep("in-process", d, efs, threads, &search);
    (build, rows, p)
}

/// Writes `p` as a shard snapshot and times loading it back the way a restart does; answers
/// (snapshot write, load) durations.
pub fn restart(p: &Partition) -> Result<(Duration, Duration), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let seq = p.table().slots.len() as u64;
    let t = Instant::now();
    let versions = ruvector_actors::index::versions::Versions::default();
    snapshot::write(dir.path(), seq, p, &versions, None).map_err(|e| e.to_string())?;
    let wrote = t.elapsed();
    let t = Instant::now();
    let loaded =
        load_partition(dir.path(), *p.spec(), ReplayMode::Strict).map_err(|e| e.to_string())?;
    let load = t.elapsed();
    if loaded.partition.live() != p.live() || loaded.source != "snapshot" {
        return Err(format!(
            "snapshot loaded {} points from {}, {} written",
            loaded.partition.live(),
            loaded.source,
            p.live()
        ));
    }
    Ok((wrote, load))
}

/// The `bench-ann` arguments (also built from an `ann` scenario).
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "bench-ann")]
pub struct BenchAnn {
    /// Base vectors (.fvecs); without it, clustered data is generated.
    #[arg(long)]
    pub base: Option<PathBuf>,
    /// Query vectors (.fvecs), with --base.
    #[arg(long)]
    pub queries: Option<PathBuf>,
    /// Ground truth (.ivecs); computed by brute force when absent.
    #[arg(long)]
    pub gt: Option<PathBuf>,
    /// Generated base size.
    #[arg(long, default_value_t = 100_000)]
    pub n: usize,
    /// Generated query count.
    #[arg(long, default_value_t = 1_000)]
    pub nq: usize,
    #[arg(long, default_value_t = 128)]
    pub dim: usize,
    #[arg(long, default_value_t = 100)]
    pub clusters: usize,
    /// Intrinsic dimension of each generated cluster.
    #[arg(long, default_value_t = 16)]
    pub latent: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long, default_value = "l2")]
    pub metric: String,
    #[arg(long, default_value_t = 16)]
    pub m: usize,
    #[arg(long, default_value_t = 200)]
    pub ef_construction: usize,
    /// Vectors the searches walk: none (f32) or int8 (re-ranked with f32).
    #[arg(long, default_value = "none")]
    pub quantization: String,
    /// ef values to sweep.
    #[arg(long, value_delimiter = ',', default_value = "16,32,64,128,256")]
    pub ef: Vec<usize>,
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// Threads for the "all threads" figures (default: cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// A running server to benchmark through HTTP (e.g. http://127.0.0.1:8080).
    #[arg(long)]
    pub url: Option<String>,
    /// Points per HTTP insert request.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Keep the collection the HTTP part loaded (e.g. to measure a restart with it).
    #[arg(long)]
    pub keep: bool,
    /// The server's process id when it runs on this machine: the HTTP sweep reports its CPU time
    /// per query.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Shards of the HTTP part's collection (default: the server's).
    #[arg(long)]
    pub shards: Option<usize>,
    /// Skip the in-process part.
    #[arg(long)]
    pub no_in_process: bool,
    /// A Python with hnswlib and numpy: runs hnswlib on the same data in the same sitting and
    /// prints both side by side with ratios (`pip install hnswlib numpy`).
    #[arg(long)]
    pub hnswlib: Option<String>,
    /// Write the data used (base.fvecs, queries.fvecs, gt.ivecs) here, e.g. for hnswlib.
    #[arg(long)]
    pub write_data: Option<PathBuf>,
    /// Write the JSON report here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Prints a build time and its rate; answers the seconds.
fn print_build(what: &str, build: Duration, points: usize) -> f64 {
    let secs = build.as_secs_f64();
    println!(
        "{what} build: {secs:.2} s ({:.0} points/s)",
        points as f64 / secs
    );
    secs
}

/// Runs the ANN benchmark; prints the table and returns the JSON report.
pub fn bench(a: &BenchAnn) -> Result<Value, String> {
    let metric = Metric::parse(&a.metric).map_err(|e| e.to_string())?;
    let threads = a.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let (base, queries) = match (&a.base, &a.queries) {
        (Some(b), Some(q)) => (
            data::read_fvecs(b).map_err(|e| e.to_string())?,
            data::read_fvecs(q).map_err(|e| e.to_string())?,
        ),
        (None, None) => data::clustered(a.n, a.nq, a.dim, a.clusters, a.latent, 0.35, a.seed),
        _ => return Err("give both --base and --queries, or neither".into()),
    };
    if base.is_empty() || queries.is_empty() {
        return Err("no vectors".into());
    }
    let truth = match &a.gt {
        Some(p) => data::read_ivecs(p).map_err(|e| e.to_string())?,
        None => {
            let score = match metric {
                Metric::Cosine => data::score_cosine,
                Metric::L2 => data::score_l2,
                Metric::Dot => data::score_dot,
            };
            data::ground_truth(&base, &queries, a.k.max(100), score)
        }
    };
    if let Some(dir) = &a.write_data {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        data::write_fvecs(&dir.join("base.fvecs"), &base).map_err(|e| e.to_string())?;
        data::write_fvecs(&dir.join("queries.fvecs"), &queries).map_err(|e| e.to_string())?;
        data::write_ivecs(&dir.join("gt.ivecs"), &truth).map_err(|e| e.to_string())?;
    }
    let hnsw = HnswParams {
        m: a.m,
        ef_construction: a.ef_construction,
        ef_search: 64,
        quantization: Quantization::parse(&a.quantization).map_err(|e| e.to_string())?,
    };
    let d = Dataset {
        base: &base,
        queries: &queries,
        truth: &truth,
        k: a.k,
        metric,
    };
    println!(
        "bench-ann: {} base x {} dims, {} queries, metric {}, M={} ef_construction={}, k={}, {} threads",
        base.len(), base[0].len(), queries.len(), metric.as_str(), a.m, a.ef_construction, a.k, threads
    );
    let mut report = json!({
        "base": base.len(), "dim": base[0].len(), "queries": queries.len(), "metric": metric.as_str(),
        "m": a.m, "ef_construction": a.ef_construction, "k": a.k, "threads": threads,
    });
    let mut rows = Vec::new();
    let mut ours: Option<(f64, f64, Vec<SweepRow>)> = None;
    if !a.no_in_process {
        let (build, r, p) = in_process(&d, hnsw, &a.ef, threads);
        let build_s = print_build("in-process", build, base.len());
        report["in_process_build_s"] = json!(build_s);
        let n = base.len() as f64;
        let graph_bpp = p.graph().bytes() as f64 / n;
        let table_bpp = p.table().bytes() as f64 / n;
        println!(
            "in-process memory: {graph_bpp:.1} bytes per point for vectors + graph, {table_bpp:.1} for ids and versions (slot table)"
        );
        report["graph_bytes_per_point"] = json!(graph_bpp);
        report["slot_table_bytes_per_point"] = json!(table_bpp);
        let (wrote, load) = restart(&p)?;
        println!(
            "in-process restart: snapshot written in {:.2} s, loaded in {:.2} s",
            wrote.as_secs_f64(),
            load.as_secs_f64()
        );
        report["snapshot_write_s"] = json!(wrote.as_secs_f64());
        report["snapshot_load_s"] = json!(load.as_secs_f64());
        ours = Some((build_s, graph_bpp, r.clone()));
        rows.extend(r);
    }
    let mut versus = None;
    if let (Some(python), Some((build_s, bpp, our_rows))) = (&a.hnswlib, &ours) {
        let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
        let dir = match &a.write_data {
            Some(d) => d.clone(),
            None => {
                let d = scratch.path().to_path_buf();
                data::write_fvecs(&d.join("base.fvecs"), &base).map_err(|e| e.to_string())?;
                data::write_fvecs(&d.join("queries.fvecs"), &queries).map_err(|e| e.to_string())?;
                data::write_ivecs(&d.join("gt.ivecs"), &truth).map_err(|e| e.to_string())?;
                d
            }
        };
        let params = crate::versus::Params {
            metric: metric.as_str(),
            m: a.m,
            ef_construction: a.ef_construction,
            efs: &a.ef,
            k: a.k,
            threads,
        };
        let theirs = crate::versus::run_hnswlib(python, &dir, &params)?;
        versus = Some((*build_s, *bpp, our_rows.clone(), theirs));
    }
    if let Some(url) = &a.url {
        let plan = crate::ann_http::HttpPlan {
            url: url.trim_end_matches('/'),
            hnsw,
            efs: &a.ef,
            threads,
            batch: a.batch,
            keep: a.keep,
            server_pid: a.server_pid,
            shards: a.shards,
        };
        let h = crate::ann_http::http(&d, &plan)?;
        println!(
            "http durable insert: {:.2} s ({:.0} points/s, batches of {})",
            h.insert.as_secs_f64(),
            base.len() as f64 / h.insert.as_secs_f64(),
            a.batch
        );
        report["http_insert_s"] = json!(h.insert.as_secs_f64());
        report["http_insert_points_per_s"] = json!(base.len() as f64 / h.insert.as_secs_f64());
        rows.extend(h.rows);
    }
    println!(
        "{:<11} {:>5} {:>9} {:>12} {:>12} {:>9} {:>9} {:>14} {:>14}",
        "mode",
        "ef",
        "recall",
        "qps(1 thr)",
        "qps(all)",
        "p50 us",
        "p99 us",
        "server p50 us",
        "server cpu us"
    );
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
    for r in &rows {
        println!(
            "{:<11} {:>5} {:>9.4} {:>12.0} {:>12.0} {:>9} {:>9} {:>14} {:>14}",
            r.mode,
            r.ef,
            r.recall,
            r.qps_1_thread,
            r.qps_all_threads,
            r.p50_us,
            r.p99_us,
            opt(r.server_p50_us),
            opt(r.server_cpu_us)
        );
    }
    report["sweep"] = json!(rows);
    if let Some((build_s, bpp, our_rows, theirs)) = &versus {
        let pts: Vec<(f64, f64)> = our_rows
            .iter()
            .map(|r| (r.recall, r.qps_1_thread))
            .collect();
        report["hnswlib"] = crate::versus::side_by_side(*build_s, *bpp, &pts, theirs);
    }
    if let Some(out) = &a.out {
        std::fs::write(
            out,
            serde_json::to_vec_pretty(&report).map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(report)
}
