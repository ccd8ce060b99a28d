//! `folio verify`: offline verification of an export file or of the embedded store.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use domain::verify::{ChainVerifier, Failure, Summary};
use eventstore_adapter::sqlite::SqliteBackend;
use eventstore_adapter::Backend;
use uuid::Uuid;

/// Events read from the store per page while verifying.
const PAGE: u32 = 4_096;

/// Arguments of `folio verify`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Export file written by `folio export-ledger`; omit it to verify the embedded store.
    file: Option<PathBuf>,
    /// Data directory of the embedded store, opened read-only.
    #[arg(long, env = "FOLIO_DATA_DIR", default_value = "folio-data")]
    data_dir: PathBuf,
    /// Verify only this ledger of the store (default: every ledger).
    #[arg(long)]
    ledger: Option<Uuid>,
    /// Print the verdict as one JSON object per ledger.
    #[arg(long)]
    json: bool,
}

/// The verdict on one ledger.
pub struct Verdict {
    /// Subject verified: a file path or a ledger id.
    pub subject: String,
    /// Summary when intact, or the first failure.
    pub result: Result<Summary, Failure>,
}

pub(super) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let verdicts = match &args.file {
        Some(file) => vec![verify_file(file)?],
        None => verify_store(&args.data_dir, args.ledger).await?,
    };
    let mut intact = true;
    for verdict in &verdicts {
        intact &= verdict.result.is_ok();
        if args.json {
            println!("{}", verdict_json(verdict));
        } else {
            println!("{}", verdict_text(verdict));
        }
    }
    Ok(if intact {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Verifies an export file.
///
/// # Errors
/// Fails only when the file cannot be read; a broken ledger is a verdict, not an error.
pub fn verify_file(path: &Path) -> anyhow::Result<Verdict> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let result = domain::verify::verify_export(&bytes);
    Ok(Verdict {
        subject: path.display().to_string(),
        result,
    })
}

/// Verifies every ledger (or one) of an embedded store, reading it page by page.
///
/// # Errors
/// Fails when the store cannot be opened or read.
pub async fn verify_store(data_dir: &Path, only: Option<Uuid>) -> anyhow::Result<Vec<Verdict>> {
    let path = data_dir.join("events.sqlite");
    if !path.exists() {
        bail!(
            "no event store at {}; pass --data-dir or an export file",
            path.display()
        );
    }
    let backend = SqliteBackend::open_read_only(&path)
        .await
        .with_context(|| format!("cannot open {} read-only", path.display()))?;
    let mut ledgers: Vec<Uuid> = backend
        .ledgers()
        .await?
        .iter()
        .map(|info| info.ledger_id)
        .collect();
    if let Some(only) = only {
        if !ledgers.contains(&only) {
            bail!("ledger {only} not found in {}", path.display());
        }
        ledgers = vec![only];
    }
    let mut verdicts = Vec::with_capacity(ledgers.len());
    for ledger_id in ledgers {
        let result = verify_ledger(&backend, ledger_id).await?;
        verdicts.push(Verdict {
            subject: format!("ledger {ledger_id}"),
            result,
        });
    }
    Ok(verdicts)
}

async fn verify_ledger(
    backend: &dyn Backend,
    ledger_id: Uuid,
) -> anyhow::Result<Result<Summary, Failure>> {
    let mut verifier = ChainVerifier::new();
    let mut from = 0;
    loop {
        let events = backend.read_ledger(ledger_id, from, PAGE).await?;
        let Some(last) = events.last() else { break };
        from = last.position + 1;
        let records: Vec<Vec<u8>> = events.iter().map(|event| event.to_bytes()).collect();
        if let Err(failure) = verifier.push_chunk(&records) {
            return Ok(Err(failure));
        }
        if events.len() < PAGE as usize {
            break;
        }
    }
    let signed_head = backend.signed_head(ledger_id).await?;
    Ok(verifier.finish(signed_head.as_ref().map(|head| head.record.as_slice())))
}

fn verdict_text(verdict: &Verdict) -> String {
    match &verdict.result {
        Ok(summary) => format!(
            "{}: INTACT: {} events, head position {} hash {}, {} key(s), {} rotation(s)",
            verdict.subject,
            summary.event_count,
            summary.head_position,
            hex::encode(summary.head_hash),
            summary.keys.len(),
            summary.rotations.len()
        ),
        Err(failure) => format!(
            "{}: BROKEN at position {}: {} ({})",
            verdict.subject,
            failure
                .position
                .map_or_else(|| "-".to_owned(), |p| p.to_string()),
            failure.message,
            failure.kind.code()
        ),
    }
}

fn verdict_json(verdict: &Verdict) -> serde_json::Value {
    match &verdict.result {
        Ok(summary) => serde_json::json!({
            "subject": verdict.subject,
            "intact": true,
            "event_count": summary.event_count,
            "head_position": summary.head_position,
            "head_hash": hex::encode(summary.head_hash),
        }),
        Err(failure) => serde_json::json!({
            "subject": verdict.subject,
            "intact": false,
            "position": failure.position,
            "code": failure.kind.code(),
            "message": failure.message,
        }),
    }
}
