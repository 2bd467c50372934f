//! `ruvector-load`: benchmarks and load for ruvector-streaming.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use ruvector_load::ann;
use ruvector_load::scenario::Scenario;

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
    BenchAnn(Box<ann::BenchAnn>),
    /// Run a scenario file (load/scenarios/*.toml): live progress, a final table, a JSON report
    /// and an SVG chart.
    Run(RunArgs),
    /// Crash cycles: `kill -9` at random moments under concurrent REST and WebSocket writers;
    /// every restart is checked against the acknowledged operations.
    Crash(ruvector_load::crash::CrashArgs),
    /// Abusive clients in their own processes (ping-flood, slow-body, fat-metadata) and the
    /// latency of a well-behaved client alongside, against its unloaded latency.
    Abuse(ruvector_load::abuse::AbuseArgs),
    /// (internal) One abusive process of `abuse`.
    #[command(hide = true)]
    AbuseWorker {
        #[arg(value_enum)]
        kind: ruvector_load::abuse::Kind,
        #[arg(long)]
        server: std::net::SocketAddr,
        #[arg(long)]
        connections: usize,
    },
    /// Agent coordination over WebSockets: `claims` (many agents draining a task queue),
    /// `fanout` (one topic to many subscribers), `idle-agents` (memory per registered agent).
    Coord(ruvector_load::coord::CoordArgs),
    /// Draw the SVG chart of a JSON report written by `run`.
    Plot { report: PathBuf, out: PathBuf },
    /// (internal) One worker process of a `run` that needs several.
    #[command(hide = true)]
    Worker,
    /// Hold many idle WebSocket or SSE streams; report the server's memory per stream, before and
    /// after a burst of one large message per stream.
    IdleScale(IdleScaleArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// The scenario file.
    scenario: PathBuf,
    /// Server address (host:port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    server: std::net::SocketAddr,
    /// The server's process id, for its memory and CPU from /proc (same machine only).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Override the scenario's stream count.
    #[arg(long)]
    streams: Option<usize>,
    /// Cap the total duration (s): phases are shortened in proportion (e.g. for soak).
    #[arg(long)]
    max_duration_s: Option<f64>,
    /// JSON report path.
    #[arg(long, default_value = "report.json")]
    out: PathBuf,
    /// SVG chart path.
    #[arg(long, default_value = "report.svg")]
    plot: PathBuf,
}

#[derive(clap::Args)]
struct IdleScaleArgs {
    /// Which streams: WebSocket, or SSE subscriptions (to a collection the run creates).
    #[arg(long, value_enum, default_value = "ws")]
    kind: ruvector_load::streams::StreamKind,
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

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::BenchAnn(args) => ann::bench(&args).map(|_| ()),
        Command::IdleScale(args) => idle_scale(args),
        Command::Run(args) => run(args),
        Command::Worker => ruvector_load::worker::worker_main(),
        Command::Plot { report, out } => plot(&report, &out),
        Command::Crash(args) => crash(&args),
        Command::Abuse(args) => abuse(&args),
        Command::Coord(args) => coord(&args),
        Command::AbuseWorker {
            kind,
            server,
            connections,
        } => {
            ruvector_load::abuse::worker(kind, server, connections);
            Ok(())
        }
    };
    if let Err(e) = result {
        eprintln!("ruvector-load: {e}");
        std::process::exit(1);
    }
}

fn abuse(a: &ruvector_load::abuse::AbuseArgs) -> Result<(), String> {
    let r = ruvector_load::abuse::abuse(a)?;
    let text = serde_json::to_string_pretty(&r).map_err(|e| e.to_string())?;
    println!("{text}");
    if let Some(out) = &a.out {
        std::fs::write(out, &text).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    Ok(())
}

fn coord(a: &ruvector_load::coord::CoordArgs) -> Result<(), String> {
    let r = ruvector_load::coord::coord(a)?;
    let text = serde_json::to_string_pretty(&r).map_err(|e| e.to_string())?;
    println!("{text}");
    if let Some(out) = &a.out {
        std::fs::write(out, &text).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    if r.assigned_twice > 0 || r.never_assigned > 0 {
        return Err(format!(
            "{} tasks assigned twice, {} never assigned",
            r.assigned_twice, r.never_assigned
        ));
    }
    Ok(())
}

fn crash(a: &ruvector_load::crash::CrashArgs) -> Result<(), String> {
    let r = ruvector_load::crash::crash(a)?;
    println!(
        "cycles {}  acknowledged {}  refused {}  lost {}  restart p50 {} ms  max {} ms",
        r.cycles, r.acknowledged, r.refused, r.lost, r.restart_ms_p50, r.restart_ms_max
    );
    for l in &r.losses {
        println!("  {l}");
    }
    let text = serde_json::to_string_pretty(&r).map_err(|e| e.to_string())?;
    if let Some(out) = &a.out {
        std::fs::write(out, &text).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    if r.lost > 0 {
        return Err(format!("{} acknowledged operations lost", r.lost));
    }
    Ok(())
}

fn plot(report: &std::path::Path, out: &std::path::Path) -> Result<(), String> {
    let text = std::fs::read_to_string(report).map_err(|e| format!("{}: {e}", report.display()))?;
    let r: ruvector_load::report::Report =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", report.display()))?;
    r.plot(out)
}

fn run(a: RunArgs) -> Result<(), String> {
    let mut s = Scenario::load(&a.scenario)?;
    if let (Some(n), Some(st)) = (a.streams, s.streams.as_mut()) {
        st.count = n;
    }
    if let Some(max) = a.max_duration_s {
        s.cap_duration(max);
    }
    let opts = ruvector_load::run::RunOptions {
        server: a.server,
        server_pid: a.server_pid,
        progress: true,
        in_process: false,
    };
    let report = ruvector_load::run::run(&s, &opts)?;
    print!("{}", report.table());
    let json = serde_json::to_vec_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(&a.out, json).map_err(|e| format!("{}: {e}", a.out.display()))?;
    if report.ann.is_none() {
        report.plot(&a.plot)?;
        println!("report: {}, chart: {}", a.out.display(), a.plot.display());
    } else {
        println!("report: {}", a.out.display());
    }
    Ok(())
}

fn idle_scale(a: IdleScaleArgs) -> Result<(), String> {
    let cfg = ruvector_load::streams::IdleScale {
        kind: a.kind,
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
