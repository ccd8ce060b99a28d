//! Operators use the same payment and read routes as API tokens, within their roles'
//! scopes and their own ledger, and their events name them as the actor.

use domain::record::ActorKind;
use folio_e2e::harness::Stack;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_submits_and_reads_within_scopes() {
    let stack = Stack::start().await.unwrap();
    let ledger = stack.create_ledger("operator-access").await.unwrap();
    let other_ledger = stack.create_ledger("someone-else").await.unwrap();
    let payee = stack
        .add_payee(ledger, "Ann Lee", "062-000", "12345678")
        .await
        .unwrap();
    let operators = stack.operators(ledger).await.unwrap();
    let admin = &operators.proposer;
    let viewer = stack
        .enrolled_operator(admin, ledger, "view.only", &["viewer"])
        .await
        .unwrap();
    let payment = json!({"payee_id": payee, "amount_minor": 900, "currency": "AUD",
                         "reference": "OPS"});

    // The administrator's session submits a payment, recorded under the operator.
    let (status, body) = admin
        .post(&format!("/v1/ledgers/{ledger}/payments"), &payment)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let events = stack
        .state
        .store
        .read_ledger(ledger, 0, 1_000)
        .await
        .unwrap();
    let submitted = events
        .iter()
        .find(|event| event.event_type == "payment.submitted")
        .unwrap();
    assert_eq!(submitted.actor.kind, ActorKind::Operator);

    // A viewer reads payments and the audit trail but cannot submit.
    let (status, body) = viewer
        .get(&format!("/v1/ledgers/{ledger}/payments"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = viewer
        .get(&format!("/v1/ledgers/{ledger}/audit"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = viewer
        .post(&format!("/v1/ledgers/{ledger}/payments"), &payment)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("payments:submit"),
        "{body}"
    );

    // No operator reaches another ledger.
    let (status, body) = admin
        .get(&format!("/v1/ledgers/{other_ledger}/payments"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    stack.stop().await.unwrap();
}
