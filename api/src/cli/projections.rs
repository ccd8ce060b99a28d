//! `folio projections rebuild NAME|all`: projects a read model again from the ledger into a
//! fresh copy and swaps it in while `folio serve` keeps serving the live one.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use projections::ReadModels;

/// `folio projections` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Rebuild a read model (audit, payments, payees, dlq, aba_batches, anomalies) or `all` from
    /// position 0 of every ledger into a fresh copy, then swap it in one transaction.
    Rebuild(RebuildArgs),
}

/// Arguments of `folio projections rebuild`.
#[derive(Debug, clap::Args)]
pub struct RebuildArgs {
    /// Read model to rebuild, or `all`.
    name: String,
    /// Data directory of the embedded store and of `read.sqlite`.
    #[arg(long, env = "FOLIO_DATA_DIR", default_value = "folio-data")]
    data_dir: PathBuf,
    /// PostgreSQL event store to read instead of the data directory's SQLite file.
    #[arg(long, env = "FOLIO_STORE__URL", hide_env_values = true)]
    store_url: Option<String>,
    /// PostgreSQL read models to rebuild instead of the data directory's `read.sqlite`.
    #[arg(long, env = "FOLIO_READ_MODELS__URL", hide_env_values = true)]
    read_models_url: Option<String>,
}

pub(super) async fn run(command: Command) -> anyhow::Result<ExitCode> {
    let Command::Rebuild(args) = command;
    let location =
        crate::store::StoreLocation::from_dir_or_url(&args.data_dir, args.store_url.as_deref());
    let backend = location.open_read_only().await?;
    let live = match args
        .read_models_url
        .as_deref()
        .filter(|url| !url.is_empty())
    {
        Some(url) => ReadModels::connect(url)
            .await
            .context("cannot open the PostgreSQL read models")?,
        None => {
            let path = args.data_dir.join("read.sqlite");
            anyhow::ensure!(
                path.exists(),
                "read models {} not found: pass --data-dir or --read-models-url",
                path.display()
            );
            ReadModels::open(&path)
                .await
                .with_context(|| format!("cannot open read models {}", path.display()))?
        }
    };

    let mut bar = ProgressBar::new(std::io::stderr().is_terminal());
    let report = projections::rebuild(&live, backend.as_ref(), &args.name, &mut |done, total| {
        bar.show(done, total)
    })
    .await;
    bar.finish();
    let report = report.with_context(|| format!("rebuild of {} failed", args.name))?;
    println!(
        "rebuilt {} ({}) from {} events of {} ledger(s) and swapped it in",
        args.name,
        report.tables.join(", "),
        report.events,
        report.ledgers
    );
    Ok(ExitCode::SUCCESS)
}

/// Width of the bar in characters.
const BAR_WIDTH: u64 = 40;

/// A one-line progress bar on standard error, drawn only on a terminal.
struct ProgressBar {
    enabled: bool,
    drawn: u64,
}

impl ProgressBar {
    fn new(enabled: bool) -> Self {
        ProgressBar { enabled, drawn: 0 }
    }

    fn show(&mut self, done: u64, total: u64) {
        if !self.enabled || total == 0 {
            return;
        }
        let filled = (done.min(total) * BAR_WIDTH) / total;
        // Redrawing only when a character changes keeps a fast rebuild from flooding the
        // terminal.
        if filled == self.drawn && done != total {
            return;
        }
        self.drawn = filled;
        let bar: String = (0..BAR_WIDTH)
            .map(|i| if i < filled { '#' } else { '-' })
            .collect();
        let mut stderr = std::io::stderr();
        let _ = write!(stderr, "\r[{bar}] {done}/{total} events");
        let _ = stderr.flush();
    }

    fn finish(&self) {
        if self.enabled && self.drawn > 0 {
            eprintln!();
        }
    }
}
