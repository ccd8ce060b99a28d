//! The projection engine: continuity checks, atomic batches, failure states, restarts and
//! rebuilds.

mod support;

use std::time::Duration;

use domain::events::PaymentSource;
use std::sync::Arc;

use eventstore_adapter::sqlite::SqliteBackend;
use eventstore_adapter::EventStore;
use projections::{
    ProjectionError, ProjectionRunner, ProjectionState, ProjectionStatus, ReadModels, RunnerHandle,
};
use support::{
    api_client, append, append_payments, create_ledger, draft, memory_store, open_store, raw_draft,
    submitted, write_story, Engine, GatedBackend, WAIT,
};
use uuid::Uuid;

on_both_engines!(
    gap_in_batch_names_missing_position,
    broken_link_is_rejected,
    failed_batch_leaves_no_trace,
    undecodable_payload_fails_runner_at_position,
    gap_in_store_stops_runner,
    wait_for_position_reports_timeout,
);

/// Applies a ledger's events to fresh in-memory models in batches of `batch_size`.
async fn rebuild(store: &EventStore, ledger_id: Uuid, batch_size: u32) -> ReadModels {
    let models = ReadModels::in_memory().await.unwrap();
    let mut from = 0;
    loop {
        let events = store
            .read_ledger(ledger_id, from, batch_size)
            .await
            .unwrap();
        let Some(last) = events.last() else {
            return models;
        };
        from = last.position + 1;
        models.apply_batch(ledger_id, &events).await.unwrap();
    }
}

/// Polls the runner until the ledger's projection has started and is no longer running.
async fn wait_until_stopped(runner: &RunnerHandle, ledger_id: Uuid) -> ProjectionStatus {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = runner.status(ledger_id).await.unwrap();
        let settled = !matches!(
            status.state,
            ProjectionState::Running | ProjectionState::Untracked
        );
        if settled || tokio::time::Instant::now() > deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn gap_in_batch_names_missing_position(engine: Engine) {
    let store = memory_store();
    let story = write_story(&store).await;
    let events = store.read_ledger(story.ledger_id, 0, 100).await.unwrap();
    let Some((_db, models)) =
        support::open_models(engine, "gap_in_batch_names_missing_position").await
    else {
        return;
    };
    models
        .apply_batch(story.ledger_id, &events[..5])
        .await
        .unwrap();

    let err = models
        .apply_batch(story.ledger_id, &events[6..])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProjectionError::Gap {
                expected: 5,
                found: 6,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("expected position 5"), "{err}");
    assert_eq!(
        models
            .checkpoint(story.ledger_id)
            .await
            .unwrap()
            .unwrap()
            .position,
        4
    );

    let replay = models
        .apply_batch(story.ledger_id, &events[4..6])
        .await
        .unwrap_err();
    assert!(
        matches!(
            replay,
            ProjectionError::Gap {
                expected: 5,
                found: 4,
                ..
            }
        ),
        "{replay}"
    );
}

async fn broken_link_is_rejected(engine: Engine) {
    let store = memory_store();
    let story = write_story(&store).await;
    let mut events = store.read_ledger(story.ledger_id, 0, 100).await.unwrap();
    events[3].prev_hash[0] ^= 1;
    let Some((_db, models)) = support::open_models(engine, "broken_link_is_rejected").await else {
        return;
    };

    let err = models
        .apply_batch(story.ledger_id, &events)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProjectionError::BrokenLink { position: 3, .. }),
        "{err}"
    );
    assert_eq!(models.checkpoint(story.ledger_id).await.unwrap(), None);

    let other_ledger = Uuid::now_v7();
    let err = models
        .apply_batch(other_ledger, &events[..1])
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProjectionError::WrongLedger { position: 0, .. }),
        "{err}"
    );
}

async fn failed_batch_leaves_no_trace(engine: Engine) {
    let store = memory_store();
    let story = write_story(&store).await;
    // A second submission of a receipted payment contradicts the payments model.
    let again = submitted(story.paid, story.alice, 12_345, PaymentSource::Api);
    let stream = format!("payment-{}", story.paid);
    let bad = append(
        &store,
        story.ledger_id,
        &stream,
        vec![draft(&again, &api_client())],
    )
    .await;
    let events = store.read_ledger(story.ledger_id, 0, 100).await.unwrap();

    let Some((_db, models)) = support::open_models(engine, "failed_batch_leaves_no_trace").await
    else {
        return;
    };
    models
        .apply_batch(story.ledger_id, &events[..10])
        .await
        .unwrap();
    let before = models.dump().await.unwrap();

    let err = models
        .apply_batch(story.ledger_id, &events[10..])
        .await
        .unwrap_err();
    assert!(matches!(err, ProjectionError::Inconsistent { position, .. } if position == bad));
    assert!(err.is_permanent());
    assert_eq!(
        models.dump().await.unwrap(),
        before,
        "rows of the failed batch were kept"
    );
    assert_eq!(
        models
            .checkpoint(story.ledger_id)
            .await
            .unwrap()
            .unwrap()
            .position,
        9
    );
}

async fn undecodable_payload_fails_runner_at_position(engine: Engine) {
    let store = memory_store();
    let story = write_story(&store).await;
    let garbage = raw_draft("payment.submitted", 1, vec![0xff; 3], &api_client());
    let bad = append(&store, story.ledger_id, "payment-garbage", vec![garbage]).await;
    append_payments(&store, story.ledger_id, 3, 3).await;

    let Some((_db, models)) =
        support::open_models(engine, "undecodable_payload_fails_runner_at_position").await
    else {
        return;
    };
    let runner = ProjectionRunner::spawn(store, models.clone());
    runner.track(story.ledger_id);
    let status = wait_until_stopped(&runner, story.ledger_id).await;

    assert_eq!(status.state, ProjectionState::Failed);
    assert_eq!(status.position, Some(bad - 1));
    assert_eq!(status.lag, Some(4));
    let error = status.error.unwrap();
    assert!(
        error.contains(&format!("payload at position {bad} does not decode")),
        "{error}"
    );
    assert_eq!(
        models
            .checkpoint(story.ledger_id)
            .await
            .unwrap()
            .unwrap()
            .position,
        bad - 1
    );
    runner.shutdown().await;
}

async fn gap_in_store_stops_runner(engine: Engine) {
    let backend = GatedBackend::open();
    let store = open_store(backend.clone());
    let story = write_story(&store).await;
    backend.hide(7);

    let Some((_db, models)) = support::open_models(engine, "gap_in_store_stops_runner").await
    else {
        return;
    };
    let runner = ProjectionRunner::spawn(store, models.clone());
    let status = wait_until_stopped(&runner, story.ledger_id).await;

    assert_eq!(status.state, ProjectionState::Failed, "{status:?}");
    let error = status.error.unwrap();
    assert!(error.contains("position 7"), "{error}");
    assert_eq!(
        models
            .checkpoint(story.ledger_id)
            .await
            .unwrap()
            .unwrap()
            .position,
        6
    );
    // No event after the gap reached any model.
    assert!(models
        .payment(story.ledger_id, story.batch_payments[1])
        .await
        .unwrap()
        .is_none());
    runner.shutdown().await;
}

#[tokio::test]
async fn rebuild_gives_identical_rows() {
    let dir = tempfile::tempdir().unwrap();
    let backend = SqliteBackend::open(&dir.path().join("events.sqlite"))
        .await
        .unwrap();
    let store = open_store(Arc::new(backend));
    let story = write_story(&store).await;
    let head = append_payments(&store, story.ledger_id, 40, 7).await;

    let live = ReadModels::open(dir.path().join("live.sqlite"))
        .await
        .unwrap();
    let runner = ProjectionRunner::spawn(store.clone(), live.clone());
    assert!(live
        .wait_for_position(story.ledger_id, head, WAIT)
        .await
        .unwrap());
    runner.shutdown().await;

    let fresh = ReadModels::open(dir.path().join("fresh.sqlite"))
        .await
        .unwrap();
    let runner = ProjectionRunner::spawn(store.clone(), fresh.clone());
    assert!(fresh
        .wait_for_position(story.ledger_id, head, WAIT)
        .await
        .unwrap());
    runner.shutdown().await;

    let expected = live.dump().await.unwrap();
    assert_eq!(expected["audit_events"].len() as u64, head + 1);
    assert_eq!(fresh.dump().await.unwrap(), expected);
    for batch_size in [1, 7, 500] {
        let rebuilt = rebuild(&store, story.ledger_id, batch_size).await;
        assert_eq!(
            rebuilt.dump().await.unwrap(),
            expected,
            "batch size {batch_size}"
        );
    }
}

/// The same events give the same rows on PostgreSQL as on SQLite.
#[tokio::test]
async fn postgres_rows_match_sqlite() {
    let Some((_db, postgres)) =
        support::open_models(Engine::Postgres, "postgres_rows_match_sqlite").await
    else {
        return;
    };
    let store = memory_store();
    let story = write_story(&store).await;
    let head = append_payments(&store, story.ledger_id, 30, 11).await;
    let runner = ProjectionRunner::spawn(store.clone(), postgres.clone());
    assert!(postgres
        .wait_for_position(story.ledger_id, head, WAIT)
        .await
        .unwrap());
    runner.shutdown().await;

    let sqlite = rebuild(&store, story.ledger_id, 13).await;
    let expected = sqlite.dump().await.unwrap();
    assert_eq!(expected["audit_events"].len() as u64, head + 1);
    assert_eq!(postgres.dump().await.unwrap(), expected);
}

async fn wait_for_position_reports_timeout(engine: Engine) {
    let store = memory_store();
    let ledger_id = create_ledger(&store).await;
    let Some((_db, models)) =
        support::open_models(engine, "wait_for_position_reports_timeout").await
    else {
        return;
    };
    let runner = ProjectionRunner::spawn(store.clone(), models.clone());
    runner.track(ledger_id);

    assert!(models.wait_for_position(ledger_id, 0, WAIT).await.unwrap());
    let short = Duration::from_millis(100);
    assert!(!models.wait_for_position(ledger_id, 5, short).await.unwrap());

    let waiter = {
        let models = models.clone();
        tokio::spawn(async move { models.wait_for_position(ledger_id, 5, WAIT).await })
    };
    append_payments(&store, ledger_id, 5, 1).await;
    assert!(waiter.await.unwrap().unwrap());
    runner.shutdown().await;
}

#[tokio::test]
async fn unknown_ledger_is_untracked() {
    let models = ReadModels::in_memory().await.unwrap();
    let runner = ProjectionRunner::spawn(memory_store(), models);
    let status = runner.status(Uuid::now_v7()).await.unwrap();
    assert_eq!(status.state, ProjectionState::Untracked);
    assert_eq!(status.position, None);
    assert_eq!(status.store_position, None);
    assert_eq!(status.lag, None);
    runner.shutdown().await;
}

/// Starts a runner on its own runtime, so the test can kill it like a crashed process:
/// `shutdown_background` drops every task at its current await, mid-transaction or not.
fn start_doomed_runner(
    store: &EventStore,
    path: &std::path::Path,
) -> (tokio::runtime::Runtime, RunnerHandle) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let models = runtime.block_on(ReadModels::open(path)).unwrap();
    let _context = runtime.enter();
    let runner = ProjectionRunner::spawn(store.clone(), models);
    (runtime, runner)
}

#[test]
fn killed_runner_resumes_without_gaps_or_duplicates() {
    let main = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let backend = GatedBackend::open();
    let store = main.block_on(async { open_store(backend.clone()) });
    let ledger_id = main.block_on(create_ledger(&store));
    let head = main.block_on(append_payments(&store, ledger_id, 2_000, 100));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("read.sqlite");
    let observer = main.block_on(ReadModels::open(&path)).unwrap();

    // First kill at a known point: the runner has seen only up to position 150.
    backend.open_gate(150);
    let (runtime, runner) = start_doomed_runner(&store, &path);
    assert!(main
        .block_on(observer.wait_for_position(ledger_id, 150, WAIT))
        .unwrap());
    runtime.shutdown_background();
    drop(runner);

    // Second kill wherever the runner happens to be, likely inside a batch transaction.
    backend.open_gate(u64::MAX);
    let (runtime, runner) = start_doomed_runner(&store, &path);
    assert!(main
        .block_on(observer.wait_for_position(ledger_id, 300, WAIT))
        .unwrap());
    runtime.shutdown_background();
    drop(runner);
    let killed_at = main
        .block_on(observer.checkpoint(ledger_id))
        .unwrap()
        .unwrap()
        .position;
    assert!(killed_at >= 300);

    main.block_on(async {
        let models = ReadModels::open(&path).await.unwrap();
        let runner = ProjectionRunner::spawn(store.clone(), models.clone());
        assert!(models
            .wait_for_position(ledger_id, head, WAIT)
            .await
            .unwrap());
        runner.shutdown().await;

        let resumed = models.dump().await.unwrap();
        let audit = &resumed["audit_events"];
        assert_eq!(
            audit.len() as u64,
            head + 1,
            "missing or duplicate audit rows"
        );
        assert_eq!(resumed["payments"].len(), 2_000);
        assert_eq!(
            resumed,
            rebuild(&store, ledger_id, 64).await.dump().await.unwrap()
        );
    });
}
