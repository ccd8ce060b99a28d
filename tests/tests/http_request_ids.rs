//! Request and correlation ids: echoed in responses and stamped on the recorded events.

use folio_e2e::harness::Stack;
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

#[tokio::test]
async fn client_correlation_id_reaches_event() {
    let stack = Stack::start().await.unwrap();
    let ledger = stack.create_ledger("ids").await.unwrap();
    let payee = stack
        .add_payee(ledger, "Ann Lee", "062-000", "12345678")
        .await
        .unwrap();
    let correlation_id = Uuid::now_v7();

    let response = stack
        .http
        .post(format!("{}/v1/ledgers/{ledger}/payments", stack.base))
        .bearer_auth(&stack.token)
        .header("Idempotency-Key", "ids-1")
        .header("X-Correlation-Id", correlation_id.to_string())
        .json(
            &json!({"payee_id": payee, "amount_minor": 500, "currency": "AUD",
                      "reference": "IDS"}),
        )
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::CREATED);
    let echoed = response.headers()["x-correlation-id"].to_str().unwrap();
    assert_eq!(echoed, correlation_id.to_string());
    let request_id = response.headers()["x-request-id"].to_str().unwrap();
    assert!(Uuid::parse_str(request_id).is_ok(), "{request_id}");
    let events = stack
        .state
        .store
        .read_ledger(ledger, 0, 1_000)
        .await
        .unwrap();
    let submitted = events
        .iter()
        .find(|event| event.event_type == "payment.submitted")
        .expect("payment.submitted recorded");
    assert_eq!(submitted.correlation_id, correlation_id);
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn request_without_correlation_id_gets_one() {
    let stack = Stack::start().await.unwrap();

    let response = stack
        .http
        .get(format!("{}/healthz", stack.base))
        .send()
        .await
        .unwrap();

    let request_id = response.headers()["x-request-id"].to_str().unwrap();
    let correlation_id = response.headers()["x-correlation-id"].to_str().unwrap();
    assert_eq!(request_id, correlation_id);
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn malformed_correlation_id_is_rejected() {
    let stack = Stack::start().await.unwrap();

    let response = stack
        .http
        .get(format!("{}/healthz", stack.base))
        .header("X-Correlation-Id", "not-a-uuid")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("X-Correlation-Id"),
        "{body}"
    );
    stack.stop().await.unwrap();
}
