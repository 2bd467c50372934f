//! `ruvector-load`: benchmarks and load for ruvector-streaming.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use ruvector_actors::types::{HnswParams, Metric};
use ruvector_load::{ann, data};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "ruvector-load",
    version,
    about = "Benchmarks and load generator for ruvector-streaming"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// ANN benchmark: build time, durable insert throughput, recall@k and QPS over an ef sweep.
    BenchAnn(BenchAnn),
    /// Hold many idle WebSocket streams; report the server's memory per stream, before and after
    /// a burst of one large message per stream.
    IdleScale(IdleScaleArgs),
}

#[derive(clap::Args)]
struct IdleScaleArgs {
    /// Server address (host:port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    server: std::net::SocketAddr,
    /// Streams to open.
    #[arg(long, default_value_t = 1000)]
    conns: usize,
    /// Source addresses 127.0.0.1 ..= 127.0.0.N to spread connections over.
    #[arg(long, default_value_t = 4)]
    sources: u8,
    #[arg(long, default_value_t = 256)]
    connect_parallel: usize,
    /// Seconds to hold the streams idle before measuring.
    #[arg(long, default_value_t = 10)]
    settle_secs: u64,
    /// Bytes of the one message every stream sends in the burst (0: no burst).
    #[arg(long, default_value_t = 0)]
    burst_bytes: usize,
    /// Seconds to watch memory after the burst.
    #[arg(long, default_value_t = 15)]
    recover_secs: u64,
    /// The server's process id (for its memory, from /proc).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Write the JSON report here too.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(clap::Args)]
struct BenchAnn {
    /// Base vectors (.fvecs); without it, clustered data is generated.
    #[arg(long)]
    base: Option<PathBuf>,
    /// Query vectors (.fvecs), with --base.
    #[arg(long)]
    queries: Option<PathBuf>,
    /// Ground truth (.ivecs); computed by brute force when absent.
    #[arg(long)]
    gt: Option<PathBuf>,
    /// Generated base size.
    #[arg(long, default_value_t = 100_000)]
    n: usize,
    /// Generated query count.
    #[arg(long, default_value_t = 1_000)]
    nq: usize,
    #[arg(long, default_value_t = 128)]
    dim: usize,
    #[arg(long, default_value_t = 100)]
    clusters: usize,
    /// Intrinsic dimension of each generated cluster.
    #[arg(long, default_value_t = 16)]
    latent: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long, default_value = "l2")]
    metric: String,
    #[arg(long, default_value_t = 16)]
    m: usize,
    #[arg(long, default_value_t = 200)]
    ef_construction: usize,
    /// ef values to sweep.
    #[arg(long, value_delimiter = ',', default_value = "16,32,64,128,256")]
    ef: Vec<usize>,
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Threads for the "all threads" figures (default: cores).
    #[arg(long)]
    threads: Option<usize>,
    /// A running server to benchmark through HTTP (e.g. http://127.0.0.1:8080).
    #[arg(long)]
    url: Option<String>,
    /// Points per HTTP insert request.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Skip the in-process part.
    #[arg(long)]
    no_in_process: bool,
    /// Write the data used (base.fvecs, queries.fvecs, gt.ivecs) here, e.g. for hnswlib.
    #[arg(long)]
    write_data: Option<PathBuf>,
    /// Write the JSON report here.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::BenchAnn(args) => bench_ann(args),
        Command::IdleScale(args) => idle_scale(args),
    };
    if let Err(e) = result {
        eprintln!("ruvector-load: {e}");
        std::process::exit(1);
    }
}

fn idle_scale(a: IdleScaleArgs) -> Result<(), String> {
    let cfg = ruvector_load::streams::IdleScale {
        server: a.server,
        conns: a.conns,
        sources: (1..=a.sources.max(1))
            .map(|i| std::net::IpAddr::from([127, 0, 0, i]))
            .collect(),
        connect_parallel: a.connect_parallel,
        settle: std::time::Duration::from_secs(a.settle_secs),
        burst_bytes: a.burst_bytes,
        recover: std::time::Duration::from_secs(a.recover_secs),
        server_pid: a.server_pid,
    };
    let report = ruvector_load::streams::idle_scale(cfg, &|phase, done, total| {
        eprint!("\r{phase}: {done}/{total}        ");
    });
    eprintln!();
    let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    println!("{text}");
    if let Some(out) = a.out {
        std::fs::write(&out, &text).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    Ok(())
}

fn bench_ann(a: BenchAnn) -> Result<(), String> {
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
    };
    let d = ann::Dataset {
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
    if !a.no_in_process {
        let (build, r) = ann::in_process(&d, hnsw, &a.ef, threads);
        println!(
            "in-process build: {:.2} s ({:.0} points/s)",
            build.as_secs_f64(),
            base.len() as f64 / build.as_secs_f64()
        );
        report["in_process_build_s"] = json!(build.as_secs_f64());
        rows.extend(r);
    }
    if let Some(url) = &a.url {
        let h = ann::http(&d, url.trim_end_matches('/'), hnsw, &a.ef, threads, a.batch)?;
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
        "{:<11} {:>5} {:>9} {:>12} {:>12} {:>9} {:>9}",
        "mode", "ef", "recall", "qps(1 thr)", "qps(all)", "p50 us", "p99 us"
    );
    for r in &rows {
        println!(
            "{:<11} {:>5} {:>9.4} {:>12.0} {:>12.0} {:>9} {:>9}",
            r.mode, r.ef, r.recall, r.qps_1_thread, r.qps_all_threads, r.p50_us, r.p99_us
        );
    }
    report["sweep"] = json!(rows);
    if let Some(out) = &a.out {
        std::fs::write(
            out,
            serde_json::to_vec_pretty(&report).map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}
