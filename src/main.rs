//! The `hookd` command: `serve` runs the daemon, `check-config` validates a configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Every event allocates its way through parsing, signing and storage on several threads at
/// once; mimalloc's per-thread heaps keep that off glibc malloc's shared arenas.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use hookd::config::Config;

#[derive(Parser)]
#[command(name = "hookd", version, about = "A durable webhook dispatcher")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Serve {
        /// TOML configuration file (else $HOOKD_CONFIG, else config/hookd.toml if present).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate the configuration and print the effective one, tokens masked.
    CheckConfig {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => match serve(config) {
            Ok(()) => {
                // Everything is stored and RocksDB is closed (WAL synced, background work
                // stopped), but endpoint actors on other threads still hold the database handle.
                // exit() would run RocksDB's C++ static destructors underneath them, which can
                // crash the process at its very end; _exit ends it here with status 0 instead.
                use std::io::Write;
                let _ = std::io::stderr().flush();
                // SAFETY: _exit only terminates the process; no Rust state is observed after it.
                unsafe { libc::_exit(0) }
            }
            Err(e) => {
                tracing::error!("{e:#}");
                eprintln!("hookd: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::CheckConfig { config } => match Config::load(config.as_deref()) {
            Ok(c) => {
                print!("{}", c.to_masked_toml());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("hookd: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn serve(config: Option<PathBuf>) -> anyhow::Result<()> {
    let config = Config::load(config.as_deref())?;
    hookd::init_logging(&config.log);
    let listener = std::net::TcpListener::bind(config.server.listen)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.server.listen))?;
    tracing::info!("listening on {}", listener.local_addr()?);
    actix_rt::System::new().block_on(hookd::run(config, listener, shutdown_signal()))?;
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
