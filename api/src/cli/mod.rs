//! Command-line interface: argument parsing and one module per command.

mod bank_sim;
mod bench;
mod bench_bundle;
mod bench_keys;
mod bench_replay;
mod bundle;
pub mod checkpoints;
mod controls;
pub mod demo;
mod export;
pub mod history;
mod import_aba;
mod keys;
pub mod migrate;
mod operator;
mod projections;
pub mod replay;
mod serve;
mod token;
pub mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Folio: a tamper-evident, event-sourced payments ledger.
#[derive(Debug, Parser)]
#[command(name = "folio", version, about)]
pub struct Cli {
    /// Command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Every `folio` command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API, projections and bank dispatcher.
    Serve(serve::Args),
    /// Verify a ledger offline: every hash, link, position, signature and key rotation.
    Verify(verify::Args),
    /// Write a ledger to a self-contained export file that `folio verify` and auditors check.
    ExportLedger(export::Args),
    /// Run the bank simulator over mutual TLS.
    BankSim(bank_sim::Args),
    /// Submit an ABA (Cemtex direct entry) file to a running server.
    ImportAba(import_aba::Args),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(token::Command),
    /// Bootstrap the first administrator of a ledger.
    #[command(subcommand)]
    Operator(operator::Command),
    /// Rotate signing keys and the KEK, rewrap data keys, retire KEK versions.
    #[command(subcommand)]
    Keys(keys::Command),
    /// Apply the retention rules and record what was done.
    #[command(subcommand)]
    Retention(keys::RetentionCommand),
    /// Start a server and a bank simulator, drive payments through HTTP, verify, summarise.
    Demo(demo::Args),
    /// Write an evidence bundle (BagIt directory or ustar archive) for a scope of a ledger.
    ExportBundle(bundle::ExportArgs),
    /// Check an evidence bundle offline: files, manifest signature, chain, proofs and CSVs.
    VerifyBundle(bundle::VerifyArgs),
    /// Check an inclusion or consistency proof served by the API against the ledger's key.
    VerifyProof(checkpoints::ProofArgs),
    /// Measure sealed durable appends and verification against the bare signing rates.
    Bench(bench::Args),
    /// Continuous control monitoring.
    #[command(subcommand)]
    Controls(controls::Command),
    /// Copy ledgers between stores (SQLite and PostgreSQL), verifying as it goes.
    Migrate(migrate::Args),
    /// List a ledger's events, verified and decoded, with filters and causation links.
    History(history::Args),
    /// Rebuild a ledger's read models as they stood at a position or time, as JSON.
    Replay(replay::ReplayArgs),
    /// Show what changed in a ledger's read models between two positions or times.
    Diff(replay::DiffArgs),
    /// Rebuild read models from the ledger without stopping the server.
    #[command(subcommand)]
    Projections(projections::Command),
}

impl Command {
    /// Log level when `FOLIO_LOG` is unset: commands that print a report log warnings
    /// only, so the report stays readable; the server logs at info.
    pub fn default_log_level(&self) -> &'static str {
        match self {
            Command::Serve(_) | Command::BankSim(_) => "info",
            _ => "warn",
        }
    }
}

/// Exit code for a command that could not run (bad arguments, unreadable files).
pub const EXIT_USAGE: u8 = 2;

/// Runs a parsed command and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Verify(args) => verify::run(args).await,
            Command::ExportLedger(args) => export::run(args).await,
            Command::BankSim(args) => bank_sim::run(args).await,
            Command::ImportAba(args) => import_aba::run(args).await,
            Command::Token(command) => token::run(command).await,
            Command::Operator(command) => operator::run(command).await,
            Command::Keys(command) => keys::run(command).await,
            Command::Retention(command) => keys::run_retention(command).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Controls(command) => controls::run(command).await,
            Command::Migrate(args) => migrate::run(args).await,
            Command::History(args) => history::run(args).await,
            Command::Replay(args) => replay::run_replay(args).await,
            Command::Diff(args) => replay::run_diff(args).await,
            Command::Projections(command) => projections::run(command).await,
            Command::VerifyProof(args) => checkpoints::run_proof(args).await,
            Command::ExportBundle(args) => bundle::run_export(args).await,
            Command::VerifyBundle(args) => bundle::run_verify(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Installs the `tracing` subscriber: filter from `FOLIO_LOG` (else `default_level`), JSON
/// lines when `FOLIO_LOG_FORMAT=json`, to standard error, every line masked by
/// [`crate::logging::redact`] and repeated warnings limited by
/// [`crate::logging::RepeatLimit`]; spans also go to an OpenTelemetry collector when the
/// `OTEL_` variables name one (see [`crate::telemetry`]). Hold the returned guard until the
/// process ends, so the last spans are flushed.
pub fn init_logging(default_level: &str) -> crate::telemetry::TelemetryGuard {
    let directives = log_directives(default_level);
    let json = std::env::var("FOLIO_LOG_FORMAT").is_ok_and(|format| format == "json");
    let repeat_limit = crate::logging::RepeatLimit::default();
    let layer = tracing_subscriber::fmt::layer().with_writer(crate::logging::RedactingStderr);
    let layer = if json {
        layer
            .json()
            .with_filter(EnvFilter::new(&directives))
            .boxed()
    } else {
        layer.with_filter(EnvFilter::new(&directives)).boxed()
    };
    let (otel, guard) = match crate::telemetry::layer() {
        Ok((otel, guard)) => (
            otel.map(|otel| otel.with_filter(EnvFilter::new(&directives))),
            guard,
        ),
        Err(error) => {
            eprintln!("warning: {error:#}; traces are not exported");
            (None, crate::telemetry::TelemetryGuard::default())
        }
    };
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(repeat_limit))
        .with(otel)
        .try_init();
    guard
}

/// Returns the filter directives: `FOLIO_LOG` when it is valid, else `default_level`.
fn log_directives(default_level: &str) -> String {
    match std::env::var("FOLIO_LOG") {
        Err(_) => default_level.to_owned(),
        Ok(text) => match EnvFilter::try_new(&text) {
            Ok(_) => text,
            Err(error) => {
                // Logging is not set up yet, so this one message goes to standard error directly.
                eprintln!(
                    "warning: FOLIO_LOG={text:?} is not a valid filter ({error}); using \
                 {default_level:?}. Use a level such as info or a list such as folio=debug,info"
                );
                default_level.to_owned()
            }
        },
    }
}

/// Reads the configuration: `--config` or `FOLIO_CONFIG`, then `FOLIO_` variables.
fn load_config(path: Option<&PathBuf>) -> anyhow::Result<crate::config::Config> {
    let from_env = std::env::var_os("FOLIO_CONFIG").map(PathBuf::from);
    let path = path.cloned().or(from_env);
    crate::config::Config::load(path.as_deref(), std::env::vars())
}
