//! The dead-letter model through operator decisions, on SQLite and on PostgreSQL: a
//! rejected ignore returns the payment to the queue, an approved retry is released, paused
//! and resumed, and a receipt resolves it.

mod support;

use domain::dlq::{
    decision_hash, DlqAction, DlqDecisionApproved, DlqDecisionProposed, DlqDecisionRejected,
    DlqReleasePaused, DlqReleaseResumed, DlqRetryReleased, IgnoreReason,
};
use domain::events::{DispatchAttempted, EventPayload, ReceiptRecorded};
use domain::operator_events::AuthContext;
use domain::record::Actor;
use eventstore_adapter::EventStore;
use projections::{DeadLetterQuery, ReadModels};
use support::{append, draft, memory_store, operator, write_story, Engine, Story};
use uuid::Uuid;

on_both_engines!(decisions_move_parked_payment);

fn auth(operator: u128) -> AuthContext {
    AuthContext {
        operator_id: Uuid::from_u128(operator),
        session_id: Uuid::from_u128(operator + 100),
        factor: "totp".into(),
        factor_verified_at_micros: 0,
    }
}

fn proposal(story: &Story, decision_id: Uuid, action: DlqAction) -> DlqDecisionProposed {
    let ids = vec![story.parked];
    DlqDecisionProposed {
        decision_id,
        action,
        content_hash: decision_hash(story.ledger_id, decision_id, action, &ids, "why"),
        payment_ids: ids,
        reason: "why".into(),
        expires_at_micros: i64::MAX,
        auth: auth(1),
    }
}

async fn to_dlq<P: EventPayload>(store: &EventStore, story: &Story, payload: &P) -> u64 {
    append(
        store,
        story.ledger_id,
        "dlq",
        vec![draft(payload, &operator())],
    )
    .await
}

async fn to_payment<P: EventPayload>(store: &EventStore, story: &Story, payload: &P) -> u64 {
    let stream = format!("payment-{}", story.parked);
    let system = Actor::system("dispatcher");
    append(
        store,
        story.ledger_id,
        &stream,
        vec![draft(payload, &system)],
    )
    .await
}

async fn project(models: &ReadModels, store: &EventStore, story: &Story) {
    let from = models
        .checkpoint(story.ledger_id)
        .await
        .unwrap()
        .map_or(0, |c| c.position + 1);
    let events = store
        .read_ledger(story.ledger_id, from, 10_000)
        .await
        .unwrap();
    models.apply_batch(story.ledger_id, &events).await.unwrap();
}

async fn status_of(models: &ReadModels, story: &Story) -> String {
    let item = models
        .dead_letter(story.ledger_id, story.parked)
        .await
        .unwrap();
    item.expect("parked payment").item.item.status
}

async fn decisions_move_parked_payment(engine: Engine) {
    let Some((_db, models)) = support::open_models(engine, "dlq_decisions").await else {
        return;
    };
    let store = memory_store();
    let story = write_story(&store).await;
    project(&models, &store, &story).await;
    assert_eq!(status_of(&models, &story).await, "parked");

    // An ignore, rejected: the payment is parked again.
    let ignore_id = Uuid::now_v7();
    let ignore = DlqAction::Ignore {
        reason_code: IgnoreReason::BeneficiaryClosed,
    };
    to_dlq(&store, &story, &proposal(&story, ignore_id, ignore)).await;
    project(&models, &store, &story).await;
    assert_eq!(status_of(&models, &story).await, "ignore_pending_approval");
    let rejected = DlqDecisionRejected {
        decision_id: ignore_id,
        reason: "account reopened".into(),
        auth: auth(2),
    };
    to_dlq(&store, &story, &rejected).await;
    project(&models, &store, &story).await;
    assert_eq!(status_of(&models, &story).await, "parked");

    // A retry: approved, released while paused and resumed, then receipted.
    let retry_id = Uuid::now_v7();
    let retry = proposal(&story, retry_id, DlqAction::Retry);
    to_dlq(&store, &story, &retry).await;
    let approved = DlqDecisionApproved {
        decision_id: retry_id,
        content_hash: retry.content_hash,
        auth: auth(2),
    };
    to_dlq(&store, &story, &approved).await;
    let paused = DlqReleasePaused {
        decision_id: retry_id,
        reason: "bank slow".into(),
        auth: auth(1),
    };
    to_dlq(&store, &story, &paused).await;
    let resumed = DlqReleaseResumed {
        decision_id: retry_id,
        auth: auth(1),
    };
    to_dlq(&store, &story, &resumed).await;
    let released = DlqRetryReleased {
        decision_id: retry_id,
        payment_id: story.parked,
        batch: 1,
    };
    to_payment(&store, &story, &released).await;
    project(&models, &store, &story).await;
    assert_eq!(status_of(&models, &story).await, "retrying");
    let open = models
        .dead_letters_matching(story.ledger_id, &DeadLetterQuery::default())
        .await
        .unwrap();
    assert_eq!(open.items.len(), 1, "retrying is still open");

    let attempt = DispatchAttempted {
        payment_id: story.parked,
        attempt: 3,
        bank_idempotency_key: format!("bank-key-{}", story.parked),
    };
    to_payment(&store, &story, &attempt).await;
    let receipt = ReceiptRecorded {
        payment_id: story.parked,
        attempt: 3,
        bank_reference: "BANK-REF-9".into(),
        response_status: 200,
        response_blake3: [2; 32],
    };
    to_payment(&store, &story, &receipt).await;
    project(&models, &store, &story).await;

    let detail = models
        .dead_letter(story.ledger_id, story.parked)
        .await
        .unwrap()
        .unwrap()
        .item;
    assert_eq!(detail.item.status, "resolved");
    assert_eq!(detail.item.decision_id, Some(retry_id));
    let steps: Vec<&str> = detail.history.iter().map(|s| s.status.as_str()).collect();
    assert_eq!(
        steps,
        [
            "parked",
            "ignore_pending_approval",
            "parked",
            "retry_pending_approval",
            "retrying",
            "retrying",
            "retrying",
            "resolved"
        ]
    );
    let open = models
        .dead_letters_matching(story.ledger_id, &DeadLetterQuery::default())
        .await
        .unwrap();
    assert!(open.items.is_empty());
    let query = DeadLetterQuery {
        statuses: vec!["resolved".into()],
        last_error_kind: Some("http_5xx".into()),
        ..DeadLetterQuery::default()
    };
    let resolved = models.dead_letters_matching(story.ledger_id, &query).await;
    assert_eq!(resolved.unwrap().items.len(), 1);
    let count = models
        .count_dead_letters_matching(story.ledger_id, &query)
        .await;
    assert_eq!(count.unwrap(), 1);
    let other_kind = DeadLetterQuery {
        last_error_kind: Some("timeout".into()),
        ..query
    };
    let none = models
        .count_dead_letters_matching(story.ledger_id, &other_kind)
        .await;
    assert_eq!(none.unwrap(), 0);
    let bad = DeadLetterQuery {
        statuses: vec!["lost".into()],
        ..DeadLetterQuery::default()
    };
    let error = models.dead_letters_matching(story.ledger_id, &bad).await;
    assert!(error
        .unwrap_err()
        .to_string()
        .contains("retry_pending_approval"));
    let stats = models.dead_letter_stats(story.ledger_id, 0).await.unwrap();
    assert_eq!(stats.count, 0);

    let dump = models.dump().await.unwrap();
    let decisions = &dump["dlq_decisions"];
    assert_eq!(decisions.len(), 2);
    let retry_row = decisions
        .iter()
        .find(|row| row["decision_id"] == retry_id.to_string())
        .unwrap();
    assert_eq!(retry_row["status"], "approved");
    assert_eq!(retry_row["paused"], 0);
    assert_eq!(retry_row["released_count"], 1);
}
