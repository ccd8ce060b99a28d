//! Anomaly review over real HTTP. An outlier payment is held with an explanation that
//! quotes the payee's median and the ratio. A reviewer with a fresh step-up releases it and
//! it reaches the bank simulator, and a rejected one never does.

use std::time::Duration;

use domain::anomalies::{score, Candidate, History};
use domain::events::DomainEvent;
use folio_e2e::harness::{read_fixture, Stack};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

/// Only the amount rule can fire: the hour, new-payee and burst rules would depend on
/// when the test runs and how fast it pays.
async fn stack() -> Stack {
    Stack::start_with(|config| {
        let rules = &mut config.anomalies;
        rules.enabled = true;
        rules.new_payee_seconds = 0;
        rules.quiet_start_hour = 0;
        rules.quiet_end_hour = 0;
        rules.burst_count = 1_000;
    })
    .await
    .unwrap()
}

async fn pay(stack: &Stack, ledger: Uuid, payee: Uuid, amount: u64) -> Value {
    let key = Uuid::now_v7().to_string();
    let (status, body) = stack.pay(ledger, payee, json!(amount), &key).await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

fn id(body: &Value) -> String {
    body["payment_id"].as_str().unwrap().to_owned()
}

/// Lets the dispatcher see the held payments; a dispatch takes milliseconds here.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(700)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_held_then_released_or_rejected() {
    let stack = stack().await;
    let ledger = stack.create_ledger("anomaly-payroll").await.unwrap();
    let payee = stack
        .add_payee(ledger, "Acme Plumbing", "062-000", "00012345")
        .await
        .unwrap();

    // Given four ordinary payments of AUD 80 to 120, all sent to the bank.
    for amount in [10_000, 12_000, 8_000, 10_000] {
        let body = pay(&stack, ledger, payee, amount).await;
        assert_eq!(body["status"], "submitted", "{body}");
        stack
            .wait_status(ledger, &id(&body), &["receipted"])
            .await
            .unwrap();
    }
    assert_eq!(stack.sim.ledger_stats().distinct_payments, 4);

    // When an AUD 1,250 payment arrives, it is held with the median and the ratio.
    let held = pay(&stack, ledger, payee, 125_000).await;
    assert_eq!(held["status"], "held_for_review", "{held}");
    let finding = &held["anomalies"][0];
    assert_eq!(finding["rule"], "amount_above_usual", "{held}");
    assert_eq!(finding["measures"]["median_minor"], 10_000);
    assert_eq!(finding["measures"]["ratio_hundredths"], 1_250);
    assert_eq!(
        finding["explanation"],
        "AUD 1,250.00 is 12.50 times this payee's median payment of AUD 100.00 over its last 4 \
         payments in AUD (the rule fires at 5.00 times)"
    );
    assert_eq!(held["anomalies"].as_array().unwrap().len(), 1, "{held}");

    // A second outlier: the held one counts as history until it is rejected, so the
    // median of 8,000 10,000 10,000 12,000 125,000 stays AUD 100.
    let doomed = pay(&stack, ledger, payee, 150_000).await;
    assert_eq!(doomed["status"], "held_for_review", "{doomed}");
    assert_eq!(
        doomed["anomalies"][0]["measures"]["ratio_hundredths"],
        1_500
    );
    assert_eq!(doomed["anomalies"][0]["measures"]["payments_considered"], 5);

    settle().await;
    assert_eq!(
        stack.sim.ledger_stats().calls,
        4,
        "a held payment reached the bank"
    );
    let (held_id, doomed_id) = (id(&held), id(&doomed));
    let view = stack
        .wait_status(ledger, &held_id, &["held_for_review"])
        .await
        .unwrap();
    assert_eq!(view["attempts"], 0);

    // The review queue lists both, pending, with what the reviewer will see.
    let queue_path = format!(
        "/v1/ledgers/{ledger}/anomalies?status=pending&min_position={}",
        doomed["position"]
    );
    let (status, queue) = stack.get(&queue_path).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{queue}");
    let items = queue["items"].as_array().unwrap();
    let listed: Vec<&str> = items
        .iter()
        .map(|i| i["payment_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [held_id.as_str(), doomed_id.as_str()]);
    assert_eq!(items[0]["findings"], held["anomalies"]);
    assert_eq!(items[0]["rules"], json!(["amount_above_usual"]));
    let (_, by_rule) = stack
        .get(&format!("/v1/ledgers/{ledger}/anomalies?rule=unusual_hour"))
        .await
        .unwrap();
    assert_eq!(by_rule["items"], json!([]));
    let (status, bad) = stack
        .get(&format!("/v1/ledgers/{ledger}/anomalies?rule=odd"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");

    // Then a reviewer (approver role, step-up from enrolment) releases one and rejects
    // the other, each with a reason.
    let operators = stack.operators(ledger).await.unwrap();
    let reviewer = stack
        .enrolled_operator(
            &operators.proposer,
            ledger,
            "anomaly.reviewer",
            &["approver"],
        )
        .await
        .unwrap();
    let release = format!("/v1/ledgers/{ledger}/anomalies/{held_id}/release");
    let (status, released) = reviewer
        .post(
            &release,
            &json!({"reason": "annual service contract, confirmed by phone"}),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{released}");
    assert_eq!(released["decision"], "release");
    let reject = format!("/v1/ledgers/{ledger}/anomalies/{doomed_id}/rejection");
    let (status, rejected) = reviewer
        .post(
            &reject,
            &json!({"reason": "payee denies invoicing this amount"}),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{rejected}");

    // A decision is final.
    let (status, again) = reviewer
        .post(&release, &json!({"reason": "again"}))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    assert_eq!(again["code"], "review_already_decided");

    // The released payment goes to the bank; the rejected one never does.
    let done = stack
        .wait_status(ledger, &held_id, &["receipted"])
        .await
        .unwrap();
    assert_eq!(done["amount_minor"], 125_000);
    let gone = stack
        .wait_status(ledger, &doomed_id, &["review_rejected"])
        .await
        .unwrap();
    assert_eq!(gone["attempts"], 0);
    settle().await;
    let bank = stack.sim.ledger_stats();
    assert_eq!(bank.distinct_payments, 5);
    let amounts: Vec<u64> = bank.payments.iter().map(|p| p.amount_minor).collect();
    assert!(amounts.contains(&125_000), "{amounts:?}");
    assert!(
        !amounts.contains(&150_000),
        "a rejected payment reached the bank"
    );

    assert_decisions_are_linked_to_flags(&stack, ledger, &held_id, &released).await;
    assert_flag_replays(&stack, ledger, &held).await;
    assert_analytics(&stack, ledger).await;
    assert_replay_and_bundle(&stack, ledger, &held_id, &doomed_id).await;
    stack.stop().await.unwrap();
}

/// Checks that the auditor's replay state and the bundle's `anomaly_decisions.csv` show both
/// decisions with the flags they decided on.
async fn assert_replay_and_bundle(stack: &Stack, ledger: Uuid, released: &str, rejected: &str) {
    let events = stack
        .state
        .store
        .read_ledger(ledger, 0, 10_000)
        .await
        .unwrap();
    let state = api::replay::state::replay(&events).unwrap();
    let reviews: Vec<(String, &str)> = (state.anomaly_reviews.iter())
        .map(|r| (r.payment_id.to_string(), r.status.as_str()))
        .collect();
    let mut expected = vec![
        (released.to_owned(), "released"),
        (rejected.to_owned(), "rejected"),
    ];
    expected.sort();
    assert_eq!(reviews, expected);
    let statuses: Vec<&str> = (state.payments.iter())
        .filter(|p| [released, rejected].contains(&p.payment_id.to_string().as_str()))
        .map(|p| p.status.as_str())
        .collect();
    assert!(statuses.contains(&"receipted"), "{statuses:?}");
    assert!(statuses.contains(&"review_rejected"), "{statuses:?}");

    let sinks = api::bundle::content::Sinks {
        events: Vec::new(),
        audit: Vec::new(),
        payments: Vec::new(),
        dlq: Vec::new(),
        controls: Vec::new(),
    };
    let scope = api::bundle::content::Scope::Ledger;
    let mut content = api::bundle::content::Content::new(scope, sinks).unwrap();
    for event in &events {
        content.push(event).unwrap();
    }
    let csv = String::from_utf8(content.anomaly_csv()).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[1].contains(&format!("{released},release,")), "{csv}");
    assert!(lines[1].contains("annual service contract"), "{csv}");
    assert!(lines[1].contains("median payment of AUD 100.00"), "{csv}");
    assert!(lines[2].contains(&format!("{rejected},reject,")), "{csv}");
}

/// Checks that the audit trail shows the flag with its explanation and the decision caused
/// by it.
async fn assert_decisions_are_linked_to_flags(
    stack: &Stack,
    ledger: Uuid,
    payment: &str,
    released: &Value,
) {
    let path = format!(
        "/v1/ledgers/{ledger}/audit?stream=payment-{payment}&min_position={}",
        released["position"]
    );
    let (status, audit) = stack.get(&path).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{audit}");
    let items = audit["items"].as_array().unwrap();
    let types: Vec<&str> = items
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types[..3],
        ["payment.submitted", "payment.flagged", "payment.reviewed"]
    );
    let (flag, decision) = (&items[1], &items[2]);
    assert_eq!(flag["causation_id"], items[0]["event_id"]);
    assert_eq!(decision["causation_id"], flag["event_id"]);
    assert_eq!(released["flag_event_id"], flag["event_id"]);
    assert_eq!(decision["actor_kind"], "operator");
    let summary = flag["summary"].as_str().unwrap();
    assert!(
        summary.contains("median payment of AUD 100.00"),
        "{summary}"
    );
}

/// Replaying the ledger up to the position the flag names, and scoring at the time it
/// names, gives the same findings: the rules read nothing but the ledger.
async fn assert_flag_replays(stack: &Stack, ledger: Uuid, held: &Value) {
    let store = &stack.state.store;
    let payment_id: Uuid = serde_json::from_value(held["payment_id"].clone()).unwrap();
    let stream = format!("payment-{payment_id}");
    let events = store.read_stream(ledger, &stream, 0, 10).await.unwrap();
    let flag = events
        .iter()
        .find_map(
            |e| match DomainEvent::decode(&e.event_type, e.schema_version, &e.payload) {
                Ok(DomainEvent::PaymentFlagged(flag)) => Some(flag),
                _ => None,
            },
        )
        .expect("a flag event");

    let history_events = store
        .read_ledger(ledger, 0, u32::try_from(flag.history_position + 1).unwrap())
        .await
        .unwrap();
    let mut history = History::new();
    // Sealed payee fields are opened with the ledger's keys, as the server does.
    for event in &history_events {
        match DomainEvent::decode(&event.event_type, event.schema_version, &event.payload) {
            Ok(decoded) => {
                let opened = (stack.state.personal)
                    .open(ledger, &event.stream_id, event.event_id, decoded)
                    .await
                    .unwrap();
                history.apply(event.position, event.recorded_at_micros, &opened);
            }
            Err(_) => history.skip(event.position),
        }
    }
    assert_eq!(history.position(), Some(flag.history_position));
    let candidate = Candidate {
        payment_id,
        payee_id: flag.payee_id,
        amount_minor: flag.amount_minor,
        currency: &flag.currency,
        at_micros: flag.evaluated_at_micros,
    };
    let rules = stack.state.config.anomalies.rules().unwrap();
    assert_eq!(score(&history, &candidate, &rules), flag.findings);
}

async fn assert_analytics(stack: &Stack, ledger: Uuid) {
    let (status, report) = stack
        .get(&format!("/v1/ledgers/{ledger}/analytics"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{report}");
    let anomalies = &report["anomalies"];
    assert_eq!(anomalies["flagged"], 2, "{report}");
    assert_eq!(anomalies["released"], 1);
    assert_eq!(anomalies["rejected"], 1);
    assert_eq!(anomalies["pending"], 0);
    assert_eq!(anomalies["findings_by_rule"]["amount_above_usual"], 2);
    assert_eq!(anomalies["time_to_decision"]["count"], 2);
    let reviewers = anomalies["by_reviewer"].as_object().unwrap();
    assert_eq!(reviewers.len(), 1, "{report}");
    let (reviewer_id, decisions) = reviewers.iter().next().unwrap();
    assert_eq!(decisions, &json!({"released": 1, "rejected": 1}));

    let operators = report["operators"].as_array().unwrap();
    let reviewer = operators
        .iter()
        .find(|o| &o["operator_id"] == reviewer_id)
        .expect("the reviewer's actions");
    assert_eq!(reviewer["by_event_type"]["payment.reviewed"], 2, "{report}");
    assert_eq!(report["approvals"]["approved"], 1, "{report}");
    assert_eq!(report["approvals"]["turnaround"]["count"], 1);
    assert_eq!(report["dead_letters"]["parked"], 0);
}

/// Every record of an ABA file paying payees added minutes ago is held, and none reaches
/// the bank.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aba_records_to_new_payees_are_held() {
    let stack = Stack::start_with(|config| {
        config.anomalies.enabled = true;
        config.anomalies.quiet_start_hour = 0;
        config.anomalies.quiet_end_hour = 0;
    })
    .await
    .unwrap();
    let ledger = stack.create_ledger("anomaly-aba").await.unwrap();
    let sidecar: Value =
        serde_json::from_slice(&read_fixture("aba/generated-leading-zeros.json").unwrap()).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for record in sidecar["records"].as_array().unwrap() {
        let bsb = record["bsb"].as_str().unwrap();
        let account = record["account_number"].as_str().unwrap();
        if seen.insert((bsb.to_owned(), account.to_owned())) {
            let name = record["account_title"].as_str().unwrap().trim();
            stack.add_payee(ledger, name, bsb, account).await.unwrap();
        }
    }

    let file = read_fixture("aba/generated-leading-zeros.aba").unwrap();
    let path = format!("/v1/ledgers/{ledger}/payments/batches");
    let (status, body) = stack.post_bytes(&path, "aba-held", file).await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let items = body["payments"].as_array().unwrap();
    assert_eq!(body["held_for_review"], items.len(), "{body}");
    for item in items {
        assert_eq!(item["status"], "held_for_review", "{item}");
        let rules: Vec<&str> = (item["anomalies"].as_array().unwrap().iter())
            .map(|f| f["rule"].as_str().unwrap())
            .collect();
        assert!(rules.contains(&"first_payment_to_new_payee"), "{item}");
    }

    settle().await;
    assert_eq!(
        stack.sim.ledger_stats().calls,
        0,
        "a held ABA payment reached the bank"
    );
    let queue = format!(
        "/v1/ledgers/{ledger}/anomalies?rule=first_payment_to_new_payee&min_position={}",
        body["position"]
    );
    let (status, page) = stack.get(&queue).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["items"].as_array().unwrap().len(), items.len());
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitter_cannot_release_own_payment() {
    let stack = stack().await;
    let ledger = stack.create_ledger("anomaly-self-review").await.unwrap();
    let payee = stack
        .add_payee(ledger, "Acme Plumbing", "062-000", "00012345")
        .await
        .unwrap();
    for amount in [10_000, 10_000, 10_000] {
        let body = pay(&stack, ledger, payee, amount).await;
        stack
            .wait_status(ledger, &id(&body), &["receipted"])
            .await
            .unwrap();
    }
    // The administrator submits an outlier under their own name, then tries to wave it
    // through: refused, because the hold exists so that someone else looks.
    let operators = stack.operators(ledger).await.unwrap();
    let admin = &operators.proposer;
    let outlier = json!({"payee_id": payee, "amount_minor": 900_000, "currency": "AUD",
                         "reference": "OWN"});
    let (status, held) = admin
        .post(&format!("/v1/ledgers/{ledger}/payments"), &outlier)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{held}");
    assert_eq!(held["status"], "held_for_review", "{held}");
    let release = format!("/v1/ledgers/{ledger}/anomalies/{}/release", id(&held));
    let reason = json!({"reason": "it is fine, I submitted it"});
    let (status, problem) = admin.post(&release, &reason).await.unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert_eq!(problem["code"], "self_review", "{problem}");

    // A different reviewer may release it.
    let reviewer = stack
        .enrolled_operator(admin, ledger, "other.reviewer", &["approver"])
        .await
        .unwrap();
    let (status, released) = reviewer.post(&release, &reason).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{released}");
    stack.stop().await.unwrap();
}

/// A payment held for review whose payee is removed meanwhile cannot be released: the
/// allow-list no longer vouches for the account. It can still be rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_payment_to_a_removed_payee_is_not_released() {
    let stack = stack().await;
    let ledger = stack.create_ledger("anomaly-removed").await.unwrap();
    let payee = stack
        .add_payee(ledger, "Gone Plumbing", "062-000", "00054321")
        .await
        .unwrap();
    for _ in 0..3 {
        let body = pay(&stack, ledger, payee, 10_000).await;
        stack
            .wait_status(ledger, &id(&body), &["receipted"])
            .await
            .unwrap();
    }
    let held = pay(&stack, ledger, payee, 900_000).await;
    assert_eq!(held["status"], "held_for_review", "{held}");
    stack
        .remove_payee(ledger, payee, "account closed")
        .await
        .unwrap();

    let operators = stack.operators(ledger).await.unwrap();
    let reviewer = &operators.approver;
    let reason = json!({"reason": "looked fine before the removal"});
    let release = format!("/v1/ledgers/{ledger}/anomalies/{}/release", id(&held));
    let (status, problem) = reviewer.post(&release, &reason).await.unwrap();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["code"], "payee_not_listed", "{problem}");
    let rejection = format!("/v1/ledgers/{ledger}/anomalies/{}/rejection", id(&held));
    let (status, rejected) = reviewer.post(&rejection, &reason).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{rejected}");
    settle().await;
    let (_, payment) = stack
        .get(&format!("/v1/ledgers/{ledger}/payments/{}", id(&held)))
        .await
        .unwrap();
    assert_ne!(payment["status"], "receipted", "{payment}");
    stack.stop().await.unwrap();
}
