//! Continuous verification: `folio serve` re-checks every ledger's chain as it grows.
//!
//! The offline verifier (`folio verify`) is what an auditor runs. This job runs the same
//! [`ChainVerifier`] inside the server, with one verifier per ledger that is fed the events
//! committed since its last pass. A new event changed in the database behind Folio's back
//! is therefore reported within one interval instead of at the next audit. Because a row
//! could also be changed after it was checked, every `full_every` passes start again from
//! the genesis event. Each ledger's result is kept in [`STATUS`] and exported on `/metrics`
//! as `folio_chain_verified_position` and `folio_chain_verification_failed`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use domain::verify::ChainVerifier;
use eventstore_adapter::EventStore;
use tokio::sync::watch;
use uuid::Uuid;

/// Events read per page.
const PAGE: u32 = 4_096;

/// Verification result of one ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerVerification {
    /// Last position whose hash, link and signature were checked.
    pub verified_position: Option<u64>,
    /// Failure code and message, once the chain failed; verification of the ledger stops.
    pub failure: Option<(String, String)>,
}

/// Verification results per ledger, for `/metrics`.
pub static STATUS: Mutex<BTreeMap<Uuid, LedgerVerification>> = Mutex::new(BTreeMap::new());

/// Returns a copy of every ledger's verification result.
pub fn snapshot() -> BTreeMap<Uuid, LedgerVerification> {
    match STATUS.lock() {
        Ok(status) => status.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

/// A ledger's verifier and how far it got.
struct Progress {
    verifier: ChainVerifier,
    next_position: u64,
    failed: bool,
}

/// Verifiers of every ledger seen so far; one pass extends each.
pub struct Verification {
    ledgers: BTreeMap<Uuid, Progress>,
    /// Every this many passes, each intact ledger is verified again from its genesis.
    full_every: u32,
    passes: u32,
    /// Whether a failed ledger is quarantined in the store (appends refused).
    quarantine: bool,
}

impl Verification {
    /// Creates a job that verifies from genesis again every `full_every` passes (at least 1).
    pub fn new(full_every: u32) -> Self {
        Verification {
            ledgers: BTreeMap::new(),
            full_every: full_every.max(1),
            passes: 0,
            quarantine: true,
        }
    }

    /// Sets whether a ledger whose chain fails is quarantined, so the store refuses
    /// appends to it (the default), or only reported.
    pub fn quarantining(mut self, quarantine: bool) -> Self {
        self.quarantine = quarantine;
        self
    }

    /// Verifies the events committed since the previous pass, on every ledger, and
    /// publishes the results in [`STATUS`].
    ///
    /// # Errors
    /// Fails when the store cannot be read; the results so far are kept.
    pub async fn pass(&mut self, store: &EventStore) -> anyhow::Result<()> {
        if self.passes > 0 && self.passes.is_multiple_of(self.full_every) {
            // A failed ledger keeps its failure: starting over would hide it until found again.
            self.ledgers.retain(|_, progress| progress.failed);
        }
        self.passes = self.passes.wrapping_add(1);
        for info in store.ledgers().await? {
            let progress = self
                .ledgers
                .entry(info.ledger_id)
                .or_insert_with(|| Progress {
                    verifier: ChainVerifier::new(),
                    next_position: 0,
                    failed: false,
                });
            if !progress.failed {
                // A ledger that cannot be read is retried next pass; the others go on.
                if let Err(error) = extend(store, info.ledger_id, progress).await {
                    tracing::warn!(
                        ledger = %info.ledger_id,
                        %error,
                        "chain verification could not read the ledger; retrying next pass"
                    );
                }
            }
            if progress.failed && self.quarantine {
                quarantine(store, info.ledger_id);
            }
        }
        Ok(())
    }
}

/// Feeds `progress`'s verifier the ledger's events from its next position to the head.
async fn extend(
    store: &EventStore,
    ledger_id: Uuid,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    loop {
        let read = store
            .read_ledger(ledger_id, progress.next_position, PAGE)
            .await;
        let read = match read {
            Err(eventstore_adapter::StoreError::Backend(error)) => Err(error),
            Err(other) => return Err(other.into()),
            Ok(events) => Ok(events),
        };
        let events = match crate::cli::verify::corrupt_as_failure(read)? {
            Ok(events) => events,
            Err(failure) => {
                record_failure(ledger_id, progress, failure);
                return Ok(());
            }
        };
        let Some(last) = events.last() else {
            return Ok(());
        };
        let last_position = last.position;
        let full_page = events.len() == PAGE as usize;
        let records: Vec<Vec<u8>> = events.iter().map(|event| event.to_bytes()).collect();

        let result = progress.verifier.push_chunk(&records);
        match result {
            Ok(()) => {
                progress.next_position = last_position + 1;
                publish(ledger_id, Some(last_position), None);
            }
            Err(failure) => {
                record_failure(ledger_id, progress, failure);
                return Ok(());
            }
        }
        if !full_page {
            return Ok(());
        }
    }
}

/// Marks the ledger failed, logs the failure and publishes it.
fn record_failure(ledger_id: Uuid, progress: &mut Progress, failure: domain::verify::Failure) {
    progress.failed = true;
    tracing::error!(
        ledger = %ledger_id,
        position = ?failure.position,
        code = failure.kind.code(),
        message = %failure.message,
        "chain verification failed; run folio verify on an export and follow the \
         incident runbook"
    );
    // The failure names the position the verifier expected next.
    let verified_position = match failure.position {
        Some(position) => position.checked_sub(1),
        None => progress.next_position.checked_sub(1),
    };
    let failure = (failure.kind.code().to_owned(), failure.message);
    publish(ledger_id, verified_position, Some(failure));
}

/// Quarantines a failed ledger in the store, once, with the published failure as reason.
fn quarantine(store: &EventStore, ledger_id: Uuid) {
    if store.quarantine_reason(ledger_id).is_some() {
        return;
    }
    let reason = match snapshot()
        .remove(&ledger_id)
        .and_then(|result| result.failure)
    {
        Some((code, message)) => format!("{code}: {message}"),
        None => "the chain failed verification".to_owned(),
    };
    tracing::error!(ledger = %ledger_id, %reason, "ledger quarantined: appends are refused");
    store.quarantine(ledger_id, reason);
}

fn publish(ledger_id: Uuid, verified_position: Option<u64>, failure: Option<(String, String)>) {
    let mut status = match STATUS.lock() {
        Ok(status) => status,
        Err(poisoned) => poisoned.into_inner(),
    };
    status.insert(
        ledger_id,
        LedgerVerification {
            verified_position,
            failure,
        },
    );
}

/// Runs a pass of `verification` every `interval` until `shutdown` turns true.
pub async fn run(
    store: EventStore,
    interval: Duration,
    mut verification: Verification,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if let Err(error) = verification.pass(&store).await {
            tracing::warn!(%error, "chain verification pass failed; retrying next interval");
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
    }
}
