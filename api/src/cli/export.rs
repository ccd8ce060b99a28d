//! `folio export-ledger`: write a ledger's exact sealed bytes and signed head to a file.

use std::io::BufWriter;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use domain::export::ExportWriter;
use eventstore_adapter::Backend;
use uuid::Uuid;

use crate::store::StoreLocation;

const PAGE: u32 = 4_096;

/// Arguments of `folio export-ledger`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Data directory of the embedded store, opened read-only.
    #[arg(long, env = "FOLIO_DATA_DIR", default_value = "folio-data")]
    data_dir: PathBuf,
    /// PostgreSQL store to export from instead of the data directory's SQLite file.
    #[arg(long, env = "FOLIO_STORE__URL", hide_env_values = true)]
    store_url: Option<String>,
    /// Ledger to export.
    #[arg(long)]
    ledger: Uuid,
    /// Output file (created; an existing file is not overwritten).
    #[arg(long)]
    out: PathBuf,
}

pub(super) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let location = StoreLocation::from_dir_or_url(&args.data_dir, args.store_url.as_deref());
    let backend = location.open_read_only().await?;
    let count = export_from(
        backend.as_ref(),
        &location.describe(),
        args.ledger,
        &args.out,
    )
    .await?;
    println!(
        "wrote {count} events of ledger {} to {}",
        args.ledger,
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes one ledger to `out` and returns the number of events written.
///
/// # Errors
/// Fails when the store cannot be read, the ledger has no signed head, or `out` exists.
pub(crate) async fn export_ledger(
    data_dir: &std::path::Path,
    ledger_id: Uuid,
    out: &std::path::Path,
) -> anyhow::Result<u64> {
    let location = StoreLocation::from_dir_or_url(data_dir, None);
    let backend = location.open_read_only().await?;
    export_from(backend.as_ref(), &location.describe(), ledger_id, out).await
}

/// Writes one ledger of `backend` (named `subject` in messages) to `out` and returns the
/// number of events written.
///
/// # Errors
/// As [`export_ledger`].
pub(crate) async fn export_from(
    backend: &dyn Backend,
    subject: &str,
    ledger_id: Uuid,
    out: &std::path::Path,
) -> anyhow::Result<u64> {
    // Read the signed head first: events after it may be appended meanwhile, and the
    // export stops at the head it carries.
    let Some(signed_head) = backend.signed_head(ledger_id).await? else {
        bail!("ledger {ledger_id} not found (or has no signed head) in {subject}");
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .with_context(|| format!("cannot create {} (it must not exist yet)", out.display()))?;
    let mut writer = ExportWriter::new(BufWriter::new(file))?;
    let mut from = 0;
    let mut count = 0;
    while from <= signed_head.head.position {
        let events = backend.read_ledger(ledger_id, from, PAGE).await?;
        if events.is_empty() {
            break;
        }
        for event in events
            .iter()
            .take_while(|e| e.position <= signed_head.head.position)
        {
            writer.write_record(&event.to_bytes())?;
            count += 1;
        }
        from = events.last().map_or(from, |event| event.position + 1);
    }
    let out_file = writer.finish(&signed_head.record)?;
    out_file
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    Ok(count)
}
