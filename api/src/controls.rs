//! Continuous control monitoring: runs the controls of `domain::controls` over a ledger,
//! records each run as a signed `controls.run_recorded` event on the `controls` stream, and
//! schedules a run per ledger inside `folio serve` (daily by default).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use domain::controls::{
    ControlPolicy, ControlResult, ControlStatus, ControlsEvaluator, ControlsRunRecorded,
};
use domain::record::Actor;
use domain::verify::ChainVerifier;
use eventstore_adapter::{AppendRequest, Backend, EventStore, ExpectedVersion, StreamWrite};
use tokio::sync::watch;
use uuid::Uuid;

/// Stream of a ledger that contains its control runs.
pub const CONTROLS_STREAM: &str = "controls";

/// Events read per page.
const PAGE: u32 = 4_096;

/// Latest recorded run per ledger, for `/metrics`.
pub static LATEST: Mutex<BTreeMap<Uuid, ControlsRunRecorded>> = Mutex::new(BTreeMap::new());

/// Returns a copy of the latest recorded run of every ledger.
pub fn latest() -> BTreeMap<Uuid, ControlsRunRecorded> {
    match LATEST.lock() {
        Ok(latest) => latest.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

/// Evaluates the controls over a ledger's events up to its signed head, verifying the chain
/// on the way. Returns `None` for a ledger that does not exist.
///
/// # Errors
/// Fails when the store cannot be read.
pub async fn evaluate(
    backend: &dyn Backend,
    ledger_id: Uuid,
    policy: ControlPolicy,
    now_micros: i64,
    log: Option<ControlResult>,
) -> anyhow::Result<Option<ControlsRunRecorded>> {
    // The signed head is read first and the events up to it after, so events committed
    // while the run reads are left for the next run instead of failing the head check.
    let Some(head) = backend.signed_head(ledger_id).await? else {
        return Ok(None);
    };
    let mut verifier = ChainVerifier::new();
    let mut evaluator = ControlsEvaluator::new(policy);
    let mut chain = Ok(());
    let mut from = 0;
    while from <= head.head.position {
        let limit = u32::try_from(head.head.position - from + 1).map_or(PAGE, |n| n.min(PAGE));
        let events = backend.read_ledger(ledger_id, from, limit).await?;
        let Some(last) = events.last() else {
            break;
        };
        from = last.position + 1;
        let records: Vec<Vec<u8>> = events.iter().map(|event| event.to_bytes()).collect();
        if chain.is_ok() {
            chain = verifier
                .push_chunk(&records)
                .map_err(|failure| failure.to_string());
        }
        for event in &events {
            evaluator.push(event);
        }
    }
    if chain.is_ok() {
        chain = verifier
            .finish(Some(head.record.as_slice()))
            .map(|_| ())
            .map_err(|failure| failure.to_string());
    }
    Ok(evaluator.finish(now_micros, chain, log))
}

/// Records a run on the ledger's `controls` stream and returns the event's position.
///
/// # Errors
/// Fails when the append fails.
pub async fn record(
    store: &EventStore,
    ledger_id: Uuid,
    run: &ControlsRunRecorded,
    actor: &Actor,
) -> anyhow::Result<u64> {
    let draft = crate::commands::draft(run, actor, Uuid::now_v7());
    let append = AppendRequest {
        writes: vec![StreamWrite {
            stream_id: CONTROLS_STREAM.to_owned(),
            expected: ExpectedVersion::Any,
            events: vec![draft],
        }],
        idempotency: None,
    };
    let outcome = store.append(ledger_id, append).await?;
    let position = match outcome {
        eventstore_adapter::AppendOutcome::Committed(result) => result.last_position,
        eventstore_adapter::AppendOutcome::Duplicate(_) => {
            anyhow::bail!("a control run without an idempotency key was reported as a duplicate")
        }
    };
    publish(ledger_id, run);
    Ok(position)
}

fn publish(ledger_id: Uuid, run: &ControlsRunRecorded) {
    let mut latest = match LATEST.lock() {
        Ok(latest) => latest,
        Err(poisoned) => poisoned.into_inner(),
    };
    latest.insert(ledger_id, run.clone());
}

/// Returns when the ledger's last control run was recorded, if it has one.
///
/// # Errors
/// Fails when the store cannot be read.
pub async fn last_run_at(store: &EventStore, ledger_id: Uuid) -> anyhow::Result<Option<i64>> {
    let Some(version) = store
        .backend()
        .stream_version(ledger_id, CONTROLS_STREAM)
        .await?
    else {
        return Ok(None);
    };
    let events = store
        .read_stream(ledger_id, CONTROLS_STREAM, version, 1)
        .await?;
    Ok(events.first().map(|event| event.recorded_at_micros))
}

/// Runs and records the controls on every ledger whose last run is older than `interval`,
/// logging each failed control.
///
/// # Errors
/// Fails when the store cannot be read or written; ledgers done so far stay recorded.
pub async fn run_due(
    store: &EventStore,
    policy: ControlPolicy,
    now_micros: i64,
    interval: Duration,
) -> anyhow::Result<()> {
    let interval_micros = i64::try_from(interval.as_micros()).unwrap_or(i64::MAX);
    let actor = Actor::system("controls");
    for info in store.ledgers().await? {
        let ledger_id = info.ledger_id;
        let last = last_run_at(store, ledger_id).await?;
        if last.is_some_and(|last| now_micros.saturating_sub(last) < interval_micros) {
            continue;
        }
        let backend = store.backend().as_ref();
        let Some(run) = evaluate(backend, ledger_id, policy, now_micros, None).await? else {
            continue;
        };
        let position = record(store, ledger_id, &run, &actor).await?;
        let failed = run
            .results
            .iter()
            .filter(|r| r.status == ControlStatus::Fail);
        for result in failed {
            tracing::error!(
                ledger = %ledger_id,
                control = %result.control,
                position,
                detail = %result.detail,
                "control failed"
            );
        }
    }
    Ok(())
}

/// Maximum wait between checks for due runs, so a new ledger or a restart is picked up.
const MAX_SLEEP: Duration = Duration::from_secs(600);

/// Runs [`run_due`] until `shutdown` turns true. Each ledger gets a run when its last
/// recorded run is older than `interval`, so restarts neither skip nor repeat runs.
pub async fn schedule(
    store: EventStore,
    policy: ControlPolicy,
    clock: std::sync::Arc<dyn domain::clock::Clock>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if let Err(error) = run_due(&store, policy, clock.now_micros(), interval).await {
            tracing::warn!(%error, "scheduled control run failed; retrying later");
        }
        tokio::select! {
            _ = tokio::time::sleep(interval.min(MAX_SLEEP)) => {}
            _ = shutdown.changed() => return,
        }
    }
}
