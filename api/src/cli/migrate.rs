//! `folio migrate`: copy ledgers between a SQLite and a PostgreSQL store.
//!
//! Each ledger is copied up to the signed head it had when its copy started, in chunks. Every
//! chunk is checked with the domain's chain verifier before it is committed to the target,
//! with the idempotency keys whose appends end inside it. At the end the chain is checked
//! against the source's signed head, and the target's export must equal the source's byte for
//! byte. Stop the writers while a ledger is copied, because events appended to the source
//! meanwhile make the final comparison fail (the source itself loses nothing).
//!
//! On a PostgreSQL target, the operators and API tokens of a source data directory are
//! copied too (see [`crate::credentials::copy_credentials`]), so every node accepts them.
//! The wrapped data keys go with the events in both directions (see
//! [`crate::kms::data_keys::copy_data_keys`]): without them the sealed payee fields of the
//! copy would not open, and a key destroyed in the source stays destroyed in the target.
//!
//! Until the last chunk of a ledger is committed, the target's head row carries the source's
//! final signed head, which names a later position than the target holds, so `folio verify`
//! reports an interrupted copy instead of accepting a short ledger.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use domain::verify::ChainVerifier;
use eventstore_adapter::sqlite::EVENTS_FILE;
use eventstore_adapter::{Backend, ChainHead, CommitBatch, SignedHead};
use uuid::Uuid;

use crate::credentials::{copy_credentials, CopiedCredentials, CredentialsLocation};
use crate::kms::data_keys::{copy_data_keys, CopiedDataKeys, KeyStore};
use crate::store::StoreLocation;

/// Events copied per chunk (and per target transaction).
const CHUNK: u32 = 2_048;

/// Arguments of `folio migrate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Source store: sqlite:PATH (a data directory, or a file ending in .sqlite) or a
    /// postgres:// URL.
    #[arg(long)]
    from: String,
    /// Target store, in the same forms, created if missing.
    #[arg(long)]
    to: String,
    /// Copy only this ledger (default: every ledger of the source).
    #[arg(long)]
    ledger: Option<Uuid>,
}

/// Summary of one copied ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// Ledger id.
    pub ledger_id: Uuid,
    /// Events copied.
    pub events: u64,
    /// Idempotency keys copied.
    pub keys: u64,
    /// Size of each store's export of the ledger, equal byte for byte.
    pub export_bytes: u64,
}

pub(super) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let from = StoreLocation::parse(&args.from).context("--from")?;
    let to = StoreLocation::parse(&args.to).context("--to")?;
    if from == to {
        bail!("--from and --to name the same store: name two different stores");
    }
    let copied = migrate(&from, &to, args.ledger).await?;
    let data_keys = migrate_data_keys(&from, &to).await?;
    let credentials = migrate_credentials(&from, &to).await?;
    for ledger in &copied {
        println!(
            "ledger {}: {} events and {} idempotency keys copied to {}; verified, exports \
             identical ({} bytes)",
            ledger.ledger_id,
            ledger.events,
            ledger.keys,
            to.describe(),
            ledger.export_bytes
        );
    }
    if copied.is_empty() {
        println!("no ledger in {}", from.describe());
    }
    if let Some(data_keys) = data_keys {
        println!(
            "{} data key(s) copied to {} ({} of them destroyed by erasures, copied as \
             destroyed); the target's nodes need the same KMS key",
            data_keys.keys,
            to.describe(),
            data_keys.destroyed
        );
    }
    if let Some(credentials) = credentials {
        println!(
            "{} operators and {} API tokens copied to {} ({} rows were there already); \
             operators sign in again on the new nodes",
            credentials.operators,
            credentials.tokens,
            to.describe(),
            credentials.skipped
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Copies every ledger of `from` (or only `only`) to `to`.
///
/// # Errors
/// A store cannot be opened, a ledger is missing from the source or not empty in the target,
/// the source fails verification, or the exports differ.
pub async fn migrate(
    from: &StoreLocation,
    to: &StoreLocation,
    only: Option<Uuid>,
) -> anyhow::Result<Vec<Copied>> {
    let source = from.open_read_only().await?;
    let target = to.open(2).await?;
    let mut ledgers: Vec<Uuid> = source
        .ledgers()
        .await?
        .iter()
        .map(|l| l.ledger_id)
        .collect();
    if let Some(only) = only {
        if !ledgers.contains(&only) {
            bail!("ledger {only} not found in {}", from.describe());
        }
        ledgers = vec![only];
    }
    // Check every ledger before copying any, so a run either copies every ledger or none.
    for &ledger_id in &ledgers {
        if let Some(head) = target.head(ledger_id).await? {
            bail!(
                "ledger {ledger_id} already has {} events in {}: migrate copies only into \
                 a store without that ledger (use a new target database or file)",
                head.position + 1,
                to.describe()
            );
        }
    }
    let mut copied = Vec::with_capacity(ledgers.len());
    for ledger_id in ledgers {
        let (events, keys) = copy_ledger(&source, &target, ledger_id, from).await?;
        let export_bytes = compare_exports(&source, &target, ledger_id).await?;
        copied.push(Copied {
            ledger_id,
            events,
            keys,
            export_bytes,
        });
    }
    Ok(copied)
}

/// Copies the wrapped data keys that go with the source store to those of the target, so
/// the copied sealed fields open there. Returns `None` when either store is an SQLite file
/// outside a data directory, which has no key store beside it.
///
/// # Errors
/// A key store cannot be opened, read or written.
pub async fn migrate_data_keys(
    from: &StoreLocation,
    to: &StoreLocation,
) -> anyhow::Result<Option<CopiedDataKeys>> {
    let (Some(source), Some(target)) = (KeyStore::beside(from), KeyStore::beside(to)) else {
        return Ok(None);
    };
    if let KeyStore::File(path) = &target {
        if let Some(dir) = path.parent() {
            crate::files::create_private_dir(dir)?;
        }
        crate::files::create_private_file(path)?;
    }
    let copied = copy_data_keys(&source, &target).await.with_context(|| {
        format!(
            "cannot copy the data keys from {} to {}",
            source.describe(),
            target.describe()
        )
    })?;
    Ok(Some(copied))
}

/// Copies the operators and API tokens of a data directory to a PostgreSQL target, where
/// every node reads them, and returns what was copied. A target that is not PostgreSQL, or
/// a source that is a PostgreSQL database or an SQLite file outside a data directory,
/// copies nothing and returns `None`.
///
/// # Errors
/// A database cannot be opened, or the target's operators use another MFA secret key.
pub async fn migrate_credentials(
    from: &StoreLocation,
    to: &StoreLocation,
) -> anyhow::Result<Option<CopiedCredentials>> {
    let StoreLocation::Postgres(url) = to else {
        return Ok(None);
    };
    let target = CredentialsLocation::Postgres(url.clone());
    let data_dir = match from {
        StoreLocation::Sqlite(path) if path.file_name() == Some(EVENTS_FILE.as_ref()) => {
            path.parent()
        }
        _ => None,
    };
    let Some(data_dir) = data_dir else {
        // The tables are still created, as the first `folio serve` on the target would.
        crate::operators::OperatorStore::open(&target).await?;
        crate::auth::TokenStore::open(&target).await?;
        return Ok(None);
    };
    let source = CredentialsLocation::Files(data_dir.to_path_buf());
    Ok(Some(copy_credentials(&source, &target).await?))
}

/// Copies one ledger chunk by chunk up to the source's current signed head and returns the
/// numbers of events and keys copied.
async fn copy_ledger(
    source: &Arc<dyn Backend>,
    target: &Arc<dyn Backend>,
    ledger_id: Uuid,
    from: &StoreLocation,
) -> anyhow::Result<(u64, u64)> {
    let Some(signed) = source.signed_head(ledger_id).await? else {
        bail!(
            "ledger {ledger_id} has no signed head in {}",
            from.describe()
        );
    };
    let last = signed.head.position;
    let mut verifier = ChainVerifier::new();
    let mut expected_head: Option<ChainHead> = None;
    let mut next = 0;
    let mut keys = 0;
    while next <= last {
        let mut events = source.read_ledger(ledger_id, next, CHUNK).await?;
        events.retain(|event| event.position <= last);
        let Some(end) = events.last() else {
            bail!(
                "ledger {ledger_id} in {} ends at position {next}, before its signed head at \
                 {last}",
                from.describe()
            );
        };
        let chunk_head = ChainHead {
            ledger_id,
            position: end.position,
            hash: end.hash,
        };
        let records: Vec<Vec<u8>> = events.iter().map(|event| event.to_bytes()).collect();
        if let Err(failure) = verifier.push_chunk(&records) {
            bail!(
                "ledger {ledger_id} in {} failed verification: {failure} (nothing after \
                 position {} was copied)",
                from.describe(),
                expected_head.map_or(0, |h| h.position)
            );
        }
        let idempotency = source
            .idempotency_range(ledger_id, next, end.position)
            .await?;
        keys += idempotency.len() as u64;
        let batch = CommitBatch {
            ledger_id,
            expected_head,
            events,
            idempotency,
            // The source's final signed head: see the module documentation.
            signed_head: SignedHead {
                head: chunk_head,
                record: signed.record.clone(),
            },
        };
        target
            .commit(batch)
            .await
            .with_context(|| format!("cannot copy ledger {ledger_id} from position {next}"))?;
        expected_head = Some(chunk_head);
        next = chunk_head.position + 1;
    }
    if let Err(failure) = verifier.finish(Some(&signed.record)) {
        bail!("ledger {ledger_id} does not match its signed head: {failure}");
    }
    Ok((last + 1, keys))
}

/// Exports the ledger from both stores and checks the files are equal; returns their size.
async fn compare_exports(
    source: &Arc<dyn Backend>,
    target: &Arc<dyn Backend>,
    ledger_id: Uuid,
) -> anyhow::Result<u64> {
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let source_file = dir.path().join("source.folio");
    let target_file = dir.path().join("target.folio");
    super::export::export_from(source.as_ref(), "the source", ledger_id, &source_file).await?;
    super::export::export_from(target.as_ref(), "the target", ledger_id, &target_file).await?;
    let source_bytes = read(&source_file)?;
    let target_bytes = read(&target_file)?;
    if source_bytes != target_bytes {
        bail!(
            "the exports of ledger {ledger_id} differ ({} bytes from the source, {} from the \
             target); was the source written to during the copy?",
            source_bytes.len(),
            target_bytes.len()
        );
    }
    Ok(source_bytes.len() as u64)
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}
