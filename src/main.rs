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
    if !settings.redis.url.is_empty() {
        tracing::warn!("redis.url is set but this build runs without Redis (single instance on the data directory)");
    }
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
