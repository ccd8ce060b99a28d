//! The anomaly review queue and the payment statuses of held payments, on SQLite and on
//! PostgreSQL.

mod support;

use domain::anomaly_events::{
    AnomalyFinding, Measure, PaymentFlagged, PaymentReviewed, ReviewDecision,
};
use domain::events::PaymentSource;
use domain::operator_events::AuthContext;
use domain::record::EventDraft;
use projections::{AnomalyFilter, PageRequest, PaymentStatus, ProjectionRunner, ReviewStatus};
use support::{append, create_ledger, draft, memory_store, operator, submitted, Engine, WAIT};
use uuid::Uuid;

on_both_engines!(queue_filters_pages_and_decides);

const PAYEE: Uuid = Uuid::from_u128(0xfee);

fn finding(rule: &str, explanation: &str) -> AnomalyFinding {
    AnomalyFinding {
        rule: rule.to_owned(),
        measures: vec![Measure {
            name: "median_minor".to_owned(),
            value: 10_000,
        }],
        explanation: explanation.to_owned(),
        related_payee_id: None,
    }
}

fn flagged(payment_id: Uuid, findings: Vec<AnomalyFinding>) -> PaymentFlagged {
    PaymentFlagged {
        payment_id,
        payee_id: PAYEE,
        amount_minor: 125_000,
        currency: "AUD".to_owned(),
        findings,
        history_position: 3,
        evaluated_at_micros: 0,
        time_zone: "Australia/Sydney".to_owned(),
    }
}

fn reviewed(payment_id: Uuid, flag: &EventDraft, decision: ReviewDecision) -> EventDraft {
    let payload = PaymentReviewed {
        payment_id,
        flag_event_id: flag.event_id,
        decision,
        reason: "checked".to_owned(),
        auth: AuthContext {
            operator_id: Uuid::from_u128(7),
            session_id: Uuid::from_u128(8),
            factor: "totp".to_owned(),
            factor_verified_at_micros: 0,
        },
    };
    let mut event = draft(&payload, &operator());
    event.causation_id = Some(flag.event_id);
    event
}

async fn queue_filters_pages_and_decides(engine: Engine) {
    let Some((_db, models)) = support::open_models(engine, "anomaly_queue").await else {
        return;
    };
    let store = memory_store();
    let ledger = create_ledger(&store).await;
    let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
    let actor = operator();
    let mut flags = Vec::new();
    for (payment, findings) in [
        (
            first,
            vec![finding("amount_above_usual", "12.50 times the median")],
        ),
        (
            second,
            vec![
                finding("unusual_hour", "02:14"),
                finding("many_payments_to_payee", "5"),
            ],
        ),
    ] {
        let submission = submitted(payment, PAYEE, 125_000, PaymentSource::Api);
        let flag = draft(&flagged(payment, findings), &actor);
        flags.push(flag.clone());
        let events = vec![draft(&submission, &actor), flag];
        append(&store, ledger, &format!("payment-{payment}"), events).await;
    }
    let runner = ProjectionRunner::spawn(store.clone(), models.clone());
    runner.track(ledger);
    let pending_head = store.head(ledger).await.unwrap().position;
    assert!(models
        .wait_for_position(ledger, pending_head, WAIT)
        .await
        .unwrap());

    // Both wait, in flag order, and their payments are held.
    let all = models
        .anomalies(ledger, &AnomalyFilter::default(), &PageRequest::default())
        .await
        .unwrap();
    let ids: Vec<Uuid> = all.items.iter().map(|a| a.payment_id).collect();
    assert_eq!(ids, [first, second]);
    assert_eq!(
        all.items[1].rules,
        ["unusual_hour", "many_payments_to_payee"]
    );
    assert_eq!(all.items[0].findings[0]["measures"]["median_minor"], 10_000);
    assert_eq!(all.items[0].flag_event_id, flags[0].event_id);
    assert!(all.items.iter().all(|a| a.status == ReviewStatus::Pending));
    let held = models.payment(ledger, first).await.unwrap().unwrap();
    assert_eq!(held.item.payment.status, PaymentStatus::HeldForReview);

    // A filter on one rule id does not match another that contains it.
    let by_rule = AnomalyFilter {
        rule: Some("many_payments_to_payee".to_owned()),
        ..AnomalyFilter::default()
    };
    let page = models
        .anomalies(ledger, &by_rule, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].payment_id, second);

    let one = PageRequest {
        after_position: None,
        limit: Some(1),
    };
    let page = models
        .anomalies(ledger, &AnomalyFilter::default(), &one)
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    let next = PageRequest {
        after_position: page.next_cursor,
        limit: Some(1),
    };
    let rest = models
        .anomalies(ledger, &AnomalyFilter::default(), &next)
        .await
        .unwrap();
    assert_eq!(rest.items[0].payment_id, second);
    assert_eq!(rest.next_cursor, None);

    // Release the first and reject the second.
    let release = reviewed(first, &flags[0], ReviewDecision::Release);
    append(&store, ledger, &format!("payment-{first}"), vec![release]).await;
    let reject = reviewed(second, &flags[1], ReviewDecision::Reject);
    let head = append(&store, ledger, &format!("payment-{second}"), vec![reject]).await;
    runner.track(ledger);
    assert!(models.wait_for_position(ledger, head, WAIT).await.unwrap());

    let rejected = AnomalyFilter {
        status: Some(ReviewStatus::Rejected),
        ..AnomalyFilter::default()
    };
    let page = models
        .anomalies(ledger, &rejected, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    let item = &page.items[0];
    assert_eq!(item.payment_id, second);
    assert_eq!(item.decided_by, Some(Uuid::from_u128(7)));
    assert_eq!(item.decision_reason.as_deref(), Some("checked"));
    let first_view = models.payment(ledger, first).await.unwrap().unwrap();
    assert_eq!(first_view.item.payment.status, PaymentStatus::Submitted);
    let second_view = models.payment(ledger, second).await.unwrap().unwrap();
    assert_eq!(
        second_view.item.payment.status,
        PaymentStatus::ReviewRejected
    );
    runner.shutdown().await;
}
