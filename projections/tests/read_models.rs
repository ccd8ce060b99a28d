//! Each read model built by the runner from a known story, on SQLite and on PostgreSQL.

mod support;

use projections::{
    AuditQuery, PageRequest, PaymentStatus, ProjectionRunner, ProjectionState, ReadModels,
};
use support::{memory_store, write_story, DbGuard, Engine, ACCOUNT, WAIT};
use uuid::Uuid;

on_both_engines!(
    audit_trail_lists_every_event,
    audit_trail_filters_and_pages,
    payments_track_status_and_history,
    payees_keep_removed_and_lookalikes,
    dead_letters_and_batches,
    no_full_account_number_in_any_table,
);

async fn projected_story(
    engine: Engine,
    test: &str,
) -> Option<(DbGuard, ReadModels, support::Story)> {
    let (db, models) = support::open_models(engine, test).await?;
    let store = memory_store();
    let story = write_story(&store).await;
    let runner = ProjectionRunner::spawn(store, models.clone());
    runner.track(story.ledger_id);
    assert!(models
        .wait_for_position(story.ledger_id, story.head, WAIT)
        .await
        .unwrap());

    let status = runner.status(story.ledger_id).await.unwrap();
    assert_eq!(status.state, ProjectionState::Running);
    assert_eq!(status.position, Some(story.head));
    assert_eq!(status.lag, Some(0));
    assert_eq!(status.error, None);
    runner.shutdown().await;
    Some((db, models, story))
}

async fn audit_trail_lists_every_event(engine: Engine) {
    let Some((_db, models, story)) = projected_story(engine, "audit_trail_lists_every_event").await
    else {
        return;
    };
    let page = models
        .audit_trail(story.ledger_id, &AuditQuery::default())
        .await
        .unwrap();

    assert_eq!(page.items.len() as u64, story.head + 1);
    assert_eq!(page.next_cursor, None);
    assert_eq!(page.as_of_position, Some(story.head));
    let positions: Vec<u64> = page.items.iter().map(|e| e.position).collect();
    assert_eq!(positions, (0..=story.head).collect::<Vec<_>>());
    for pair in page.items.windows(2) {
        assert_eq!(
            pair[1].prev_hash, pair[0].hash,
            "link at {}",
            pair[1].position
        );
    }
    assert_eq!(
        page.as_of_hash.as_deref(),
        Some(page.items[story.head as usize].hash.as_str())
    );

    let genesis = &page.items[0];
    assert_eq!(genesis.event_type, "ledger.created");
    assert_eq!(genesis.actor_kind, "system");
    assert!(
        genesis.recorded_at.ends_with('Z'),
        "{}",
        genesis.recorded_at
    );

    let submitted = page
        .items
        .iter()
        .find(|e| e.stream_id == format!("payment-{}", story.paid))
        .unwrap();
    let summary = submitted.summary.as_deref().unwrap();
    assert!(summary.contains("12345 AUD"), "{summary}");
    assert!(summary.contains("*****678"), "{summary}");
    assert!(!summary.contains(ACCOUNT), "{summary}");
    assert!(!summary.contains("bank-key"), "{summary}");
    assert_eq!(submitted.actor_id, "payroll-co");
    assert_eq!(submitted.actor_credential, "token-1");

    let note = page.items.last().unwrap();
    assert_eq!(note.event_type, "custom.note");
    assert_eq!(note.summary, None);
}

async fn audit_trail_filters_and_pages(engine: Engine) {
    let Some((_db, models, story)) = projected_story(engine, "audit_trail_filters_and_pages").await
    else {
        return;
    };
    let ledger = story.ledger_id;

    let by_actor = AuditQuery {
        actor_id: Some("ops-jane".into()),
        ..AuditQuery::default()
    };
    let page = models.audit_trail(ledger, &by_actor).await.unwrap();
    assert_eq!(page.items.len(), 5, "four payee events and the note");
    assert!(page.items.iter().all(|e| e.actor_id == "ops-jane"));

    let stream = format!("payment-{}", story.parked);
    let by_stream = AuditQuery {
        stream_id: Some(stream.clone()),
        ..AuditQuery::default()
    };
    let page = models.audit_trail(ledger, &by_stream).await.unwrap();
    assert_eq!(page.items.len(), 6);
    assert!(page.items.iter().all(|e| e.stream_id == stream));

    let by_type = AuditQuery {
        event_type: Some("payment.dispatch_failed".into()),
        ..AuditQuery::default()
    };
    let page = models.audit_trail(ledger, &by_type).await.unwrap();
    assert_eq!(page.items.len(), 3);

    // Time range: from is inclusive, to is exclusive.
    let all = models
        .audit_trail(ledger, &AuditQuery::default())
        .await
        .unwrap()
        .items;
    let (from, to) = (all[3].recorded_at_micros, all[10].recorded_at_micros);
    let range = AuditQuery {
        from_micros: Some(from),
        to_micros: Some(to),
        ..AuditQuery::default()
    };
    let page = models.audit_trail(ledger, &range).await.unwrap();
    let expected: Vec<u64> = all
        .iter()
        .filter(|e| e.recorded_at_micros >= from && e.recorded_at_micros < to)
        .map(|e| e.position)
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(
        page.items.iter().map(|e| e.position).collect::<Vec<_>>(),
        expected
    );

    // Walk the whole trail three events at a time.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page_request = PageRequest {
            after_position: cursor,
            limit: Some(3),
        };
        let query = AuditQuery {
            page: page_request,
            ..AuditQuery::default()
        };
        let page = models.audit_trail(ledger, &query).await.unwrap();
        assert!(page.items.len() <= 3);
        seen.extend(page.items.iter().map(|e| e.position));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, (0..=story.head).collect::<Vec<_>>());
}

async fn payments_track_status_and_history(engine: Engine) {
    let Some((_db, models, story)) =
        projected_story(engine, "payments_track_status_and_history").await
    else {
        return;
    };
    let ledger = story.ledger_id;

    let paid = models.payment(ledger, story.paid).await.unwrap().unwrap();
    assert_eq!(paid.as_of_position, Some(story.head));
    let payment = &paid.item.payment;
    assert_eq!(payment.status, PaymentStatus::Receipted);
    assert_eq!(payment.amount_minor, Some(12_345));
    assert_eq!(payment.currency.as_deref(), Some("AUD"));
    assert_eq!(payment.payee_id, Some(story.alice));
    assert_eq!(
        payment.account_masked.as_deref(),
        Some("BSB 062-000 account *****678")
    );
    assert_eq!(payment.bank_reference.as_deref(), Some("BANK-REF-1"));
    assert_eq!(payment.attempts, 2);
    assert_eq!(payment.source.as_deref(), Some("api"));
    assert_eq!(payment.last_error_kind.as_deref(), Some("timeout"));
    let statuses: Vec<PaymentStatus> = paid.item.history.iter().map(|c| c.status).collect();
    use PaymentStatus::*;
    assert_eq!(
        statuses,
        [
            Submitted,
            Dispatching,
            FailedRetrying,
            Dispatching,
            Receipted
        ]
    );

    let parked = models
        .payment(ledger, story.parked)
        .await
        .unwrap()
        .unwrap()
        .item;
    assert_eq!(parked.payment.status, DeadLettered);
    assert_eq!(parked.payment.attempts, 2);
    let statuses: Vec<PaymentStatus> = parked.history.iter().map(|c| c.status).collect();
    // The final failure keeps the status until the dead-letter event.
    assert_eq!(
        statuses,
        [
            Submitted,
            Dispatching,
            FailedRetrying,
            Dispatching,
            Dispatching,
            DeadLettered
        ]
    );

    let rejected = models
        .payment(ledger, story.rejected)
        .await
        .unwrap()
        .unwrap()
        .item
        .payment;
    assert_eq!(rejected.status, Rejected);
    assert_eq!(
        rejected.amount_minor,
        Some(700),
        "the rejection keeps the requested amount"
    );
    assert_eq!(rejected.currency.as_deref(), Some("AUD"));
    assert_eq!(
        rejected.last_error_kind.as_deref(),
        Some("payee_not_allowed")
    );

    assert!(models
        .payment(ledger, Uuid::now_v7())
        .await
        .unwrap()
        .is_none());

    let submitted = models
        .payments_by_status(ledger, Submitted, &PageRequest::default())
        .await;
    let ids: Vec<Uuid> = submitted
        .unwrap()
        .items
        .iter()
        .map(|p| p.payment_id)
        .collect();
    assert_eq!(ids, story.batch_payments);
    let receipted = models
        .payments_by_status(ledger, Receipted, &PageRequest::default())
        .await;
    assert_eq!(receipted.unwrap().items.len(), 1);

    let first = PageRequest {
        after_position: None,
        limit: Some(1),
    };
    let page = models
        .payments_by_batch(ledger, story.batch_id, &first)
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].payment_id, story.batch_payments[0]);
    assert_eq!(page.items[0].batch_line, Some(2));
    assert_eq!(page.items[0].source.as_deref(), Some("aba_file"));
    let rest = PageRequest {
        after_position: page.next_cursor,
        limit: Some(1),
    };
    let page = models
        .payments_by_batch(ledger, story.batch_id, &rest)
        .await
        .unwrap();
    assert_eq!(page.items[0].payment_id, story.batch_payments[1]);
    assert_eq!(page.next_cursor, None);
}

async fn payees_keep_removed_and_lookalikes(engine: Engine) {
    let Some((_db, models, story)) =
        projected_story(engine, "payees_keep_removed_and_lookalikes").await
    else {
        return;
    };
    let ledger = story.ledger_id;

    let active = models
        .payees(ledger, false, &PageRequest::default())
        .await
        .unwrap();
    let ids: Vec<Uuid> = active.items.iter().map(|p| p.payee_id).collect();
    assert_eq!(ids, [story.alice, story.alicia]);
    let all = models
        .payees(ledger, true, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(all.items.len(), 3);

    let alicia = models
        .payee(ledger, story.alicia)
        .await
        .unwrap()
        .unwrap()
        .item;
    assert_eq!(alicia.lookalike_of, [story.alice]);
    assert_eq!(alicia.normalized_name, "alicia nguyen");
    assert_eq!(alicia.account_masked, "BSB 062-000 account *****678");
    assert!(alicia.active);

    let bob = models.payee(ledger, story.bob).await.unwrap().unwrap().item;
    assert!(!bob.active);
    assert_eq!(bob.removed_reason.as_deref(), Some("left the company"));
    assert!(bob.removed_at.is_some());
}

async fn dead_letters_and_batches(engine: Engine) {
    let Some((_db, models, story)) = projected_story(engine, "dead_letters_and_batches").await
    else {
        return;
    };
    let ledger = story.ledger_id;

    let parked = models
        .dead_letters(ledger, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(parked.items.len(), 1);
    let letter = &parked.items[0];
    assert_eq!(letter.payment_id, story.parked);
    assert_eq!(letter.amount_minor, 50_000);
    assert_eq!(letter.payee_id, story.alicia);
    assert_eq!(letter.last_error_kind, "http_5xx");
    assert_eq!(letter.attempts, 2);

    let now = letter.parked_at_micros + 90_000_000;
    let stats = models.dead_letter_stats(ledger, now).await.unwrap();
    assert_eq!(stats.count, 1);
    assert_eq!(stats.oldest_age_seconds, Some(90));

    let batch = models
        .aba_batch(ledger, story.batch_id)
        .await
        .unwrap()
        .unwrap()
        .item;
    assert_eq!(batch.detail_count, 2);
    assert_eq!(batch.payment_count, 2);
    assert_eq!(batch.credit_total_minor, 3_000);
    assert_eq!(batch.file_hash, "ab".repeat(32));
    assert_eq!(batch.processing_date, "041225");
    let batches = models
        .aba_batches(ledger, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(batches.items.len(), 1);
}

async fn no_full_account_number_in_any_table(engine: Engine) {
    let Some((_db, models, _story)) =
        projected_story(engine, "no_full_account_number_in_any_table").await
    else {
        return;
    };
    let dump = serde_json::to_string(&models.dump().await.unwrap()).unwrap();
    assert!(!dump.contains(ACCOUNT));
    assert!(dump.contains("*****678"));
}
