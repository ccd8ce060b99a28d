//! `folio controls run`: evaluates the controls over the embedded store, read-only.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use domain::controls::{ControlStatus, ControlsRunRecorded};
use uuid::Uuid;

/// `folio controls` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Evaluate every control over each ledger of a store (read-only) and print the results.
    /// The server records a run on each ledger daily; POST
    /// /v1/ledgers/{id}/controls/runs records one at once.
    Run(RunArgs),
}

/// Arguments of `folio controls run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Data directory of the embedded store, opened read-only.
    #[arg(long, env = "FOLIO_DATA_DIR", default_value = "folio-data")]
    data_dir: PathBuf,
    /// PostgreSQL store to evaluate instead of the data directory's SQLite file.
    #[arg(long, env = "FOLIO_STORE__URL", hide_env_values = true)]
    store_url: Option<String>,
    /// Evaluate only this ledger.
    #[arg(long)]
    ledger: Option<Uuid>,
    /// Log file of `folio serve` to scan for secrets that escaped redaction.
    #[arg(long)]
    log_file: Option<PathBuf>,
    /// Days a signing key may stay in use before the key age control fails.
    #[arg(long, default_value_t = 365)]
    max_signing_key_age_days: u64,
    /// Print one JSON object per ledger.
    #[arg(long)]
    json: bool,
}

pub(super) async fn run(command: Command) -> anyhow::Result<ExitCode> {
    let Command::Run(args) = command;
    let location =
        crate::store::StoreLocation::from_dir_or_url(&args.data_dir, args.store_url.as_deref());
    let backend = location.open_read_only().await?;
    let backend = backend.as_ref();
    let log = match &args.log_file {
        None => None,
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read log file {}", file.display()))?;
            Some(domain::controls::scan_log(text.lines()))
        }
    };
    let policy = crate::config::ControlsConfig {
        max_signing_key_age_days: args.max_signing_key_age_days,
        ..Default::default()
    }
    .policy();
    let now = domain::clock::Clock::now_micros(&domain::clock::SystemClock);

    let mut all_passed = true;
    for info in backend.ledgers().await? {
        if args.ledger.is_some_and(|only| only != info.ledger_id) {
            continue;
        }
        let run =
            crate::controls::evaluate(backend, info.ledger_id, policy, now, log.clone()).await?;
        let Some(run) = run else { continue };
        all_passed &= run.passed();
        print_run(info.ledger_id, &run, args.json);
    }
    Ok(if all_passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_run(ledger_id: Uuid, run: &ControlsRunRecorded, json: bool) {
    if json {
        let mut body = crate::routes::controls::run_json(run, run.last_position);
        body["ledger_id"] = serde_json::Value::from(ledger_id.to_string());
        if let Some(object) = body.as_object_mut() {
            // This run is not recorded, so it has no position of its own.
            object.remove("position");
        }
        println!("{body}");
        return;
    }
    let verdict = if run.passed() { "PASS" } else { "FAIL" };
    println!(
        "ledger {ledger_id}: {verdict} (events up to position {}, not recorded)",
        run.last_position
    );
    for result in &run.results {
        let mark = match result.status {
            ControlStatus::Pass => "pass",
            ControlStatus::Fail => "FAIL",
            ControlStatus::NotApplicable => "n/a ",
        };
        println!("  {mark} {:<22} {}", result.control, result.detail);
    }
}
