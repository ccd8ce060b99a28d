//! `folio verify`: offline verification of an export file or of the embedded store.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use domain::verify::{ChainVerifier, Failure, Summary};
use eventstore_adapter::Backend;
use uuid::Uuid;

use super::checkpoints::HashSource;
use crate::store::StoreLocation;

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
    /// PostgreSQL store to verify instead of the data directory's SQLite file.
    #[arg(long, env = "FOLIO_STORE__URL", hide_env_values = true)]
    store_url: Option<String>,
    /// Verify only this ledger of the store (default: every ledger).
    #[arg(long)]
    ledger: Option<Uuid>,
    /// Print the verdict as one JSON object per ledger.
    #[arg(long)]
    json: bool,
    /// Checkpoints kept by a witness (one JSON line each): the ledger must still hold each of
    /// them and extend it. Needs an export file or `--ledger`.
    #[arg(long)]
    checkpoints: Option<PathBuf>,
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
        None => {
            let location =
                StoreLocation::from_dir_or_url(&args.data_dir, args.store_url.as_deref());
            verify_location(&location, args.ledger).await?
        }
    };
    let mut intact = true;
    for verdict in &verdicts {
        intact &= verdict.result.is_ok();
        // Events signed by a revoked key after its revocation point verify, but are not
        // to be trusted: the exit status says so.
        intact &= verdict.result.as_ref().map_or(true, trusted);
        if args.json {
            println!("{}", verdict_json(verdict));
        } else {
            println!("{}", verdict_text(verdict));
        }
    }
    if let Some(kept) = &args.checkpoints {
        intact &= check_kept_checkpoints(&args, kept, &verdicts).await?;
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
    verify_location(&StoreLocation::from_dir_or_url(data_dir, None), only).await
}

/// Verifies every ledger (or one) of a SQLite or PostgreSQL store, reading it page by page.
///
/// # Errors
/// Fails when the store cannot be opened or read.
pub async fn verify_location(
    location: &StoreLocation,
    only: Option<Uuid>,
) -> anyhow::Result<Vec<Verdict>> {
    let backend = location.open_read_only().await?;
    let backend = backend.as_ref();
    let mut ledgers: Vec<Uuid> = backend
        .ledgers()
        .await?
        .iter()
        .map(|info| info.ledger_id)
        .collect();
    if let Some(only) = only {
        if !ledgers.contains(&only) {
            bail!("ledger {only} not found in {}", location.describe());
        }
        ledgers = vec![only];
    }
    let mut verdicts = Vec::with_capacity(ledgers.len());
    for ledger_id in ledgers {
        let result = verify_ledger(backend, ledger_id).await?;
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
    let mut events = match corrupt_as_failure(backend.read_ledger(ledger_id, 0, PAGE).await)? {
        Ok(events) => events,
        Err(failure) => return Ok(Err(failure)),
    };
    while let Some(last) = events.last() {
        let next_from = (events.len() == PAGE as usize).then_some(last.position + 1);
        let records: Vec<Vec<u8>> = events.iter().map(|event| event.to_bytes()).collect();

        // The page is verified on a blocking thread (its signature checks use every core)
        // while the next page is read, so reading no longer adds to the verification time.
        let verifying = tokio::task::spawn_blocking(move || {
            let result = verifier.push_chunk(&records);
            (verifier, result)
        });
        let next = match next_from {
            Some(from) => backend.read_ledger(ledger_id, from, PAGE).await,
            None => Ok(Vec::new()),
        };
        let (verified, result) = verifying.await.context("verification thread panicked")?;
        verifier = verified;
        // A failure in this page comes before a read error on the next one in ledger order.
        if let Err(failure) = result {
            return Ok(Err(failure));
        }
        events = match corrupt_as_failure(next)? {
            Ok(events) => events,
            Err(failure) => return Ok(Err(failure)),
        };
    }
    let signed_head = backend.signed_head(ledger_id).await?;
    Ok(verifier.finish(signed_head.as_ref().map(|head| head.record.as_slice())))
}

/// Turns a stored record that does not decode, or does not match its index columns, into a
/// verification failure at its position: that is a changed ledger, not a failed command.
pub fn corrupt_as_failure<T>(
    read: Result<T, eventstore_adapter::BackendError>,
) -> anyhow::Result<Result<T, Failure>> {
    match read {
        Ok(value) => Ok(Ok(value)),
        Err(eventstore_adapter::BackendError::Corrupt {
            position, reason, ..
        }) => Ok(Err(Failure {
            position: Some(position),
            kind: domain::verify::FailureKind::Undecodable,
            message: format!("the stored record at position {position} is corrupt: {reason}"),
        })),
        Err(other) => Err(other.into()),
    }
}

/// Runs the kept-checkpoint check on the one ledger verified, and prints a line per checkpoint.
async fn check_kept_checkpoints(
    args: &Args,
    kept: &Path,
    verdicts: &[Verdict],
) -> anyhow::Result<bool> {
    let [verdict] = verdicts else {
        bail!("--checkpoints checks one ledger; pass an export file or --ledger");
    };
    let Ok(summary) = &verdict.result else {
        println!("checkpoints not checked: the ledger itself does not verify");
        return Ok(false);
    };
    let (lines, all_hold) = match &args.file {
        Some(file) => {
            super::checkpoints::check_verdict(kept, summary, HashSource::Export(file)).await?
        }
        None => {
            let location =
                StoreLocation::from_dir_or_url(&args.data_dir, args.store_url.as_deref());
            let backend = location.open_read_only().await?;
            super::checkpoints::check_verdict(kept, summary, HashSource::Store(backend.as_ref()))
                .await?
        }
    };
    for line in lines {
        println!("{line}");
    }
    Ok(all_hold)
}

/// Returns whether no event of an intact chain was signed by a revoked key after its
/// revocation point.
fn trusted(summary: &domain::verify::Summary) -> bool {
    summary.revocations.iter().all(|r| r.untrusted.is_none())
}

/// Formats the signing keys of a summary, one line each: id, where it was named, and what
/// it signed.
fn keys_text(keys: &[domain::verify::KeySpan]) -> String {
    keys.iter()
        .map(|key| {
            let signed = match key.signed {
                Some((first, last)) => format!("signed positions {first} to {last}"),
                None => "signed nothing".to_owned(),
            };
            format!(
                "\n  key {} named at position {}, {signed}",
                key.key_id, key.named_at
            )
        })
        .collect()
}

/// The revocations of a summary, one line each, naming the events no longer trusted.
fn revocations_text(revocations: &[domain::verify::Revocation]) -> String {
    revocations
        .iter()
        .map(|revocation| {
            let untrusted = match revocation.untrusted {
                Some((first, last)) => format!("UNTRUSTED: positions {first} to {last}"),
                None => "no event signed after that position".to_owned(),
            };
            let named: String = (revocation.named_by_revoked.iter())
                .map(|key| {
                    format!(
                        "\n    key {key} was named by an event the revoked key signed: trust it \
                         only if its id matches the one the operator published"
                    )
                })
                .collect();
            format!(
                "\n  key {} revoked at position {} from position {} ({}): {untrusted}{named}",
                revocation.key_id, revocation.position, revocation.from_position, revocation.reason
            )
        })
        .collect()
}

/// The erasures of a summary, one line each, so a reader sees erased fields as policy.
fn erasures_text(erasures: &[domain::verify::Erasure]) -> String {
    erasures
        .iter()
        .map(|erasure| {
            format!(
                "\n  erased by policy at position {}: personal fields of {} ({})",
                erasure.position, erasure.subject, erasure.policy
            )
        })
        .collect()
}

fn verdict_text(verdict: &Verdict) -> String {
    match &verdict.result {
        Ok(summary) => {
            // The chain is unbroken either way, but revoked signatures make it untrusted.
            // The headline reports that, as the exit status does.
            let headline = if trusted(summary) {
                "INTACT"
            } else {
                "INTACT BUT UNTRUSTED"
            };
            format!(
                "{}: {headline}: {} events, head position {} hash {}, {} key(s), {} rotation(s), \
             {} checkpoint(s), Merkle root {}",
                verdict.subject,
                summary.event_count,
                summary.head_position,
                hex::encode(summary.head_hash),
                summary.keys.len(),
                summary.rotations.len(),
                summary.checkpoints.len(),
                hex::encode(summary.merkle_root)
            ) + &keys_text(&summary.keys)
                + &revocations_text(&summary.revocations)
                + &erasures_text(&summary.erasures)
        }
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
            "trusted": trusted(summary),
            "event_count": summary.event_count,
            "head_position": summary.head_position,
            "head_hash": hex::encode(summary.head_hash),
            "checkpoints": summary.checkpoints.len(),
            "merkle_root": hex::encode(summary.merkle_root),
            "keys": summary.keys.iter().map(|key| serde_json::json!({
                "key_id": key.key_id.to_hex(),
                "public_key": hex::encode(key.public_key),
                "named_at": key.named_at,
                "signed": key.signed,
            })).collect::<Vec<_>>(),
            "revocations": summary.revocations.iter().map(|revocation| serde_json::json!({
                "position": revocation.position,
                "key_id": revocation.key_id.to_hex(),
                "from_position": revocation.from_position,
                "reason": revocation.reason,
                "untrusted": revocation.untrusted,
                "named_by_revoked": revocation.named_by_revoked.iter()
                    .map(|key| key.to_hex()).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "erased_by_policy": summary.erasures.iter().map(|erasure| serde_json::json!({
                "position": erasure.position,
                "subject": erasure.subject,
                "policy": erasure.policy,
            })).collect::<Vec<_>>(),
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use domain::clock::SystemClock;
    use domain::crypto::LedgerKey;
    use domain::record::{Actor, EventDraft};
    use eventstore_adapter::sqlite::SqliteBackend;
    use eventstore_adapter::{AppendRequest, EventStore, ExpectedVersion, StreamWrite};

    use super::*;

    /// Builds a store whose ledger spans three pages, and returns its directory and ledger.
    async fn three_page_store() -> (tempfile::TempDir, Uuid) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let backend = SqliteBackend::open_dir(dir.path()).await.expect("open");
        let key = Arc::new(LedgerKey::generate());
        let store = EventStore::open(Arc::new(backend), key, Arc::new(SystemClock));
        let ledger = Uuid::now_v7();
        let actor = Actor::system("test");
        store
            .create_ledger(ledger, "t", actor.clone(), Uuid::now_v7())
            .await
            .expect("create");
        let drafts = |count: u32| -> Vec<EventDraft> {
            (0..count)
                .map(|n| EventDraft {
                    event_id: Uuid::now_v7(),
                    event_type: "test.noted".into(),
                    schema_version: 1,
                    actor: actor.clone(),
                    correlation_id: Uuid::nil(),
                    causation_id: None,
                    payload: n.to_be_bytes().to_vec(),
                })
                .collect()
        };
        let write = StreamWrite {
            stream_id: "s".into(),
            expected: ExpectedVersion::Any,
            events: drafts(2 * PAGE + 10),
        };
        let request = AppendRequest {
            writes: vec![write],
            idempotency: None,
        };
        store.append(ledger, request).await.expect("append");
        store.shutdown().await;
        (dir, ledger)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn multi_page_store_verifies_and_locates_change() {
        let (dir, ledger) = three_page_store().await;
        let verdicts = verify_store(dir.path(), Some(ledger))
            .await
            .expect("verify");
        let summary = verdicts[0].result.as_ref().expect("intact");
        assert_eq!(summary.event_count, u64::from(2 * PAGE + 11));

        // Change one payload byte in the second page, with the triggers out of the way.
        let position = i64::from(PAGE + 5);
        let pool = SqliteBackend::open_dir(dir.path()).await.expect("open");
        let pool = pool.pool();
        sqlx::query("DROP TRIGGER events_no_update")
            .execute(pool)
            .await
            .expect("drop trigger");
        let record: Vec<u8> = sqlx::query_scalar("SELECT record FROM events WHERE position = ?")
            .bind(position)
            .fetch_one(pool)
            .await
            .expect("read record");
        let mut changed = record.clone();
        // The payload ends just before prev hash, key id, hash and signature.
        let index = changed.len() - (32 + 16 + 32 + 64) - 1;
        changed[index] ^= 0x01;
        sqlx::query("UPDATE events SET record = ? WHERE position = ?")
            .bind(changed)
            .bind(position)
            .execute(pool)
            .await
            .expect("update record");
        pool.close().await;

        let verdicts = verify_store(dir.path(), Some(ledger))
            .await
            .expect("verify");
        let failure = verdicts[0].result.clone().expect_err("broken");
        assert_eq!(failure.kind.code(), "changed_bytes", "{failure}");
        assert_eq!(failure.position, Some(u64::from(PAGE + 5)));
    }
}
