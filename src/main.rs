//! The `hookd` command: `serve` runs the daemon, `check-config` validates a configuration,
//! `ctl` talks to a running daemon, `man` prints the man page.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

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
    /// Talk to a running hookd: status, endpoints, deliveries, recover, events, backup, tail,
    /// receive.
    Ctl(Box<hookd::ctl::CtlArgs>),
    /// Install a backup (from `hookd ctl backup`) as storage.path, which must be empty or
    /// missing; run it with the daemon stopped, then start hookd.
    Restore {
        /// The backup directory
        #[arg(long)]
        from: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print the man page (roff) on stdout.
    Man,
}

/// Ends the process at once with `code`. Endpoint actors on other threads still hold the
/// database handle: exit() would run RocksDB's C++ static destructors underneath them, which
/// can crash the process at its very end.
fn exit_now(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stderr().flush();
    // SAFETY: _exit only terminates the process; no Rust state is observed after it.
    unsafe { libc::_exit(code) }
}

/// A panic anywhere is a bug whose effects cannot be trusted (an endpoint actor that unwound
/// would leave its deliveries with no owner): print it, then abort, and let systemd restart
/// hookd, whose recovery rebuilds every queue from storage. `panic = "abort"` in the release
/// profile does the same; the hook makes every build behave so, test builds included.
fn abort_on_panic() {
    let print = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        print(info);
        tracing::error!("panic: {info}; aborting so that recovery restarts from storage");
        std::process::abort();
    }));
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => {
            abort_on_panic();
            match serve(config) {
                // Everything is stored and RocksDB is closed (WAL synced, background work
                // stopped).
                Ok(()) => exit_now(0),
                // Once, on stderr: through the log when it is set up, plainly before that.
                Err(e) => {
                    if tracing::dispatcher::has_been_set() {
                        tracing::error!("{e:#}");
                    } else {
                        eprintln!("hookd: {e:#}");
                    }
                    exit_now(1)
                }
            }
        }
        Command::Ctl(args) => {
            if let hookd::ctl::CtlCommand::Completions { shell } = args.command {
                clap_complete::generate(
                    shell,
                    &mut Cli::command(),
                    "hookd",
                    &mut std::io::stdout(),
                );
                return ExitCode::SUCCESS;
            }
            ExitCode::from(hookd::ctl::run(*args) as u8)
        }
        Command::Restore { from, config } => {
            let config = match Config::load(config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("hookd: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match hookd::storage::backup::restore(&from, &config.storage.path) {
                Ok((files, bytes)) => {
                    println!(
                        "restored {} into {} ({files} files, {bytes} bytes); start hookd to deliver what it holds",
                        from.display(),
                        config.storage.path.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("hookd: restore: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Man => {
            let man = clap_mangen::Man::new(Cli::command());
            match man.render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("hookd: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig { config } => match Config::load(config.as_deref()) {
            Ok(c) => {
                // The CA bundle is read as `serve` would read it.
                if let Err(e) = hookd::delivery::tls::base_roots(c.delivery.ca_file()) {
                    eprintln!("hookd: {e}");
                    return ExitCode::FAILURE;
                }
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

fn serve(file: Option<PathBuf>) -> anyhow::Result<()> {
    let config = Config::load(file.as_deref())?;
    hookd::init_logging(&config.log);
    let listener = std::net::TcpListener::bind(config.server.listen)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.server.listen))?;
    actix_rt::System::new().block_on(hookd::run(config, listener, shutdown_signal(), file))?;
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
