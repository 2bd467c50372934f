//! `ruvector-streaming`: the server binary.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use ruvector_streaming::settings::Settings;
use ruvector_streaming::{start, telemetry};

#[derive(Parser)]
#[command(
    name = "ruvector-streaming",
    version,
    about = "Streaming vector search server"
)]
struct Cli {
    /// A TOML file overriding config/default.toml (environment variables override both).
    #[arg(long, global = true, env = "RUVECTOR_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Print the effective configuration as TOML-like JSON and exit.
    Config,
    /// Accept the damage that holds a collection back at start (the server must be stopped):
    /// cut its log at the damage (cut bytes kept in side files), accept missing records, write
    /// a fresh snapshot. Prints what was lost.
    Repair {
        /// The stored collection name (`tenant.name` for a tenant's collection).
        #[arg(long)]
        collection: String,
    },
}

fn main() {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ruvector-streaming: {e}");
            std::process::exit(2);
        }
    };
    if let Some(Command::Config) = cli.command {
        println!(
            "{}",
            serde_json::to_string_pretty(&settings).unwrap_or_default()
        );
        return;
    }
    telemetry::init_logs();
    if let Some(Command::Repair { collection }) = &cli.command {
        std::process::exit(repair(&settings, collection));
    }
    let prometheus = if settings.metrics.enabled {
        match telemetry::init_metrics() {
            Ok(h) => Some(h),
            Err(e) => {
                eprintln!("ruvector-streaming: metrics: {e}");
                std::process::exit(2);
            }
        }
    } else {
        None
    };
    let result = actix_web::rt::System::new().block_on(async move {
        let running = start(settings, prometheus).await?;
        for a in &running.addrs {
            // Tests and scripts read this line to find the port when it was 0.
            println!("listening on {a}");
            tracing::info!(addr = %a, "listening");
        }
        wait_for_signal().await;
        tracing::info!("signal received: draining");
        running.drain().await;
        Ok::<(), std::io::Error>(())
    });
    if let Err(e) = result {
        eprintln!("ruvector-streaming: {e}");
        std::process::exit(1);
    }
}

/// Runs `repair`; the process exit code.
fn repair(settings: &Settings, collection: &str) -> i32 {
    match ruvector_actors::repair_collection(&settings.engine(), collection) {
        Ok(shards) => {
            for s in &shards {
                println!(
                    "shard {}: {} points, {} records replayed, {} damaged regions passed over, {} quarantined{}",
                    s.shard,
                    s.points,
                    s.replayed,
                    s.damaged,
                    s.quarantined,
                    if s.recreated { ", directory was missing (started empty)" } else { "" }
                );
                for h in &s.holes {
                    println!("shard {}: accepted loss: {h}", s.shard);
                }
            }
            println!("collection {collection:?} repaired; it loads at the next start");
            0
        }
        Err(e) => {
            eprintln!("ruvector-streaming repair: {e}");
            1
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
