//! The dead-letter queue over real HTTP and mutual TLS. Viewing a parked payment is
//! recorded. Retries and ignores need a reason, a fresh step-up and a second operator. A
//! retry reuses the bank idempotency key, so the bank books a payment once. Bulk retries
//! are bounded, counted first, paced and pausable.

use std::time::{Duration, Instant};

use api::bank::sim::FaultMode;
use api::operators::client::OperatorClient;
use domain::controls::{ControlPolicy, ControlStatus, ControlsEvaluator, DUAL_APPROVAL};
use domain::events::{DomainEvent, PaymentSubmitted};
use domain::record::SealedEvent;
use folio_e2e::harness::Stack;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

async fn events(stack: &Stack, ledger: Uuid) -> Vec<SealedEvent> {
    stack
        .state
        .store
        .read_ledger(ledger, 0, 100_000)
        .await
        .unwrap()
}

fn of_type<'a>(events: &'a [SealedEvent], event_type: &str) -> Vec<&'a SealedEvent> {
    events
        .iter()
        .filter(|event| event.event_type == event_type)
        .collect()
}

/// Submits a payment and waits until it is parked.
async fn parked_payment(stack: &Stack, ledger: Uuid, payee: Uuid, key: &str) -> Uuid {
    let (status, body) = stack.pay(ledger, payee, json!(12_345), key).await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let payment = body["payment_id"].as_str().unwrap().to_owned();
    stack
        .wait_status(ledger, &payment, &["dead_lettered"])
        .await
        .unwrap();
    payment.parse().unwrap()
}

/// A ledger with one payee, its administrator and an enrolled DLQ operator.
struct DlqLedger {
    ledger: Uuid,
    payee: Uuid,
    operators: std::sync::Arc<folio_e2e::harness::LedgerOperators>,
    dora: OperatorClient,
}

/// Creates a ledger for `tenant` with the payee `(name, bsb, account)` and a DLQ operator.
async fn dlq_ledger(
    stack: &Stack,
    tenant: &str,
    (name, bsb, account): (&str, &str, &str),
    dlq_operator: &str,
) -> DlqLedger {
    let ledger = stack.create_ledger(tenant).await.unwrap();
    let payee = stack.add_payee(ledger, name, bsb, account).await.unwrap();
    let operators = stack.operators(ledger).await.unwrap();
    let dora = stack
        .enrolled_operator(&operators.proposer, ledger, dlq_operator, &["dlq-operator"])
        .await
        .unwrap();
    DlqLedger {
        ledger,
        payee,
        operators,
        dora,
    }
}

/// Waits until the DLQ read model shows a payment as resolved.
async fn wait_resolved(operator: &OperatorClient, ledger: Uuid, payment: Uuid) {
    let started = Instant::now();
    loop {
        let path = format!("/v1/ledgers/{ledger}/dlq?status=resolved");
        let (status, page) = operator.get(&path).await.unwrap();
        assert_eq!(status, StatusCode::OK, "{page}");
        let items = page["items"].as_array().unwrap();
        if items
            .iter()
            .any(|item| item["payment_id"] == payment.to_string())
        {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn dual_approval(events: &[SealedEvent]) -> (ControlStatus, String) {
    let policy = ControlPolicy {
        max_signing_key_age_micros: i64::MAX,
    };
    let mut evaluator = ControlsEvaluator::new(policy);
    for event in events {
        evaluator.push(event);
    }
    let run = evaluator.finish(i64::MAX / 2, Ok(()), None).unwrap();
    let result = run
        .results
        .into_iter()
        .find(|result| result.control == DUAL_APPROVAL)
        .unwrap();
    (result.status, result.detail)
}

/// The bank stores the payment but responds too late on every attempt, so Folio parks
/// it. A retry, proposed by a DLQ operator and approved by a second operator, goes
/// through the dispatcher with the same key: the bank returns its first booking, and its
/// own record shows one payment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_of_a_payment_the_bank_booked_pays_once() {
    let stack = Stack::start_with(|config| config.dlq.release_interval_ms = 100)
        .await
        .unwrap();
    let payee = ("Bob Ray", "083-004", "87654321");
    let DlqLedger {
        ledger,
        payee,
        operators,
        dora,
    } = dlq_ledger(&stack, "dlq-once", payee, "dora.dlq").await;
    let admin = &operators.proposer;

    stack
        .sim
        .set_fault(FaultMode::Slow { delay_ms: 1_500 }, None);
    let payment = parked_payment(&stack, ledger, payee, "late-bank").await;
    let before = stack.sim.ledger_stats();
    assert_eq!(
        before.distinct_payments, 1,
        "the bank booked it before it was parked"
    );
    stack.sim.set_fault(FaultMode::Ok, None);

    // The summary list records nothing; the full view is recorded with its viewer.
    let base = format!("/v1/ledgers/{ledger}");
    let (status, list) = dora.get(&format!("{base}/dlq")).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["items"][0]["status"], "parked");
    assert!(of_type(&events(&stack, ledger).await, "dlq.item_viewed").is_empty());
    let (status, item) = dora.get(&format!("{base}/dlq/{payment}")).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{item}");
    assert_eq!(item["payment"]["payee_name"], "Bob Ray");
    assert_eq!(item["last_error_kind"], "timeout");
    let all = events(&stack, ledger).await;
    let viewed = of_type(&all, "dlq.item_viewed");
    assert_eq!(viewed.len(), 1);
    assert_eq!(viewed[0].actor.id, dora.operator_id.to_string());
    assert_eq!(viewed[0].actor.credential, dora.session_id.to_string());

    // A dry run shows the count; the proposal waits for someone else.
    let retries = format!("{base}/dlq/retries");
    let filter = json!({"filter": {"last_error_kind": "timeout"}, "reason": "bank is back",
                        "dry_run": true});
    let (status, preview) = dora.post(&retries, &filter).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(preview["count"], 1);
    assert_eq!(preview["payment_ids"], json!([payment]));
    let no_reason = json!({"payment_ids": [payment], "reason": " "});
    let (status, problem) = dora.post(&retries, &no_reason).await.unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    let body = json!({"payment_ids": [payment], "reason": "bank is back"});
    let (status, decision) = dora.post(&retries, &body).await.unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "{decision}");
    assert_eq!(decision["count"], 1);
    let (status, again) = dora.post(&retries, &body).await.unwrap();
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "one decision per payment: {again}"
    );
    assert_eq!(again["code"], "dlq_payment_already_decided");

    let approval = format!(
        "{base}/dlq-decisions/{}/approval",
        decision["decision_id"].as_str().unwrap()
    );
    let hash = json!({"content_hash": decision["content_hash"]});
    let (status, own) = dora.post(&approval, &hash).await.unwrap();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{own}");
    assert_eq!(own["code"], "self_approval");
    let (status, approved) = admin.post(&approval, &hash).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{approved}");

    stack
        .wait_status(ledger, &payment.to_string(), &["receipted"])
        .await
        .unwrap();
    wait_resolved(&dora, ledger, payment).await;

    // The bank's own record: one payment, under the key of the submission.
    let after = stack.sim.ledger_stats();
    let all = events(&stack, ledger).await;
    let submitted = of_type(&all, "payment.submitted")[0];
    let key = match DomainEvent::decode(
        &submitted.event_type,
        submitted.schema_version,
        &submitted.payload,
    ) {
        Ok(DomainEvent::PaymentSubmitted(PaymentSubmitted {
            bank_idempotency_key,
            ..
        })) => bank_idempotency_key,
        Ok(DomainEvent::PaymentSubmittedSealed(sealed)) => sealed.bank_idempotency_key,
        other => panic!("{other:?}"),
    };
    assert_eq!(after.distinct_payments, 1, "{after:?}");
    let booked: Vec<_> = after
        .payments
        .iter()
        .filter(|p| p.idempotency_key == key)
        .collect();
    assert_eq!(booked.len(), 1, "{after:?}");
    assert!(after.calls > before.calls, "the retry reached the bank");
    let attempts = of_type(&all, "payment.dispatch_attempted");
    assert_eq!(
        attempts.len(),
        4,
        "three before parking, one after the retry"
    );
    assert_eq!(of_type(&all, "dlq.retry_released").len(), 1);

    let (status, item) = dora.get(&format!("{base}/dlq/{payment}")).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{item}");
    let steps: Vec<&str> = item["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| step["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "parked",
            "retry_pending_approval",
            "retrying",
            "retrying",
            "retrying",
            "resolved"
        ]
    );
    assert_eq!(dual_approval(&all).0, ControlStatus::Pass);
    assert_bundle_lists_dlq_steps(&all, payment);
    stack.stop().await.unwrap();
}

/// The evidence bundle's `dlq_actions.csv` lists every step of the payment's way through
/// the queue, in scope of the whole ledger and of the payment alone.
fn assert_bundle_lists_dlq_steps(all: &[SealedEvent], payment_id: Uuid) {
    use api::bundle::content::{Content, Scope, Sinks};
    let payment = payment_id.to_string();
    for scope in [Scope::Ledger, Scope::Payment(payment_id)] {
        let sinks = Sinks {
            events: Vec::new(),
            audit: Vec::new(),
            payments: Vec::new(),
            dlq: Vec::new(),
            controls: Vec::new(),
        };
        let mut content = Content::new(scope, sinks).unwrap();
        for event in all {
            content.push(event).unwrap();
        }
        let csv = String::from_utf8(content.sinks.dlq).unwrap();
        let actions: Vec<&str> = csv
            .lines()
            .skip(1)
            .map(|line| {
                assert!(line.contains(&payment), "{line}");
                line.split(',').nth(2).unwrap()
            })
            .collect();
        assert_eq!(
            actions,
            [
                "parked",
                "viewed",
                "retry_proposed",
                "retry_approved",
                "retry_released"
            ],
            "{csv}"
        );
        assert!(csv.contains("bank is back"), "{csv}");
    }
}

/// A bulk retry names at most `dlq.max_bulk` payments, shows its count first, is released
/// one batch per interval, and stops releasing while paused. An ignore needs a reason code
/// from the list and a free-text reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_retry_is_bounded_paced_and_pausable() {
    let stack = Stack::start_with(|config| {
        config.dlq.max_bulk = 3;
        config.dlq.release_batch_size = 1;
        config.dlq.release_interval_ms = 300;
    })
    .await
    .unwrap();
    let payee = ("Ann Lee", "062-000", "12345678");
    let DlqLedger {
        ledger,
        payee,
        operators,
        dora,
    } = dlq_ledger(&stack, "dlq-bulk", payee, "dora.dlq").await;
    let admin = &operators.proposer;
    stack.sim.set_fault(FaultMode::Fail, None);
    let mut parked = Vec::new();
    for n in 0..4 {
        parked.push(parked_payment(&stack, ledger, payee, &format!("bulk-{n}")).await);
    }
    parked.sort();
    stack.sim.set_fault(FaultMode::Ok, None);
    let base = format!("/v1/ledgers/{ledger}");

    // Above the limit: refused with the count and the limit, nothing recorded.
    let retries = format!("{base}/dlq/retries");
    let everything = json!({"filter": {"last_error_kind": "http_5xx"}, "reason": "outage over"});
    let (status, problem) = dora.post(&retries, &everything).await.unwrap();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["code"], "dlq_bulk_limit");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("names 4 parked") && detail.contains("is 3"),
        "{detail}"
    );
    let no_condition = json!({"filter": {}, "reason": "outage over"});
    let (status, problem) = dora.post(&retries, &no_condition).await.unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");

    // A retry of the fourth, rejected by the second operator, frees it for an ignore.
    let one = json!({"payment_ids": [parked[3]], "reason": "try it alone"});
    let (status, lone) = dora.post(&retries, &one).await.unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "{lone}");
    let id = lone["decision_id"].as_str().unwrap();
    let rejection = format!("{base}/dlq-decisions/{id}/rejection");
    let (status, rejected) = admin
        .post(&rejection, &json!({"reason": "the client paid it already"}))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{rejected}");
    let (status, late) = admin
        .post(
            &format!("{base}/dlq-decisions/{id}/approval"),
            &json!({"content_hash": lone["content_hash"]}),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{late}");
    assert_eq!(late["code"], "dlq_decision_not_pending");

    // Ignore it: the code must come from the list, the free text is required.
    let ignores = format!("{base}/dlq/ignores");
    let bad_code = json!({"payment_ids": [parked[3]], "reason_code": "lost", "reason": "x"});
    let (status, problem) = dora.post(&ignores, &bad_code).await.unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert!(problem["detail"]
        .as_str()
        .unwrap()
        .contains("paid_outside_folio"));
    let no_text = json!({"payment_ids": [parked[3]], "reason_code": "duplicate", "reason": ""});
    let (status, _) = dora.post(&ignores, &no_text).await.unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let ignore = json!({"payment_ids": [parked[3]], "reason_code": "duplicate",
                        "reason": "client paid it twice; see ticket 1234"});
    let (status, ignored) = dora.post(&ignores, &ignore).await.unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "{ignored}");
    approve(admin, ledger, &ignored).await;

    // The other three: counted, proposed, approved, then paused after the first batch.
    let three = json!({"payment_ids": &parked[..3], "reason": "outage over", "dry_run": true});
    let (status, preview) = dora.post(&retries, &three).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(
        (preview["count"].clone(), preview["limit"].clone()),
        (json!(3), json!(3))
    );
    let three = json!({"payment_ids": &parked[..3], "reason": "outage over"});
    let (status, decision) = dora.post(&retries, &three).await.unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "{decision}");
    let id = decision["decision_id"].as_str().unwrap().to_owned();
    approve(admin, ledger, &decision).await;
    let pause = format!("{base}/dlq-decisions/{id}/pause");
    let (status, paused) = dora
        .post(&pause, &json!({"reason": "watching the bank"}))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{paused}");
    let released_while_paused = wait_quiet(&stack, ledger).await;
    assert!(
        released_while_paused < 3,
        "paused after {released_while_paused}"
    );
    tokio::time::sleep(Duration::from_millis(900)).await;
    let still = of_type(&events(&stack, ledger).await, "dlq.retry_released").len();
    assert_eq!(
        still, released_while_paused,
        "nothing is released while paused"
    );

    let resume = format!("{base}/dlq-decisions/{id}/resume");
    let (status, resumed) = dora.post(&resume, &json!({})).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{resumed}");
    for payment in &parked[..3] {
        stack
            .wait_status(ledger, &payment.to_string(), &["receipted"])
            .await
            .unwrap();
    }
    let all = events(&stack, ledger).await;
    let released = of_type(&all, "dlq.retry_released");
    assert_eq!(released.len(), 3);
    for pair in released.windows(2) {
        let gap = pair[1].recorded_at_micros - pair[0].recorded_at_micros;
        assert!(
            gap >= 250_000,
            "batches {gap} µs apart; the interval is 300 ms"
        );
    }
    let (status, list) = dora
        .get(&format!("{base}/dlq?status=ignored"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["items"][0]["payment_id"], parked[3].to_string());
    let (status, open) = dora.get(&format!("{base}/dlq")).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(open["items"], json!([]), "nothing is left open");
    assert_eq!(stack.sim.ledger_stats().distinct_payments, 3);
    let (status, detail) = dual_approval(&all);
    assert_eq!(status, ControlStatus::Pass, "{detail}");
    stack.stop().await.unwrap();
}

/// Approves a DLQ decision as `approver`.
async fn approve(approver: &OperatorClient, ledger: Uuid, decision: &Value) {
    let id = decision["decision_id"].as_str().unwrap();
    let path = format!("/v1/ledgers/{ledger}/dlq-decisions/{id}/approval");
    let body = json!({"content_hash": decision["content_hash"]});
    let (status, approved) = approver.post(&path, &body).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{approved}");
}

/// Waits until no release has been recorded for two intervals, and returns the count.
async fn wait_quiet(stack: &Stack, ledger: Uuid) -> usize {
    let mut last = usize::MAX;
    loop {
        let count = of_type(&events(stack, ledger).await, "dlq.retry_released").len();
        if count == last {
            return count;
        }
        last = count;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
}

/// An approved retry is not released into an open breaker, because there it would spend
/// its attempts without reaching the bank. It goes once the breaker lets a probe through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_waits_for_open_breaker() {
    let stack = Stack::start_with(|config| {
        config.dlq.release_interval_ms = 50;
        config.bank.breaker_failure_threshold = 3;
        config.bank.breaker_open_ms = 4_000;
    })
    .await
    .unwrap();
    let payee = ("Bob Ray", "083-004", "87654321");
    let DlqLedger {
        ledger,
        payee,
        operators,
        dora,
    } = dlq_ledger(&stack, "dlq-breaker", payee, "dora.breaker").await;
    let admin = &operators.proposer;
    stack.sim.set_fault(FaultMode::Fail, None);
    // The breaker opens at the third failed call, somewhere between this instant and
    // the parking, so its cool-down cannot end before `submitted_at` + 4 s.
    let submitted_at = Instant::now();
    let payment = parked_payment(&stack, ledger, payee, "breaker").await;
    assert_eq!(stack.state.breaker_state(), Some("open"));
    stack.sim.set_fault(FaultMode::Ok, None);

    let base = format!("/v1/ledgers/{ledger}");
    let body = json!({"payment_ids": [payment], "reason": "bank is back"});
    let (status, decision) = dora
        .post(&format!("{base}/dlq/retries"), &body)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "{decision}");
    let approval = format!(
        "{base}/dlq-decisions/{}/approval",
        decision["decision_id"].as_str().unwrap()
    );
    let hash = json!({"content_hash": decision["content_hash"]});
    let (status, approved) = admin.post(&approval, &hash).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{approved}");

    // Still open: many release ticks pass, and nothing is released.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        submitted_at.elapsed() < Duration::from_millis(3_500),
        "setup too slow"
    );
    let all = events(&stack, ledger).await;
    assert!(of_type(&all, "dlq.retry_released").is_empty());

    // Once the breaker half-opens, the payment is released as the probe and paid.
    stack
        .wait_status(ledger, &payment.to_string(), &["receipted"])
        .await
        .unwrap();
    assert!(submitted_at.elapsed() >= Duration::from_millis(4_000));
    let all = events(&stack, ledger).await;
    assert_eq!(of_type(&all, "dlq.retry_released").len(), 1);
    stack.stop().await.unwrap();
}
