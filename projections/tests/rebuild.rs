//! `projections::rebuild`: every read model is projected again from the ledger into a
//! fresh copy and swapped in, on SQLite and on PostgreSQL, while the live runner keeps
//! applying new events; the result is identical, row for row, to a projection from scratch.

mod support;

use std::sync::Arc;

use domain::dlq::{
    decision_hash, DlqAction, DlqDecisionApproved, DlqDecisionProposed, DlqRetryReleased,
};
use domain::operator_events::AuthContext;
use eventstore_adapter::memory::MemoryBackend;
use eventstore_adapter::{Backend, EventStore};
use projections::{ProjectionRunner, ReadModels};
use sqlx::{Connection, Executor};
use support::{append, draft, open_models, open_store, operator, write_story, DbGuard, Engine};
use support::{Story, WAIT};
use uuid::Uuid;

on_both_engines!(rebuild_restores_tampered_rows_while_the_runner_runs);

fn auth(operator: u128) -> AuthContext {
    AuthContext {
        operator_id: Uuid::from_u128(operator),
        session_id: Uuid::from_u128(operator + 100),
        factor: "totp".into(),
        factor_verified_at_micros: 0,
    }
}

/// Adds a retry of the parked payment, proposed, approved and released, so the DLQ
/// tables have decisions and history to rebuild.
async fn write_retry(store: &EventStore, story: &Story) -> u64 {
    let decision_id = Uuid::now_v7();
    let ids = vec![story.parked];
    let hash = decision_hash(
        story.ledger_id,
        decision_id,
        DlqAction::Retry,
        &ids,
        "bank up",
    );
    let proposed = DlqDecisionProposed {
        decision_id,
        action: DlqAction::Retry,
        payment_ids: ids,
        reason: "bank up".into(),
        content_hash: hash,
        expires_at_micros: i64::MAX,
        auth: auth(1),
    };
    let approved = DlqDecisionApproved {
        decision_id,
        content_hash: hash,
        auth: auth(2),
    };
    let events = vec![draft(&proposed, &operator()), draft(&approved, &operator())];
    append(store, story.ledger_id, "dlq", events).await;
    let released = DlqRetryReleased {
        decision_id,
        payment_id: story.parked,
        batch: 1,
    };
    let stream = format!("payment-{}", story.parked);
    let system = domain::record::Actor::system("dlq-release");
    append(
        store,
        story.ledger_id,
        &stream,
        vec![draft(&released, &system)],
    )
    .await
}

/// Changes live rows behind the runner's back, as a bug or an operator might.
async fn tamper(guard: &DbGuard, dir_file: Option<&std::path::Path>) {
    let statements = [
        "DELETE FROM dead_letter_history",
        "UPDATE payments SET status = 'receipted'",
        "DELETE FROM payees",
    ];
    match guard {
        DbGuard::Sqlite(_) => {
            let path = dir_file.expect("sqlite file");
            let url = format!("sqlite://{}", path.display());
            let mut connection = sqlx::SqliteConnection::connect(&url).await.unwrap();
            for statement in statements {
                connection.execute(statement).await.unwrap();
            }
        }
        DbGuard::Postgres(db) => {
            let mut connection = db.connect().await;
            for statement in statements {
                connection.execute(statement).await.unwrap();
            }
        }
    }
}

/// Projects every event of the ledger from scratch into memory.
async fn from_scratch(store: &EventStore, ledger_id: Uuid) -> ReadModels {
    let fresh = ReadModels::in_memory().await.unwrap();
    let events = store.read_ledger(ledger_id, 0, 100_000).await.unwrap();
    fresh.apply_batch(ledger_id, &events).await.unwrap();
    fresh
}

async fn rebuild_restores_tampered_rows_while_the_runner_runs(engine: Engine) {
    let backend = Arc::new(MemoryBackend::new());
    let store = open_store(Arc::clone(&backend) as Arc<dyn Backend>);
    let story = write_story(&store).await;
    let head = write_retry(&store, &story).await;
    let Some((guard, live)) = open_models(engine, "rebuild").await else {
        return;
    };
    let file = match &guard {
        DbGuard::Sqlite(dir) => Some(dir.path().join("folio-data/read.sqlite")),
        DbGuard::Postgres(_) => None,
    };
    let events = store
        .read_ledger(story.ledger_id, 0, 100_000)
        .await
        .unwrap();
    live.apply_batch(story.ledger_id, &events).await.unwrap();
    let expected = from_scratch(&store, story.ledger_id)
        .await
        .dump()
        .await
        .unwrap();
    assert_eq!(live.dump().await.unwrap(), expected);

    tamper(&guard, file.as_deref()).await;
    let tampered = live.dump().await.unwrap();
    assert_ne!(tampered, expected);

    // One model: its tables come back, the others keep the damage.
    let mut calls = Vec::new();
    let report = projections::rebuild(&live, backend.as_ref(), "payments", &mut |done, total| {
        calls.push((done, total))
    })
    .await
    .unwrap();
    assert_eq!(report.tables, ["payments", "payment_history"]);
    assert_eq!(calls.last(), Some(&(head + 1, head + 1)), "{calls:?}");
    let partly = live.dump().await.unwrap();
    assert_eq!(partly["payments"], expected["payments"]);
    assert_ne!(partly["payees"], expected["payees"]);
    let unknown = projections::rebuild(&live, backend.as_ref(), "nope", &mut |_, _| {}).await;
    assert!(unknown.unwrap_err().to_string().contains("dlq"));

    // Everything, while the runner applies events appended during the rebuild.
    let runner = ProjectionRunner::spawn(store.clone(), live.clone());
    let writer = {
        let (store, ledger_id) = (store.clone(), story.ledger_id);
        tokio::spawn(async move { support::append_payments(&store, ledger_id, 200, 2).await })
    };
    let report = projections::rebuild(&live, backend.as_ref(), "all", &mut |_, _| {})
        .await
        .unwrap();
    let more = writer.await.unwrap();
    assert_eq!(report.ledgers, 1);
    assert!(live
        .wait_for_position(story.ledger_id, more, WAIT)
        .await
        .unwrap());
    runner.shutdown().await;
    let expected = from_scratch(&store, story.ledger_id)
        .await
        .dump()
        .await
        .unwrap();
    assert_eq!(live.dump().await.unwrap(), expected);
    assert!(!expected["dlq_decisions"].is_empty());
    assert!(!expected["dead_letter_history"].is_empty());
}
