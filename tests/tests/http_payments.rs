//! Payments over real HTTP, dispatched to the bank simulator over real mutual TLS.

use folio_e2e::harness::Stack;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

async fn ledger_with_payee(stack: &Stack) -> (Uuid, Uuid) {
    let ledger = stack.create_ledger("acme-payroll").await.unwrap();
    let payee = stack
        .add_payee(ledger, "Jane Citizen", "062-000", "00012345")
        .await
        .unwrap();
    (ledger, payee)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_is_dispatched_and_receipted() {
    let stack = Stack::start().await.unwrap();
    let (ledger, payee) = ledger_with_payee(&stack).await;

    let (status, body) = stack
        .pay(ledger, payee, json!(12_345), "pay-1")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(body["position"].as_u64().is_some(), "{body}");
    let payment = body["payment_id"].as_str().unwrap().to_owned();

    let done = stack
        .wait_status(ledger, &payment, &["receipted"])
        .await
        .unwrap();
    assert_eq!(done["amount_minor"], 12_345);
    assert!(
        done["bank_reference"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{done}"
    );
    assert_eq!(stack.sim.ledger_stats().distinct_payments, 1);

    let path = format!("/v1/ledgers/{ledger}/audit?stream=payment-{payment}");
    let (status, audit) = stack.get(&path).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let types: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "payment.submitted",
            "payment.dispatch_attempted",
            "payment.receipt_recorded"
        ]
    );
    let actors: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["actor_id"].as_str().unwrap())
        .collect();
    assert_eq!(actors, ["e2e-client", "dispatcher", "dispatcher"]);
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_with_same_key_returns_original() {
    let stack = Stack::start().await.unwrap();
    let (ledger, payee) = ledger_with_payee(&stack).await;

    let first = stack
        .pay(ledger, payee, json!(500), "same-key")
        .await
        .unwrap();
    let again = stack
        .pay(ledger, payee, json!(500), "same-key")
        .await
        .unwrap();
    assert_eq!(first.0, StatusCode::CREATED);
    assert_eq!(again.0, StatusCode::CREATED);
    assert_eq!(
        first.1, again.1,
        "a replay must return the original body, position included"
    );

    let changed = stack
        .pay(ledger, payee, json!(501), "same-key")
        .await
        .unwrap();
    assert_eq!(changed.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(changed.1["code"], "idempotency_key_reused");
    let detail = changed.1["detail"].as_str().unwrap();
    assert!(
        detail.contains("`amount_minor` was 500, now 501"),
        "{detail}"
    );
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_same_key_pays_once() {
    let stack = Stack::start().await.unwrap();
    let (ledger, payee) = ledger_with_payee(&stack).await;

    let requests = (0..8).map(|_| stack.pay(ledger, payee, json!(777), "in-flight"));
    let responses = futures_join_all(requests).await;
    let ids: std::collections::BTreeSet<String> = responses
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, StatusCode::CREATED, "{body}");
            body["payment_id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        ids.len(),
        1,
        "eight concurrent requests with one key made {} payments",
        ids.len()
    );

    let payment = ids.into_iter().next().unwrap();
    stack
        .wait_status(ledger, &payment, &["receipted"])
        .await
        .unwrap();
    let (_, list) = stack
        .get(&format!("/v1/ledgers/{ledger}/payments"))
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(stack.sim.ledger_stats().distinct_payments, 1);
    stack.stop().await.unwrap();
}

async fn futures_join_all<F: std::future::Future<Output = anyhow::Result<(StatusCode, Value)>>>(
    futures: impl Iterator<Item = F>,
) -> Vec<(StatusCode, Value)> {
    let mut handles = Vec::new();
    for future in futures {
        handles.push(future);
    }
    let mut out = Vec::new();
    let joined = futures::future::join_all(handles).await;
    for result in joined {
        out.push(result.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_amounts_are_rejected_with_codes() {
    let stack = Stack::start_with(|config| config.payments.max_amount_minor = 1_000_000)
        .await
        .unwrap();
    let (ledger, payee) = ledger_with_payee(&stack).await;
    let cases = [
        (json!(10.5), "fraction"),
        (json!(0), "zero"),
        (json!(-5), "negative"),
        (json!("100"), "string"),
        (json!(1_000_001), "over limit"),
    ];
    for (amount, name) in cases {
        let (status, body) = stack
            .pay(ledger, payee, amount.clone(), &format!("bad-{name}"))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{name}: {body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(!detail.is_empty(), "{name}: {body}");
        assert!(
            body["code"].as_str().unwrap().starts_with("amount_"),
            "{name}: {body}"
        );
    }
    let (_, list) = stack
        .get(&format!("/v1/ledgers/{ledger}/payments?status=submitted"))
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
    // A misspelt filter is refused by name instead of listing every payment.
    let (status, body) = stack
        .get(&format!("/v1/ledgers/{ledger}/payments?stauts=submitted"))
        .await
        .unwrap();
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("stauts"),
        "{body}"
    );
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payee_not_allow_listed_is_recorded() {
    let stack = Stack::start().await.unwrap();
    let (ledger, _) = ledger_with_payee(&stack).await;

    let stranger = Uuid::now_v7();
    let (status, body) = stack
        .pay(ledger, stranger, json!(100), "stranger")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["code"], "payee_not_allow_listed");
    let position = body["position"]
        .as_u64()
        .expect("a rejection is recorded at a position");

    let (_, again) = stack
        .pay(ledger, stranger, json!(100), "stranger")
        .await
        .unwrap();
    assert_eq!(again, body, "the rejection is replayed, not decided again");

    let (_, audit) = stack
        .get(&format!(
            "/v1/ledgers/{ledger}/audit?event_type=payment.rejected&min_position={position}"
        ))
        .await
        .unwrap();
    assert_eq!(audit["items"].as_array().unwrap().len(), 1);
    assert_eq!(stack.sim.ledger_stats().calls, 0);

    let payment = body["payment_id"].as_str().unwrap();
    let (_, view) = stack
        .get(&format!(
            "/v1/ledgers/{ledger}/payments/{payment}?min_position={position}"
        ))
        .await
        .unwrap();
    assert_eq!(view["status"], "rejected", "{view}");
    assert_eq!(
        view["amount_minor"], 100,
        "the rejection keeps what was requested"
    );
    assert_eq!(view["payee_id"], stranger.to_string());
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_payee_cannot_be_paid() {
    let stack = Stack::start().await.unwrap();
    let (ledger, payee) = ledger_with_payee(&stack).await;
    let operators = stack.operators(ledger).await.unwrap();
    let path = format!("/v1/ledgers/{ledger}/payees/{payee}/removal");
    let proposal = operators
        .proposer
        .propose(&path, &json!({"reason": "left company"}))
        .await
        .unwrap();
    let approved = operators.approver.approve(ledger, &proposal).await.unwrap();
    assert_eq!(approved["status"], "approved", "{approved}");
    // Nothing becomes payable through a removal.
    assert!(approved["payable_from_micros"].is_null(), "{approved}");

    let (status, body) = stack
        .pay(ledger, payee, json!(100), "after-removal")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["code"], "payee_not_allow_listed");
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_bank_parks_payment_in_dlq() {
    let stack = Stack::start().await.unwrap();
    let (ledger, payee) = ledger_with_payee(&stack).await;
    stack.sim.set_fault(api::bank::sim::FaultMode::Fail, None);

    let (_, body) = stack
        .pay(ledger, payee, json!(4_200), "doomed")
        .await
        .unwrap();
    let payment = body["payment_id"].as_str().unwrap().to_owned();
    let parked = stack
        .wait_status(ledger, &payment, &["dead_lettered"])
        .await
        .unwrap();
    assert_eq!(parked["attempts"], 3);

    let (_, dlq) = stack
        .get(&format!("/v1/ledgers/{ledger}/dlq"))
        .await
        .unwrap();
    let items = dlq["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["payment_id"], payment.as_str());

    let (_, audit) = stack
        .get(&format!("/v1/ledgers/{ledger}/audit?stream=payment-{payment}&event_type=payment.dispatch_attempted"))
        .await
        .unwrap();
    assert_eq!(
        audit["items"].as_array().unwrap().len(),
        3,
        "one event per attempt"
    );
    assert_eq!(stack.sim.ledger_stats().distinct_payments, 0);
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_then_retry_pays_once() {
    let stack = Stack::start().await.unwrap();
    let (ledger, payee) = ledger_with_payee(&stack).await;
    stack
        .sim
        .set_fault(api::bank::sim::FaultMode::Slow { delay_ms: 1_200 }, Some(1));

    let (_, body) = stack
        .pay(ledger, payee, json!(9_900), "slow")
        .await
        .unwrap();
    let payment = body["payment_id"].as_str().unwrap().to_owned();
    let done = stack
        .wait_status(ledger, &payment, &["receipted"])
        .await
        .unwrap();
    assert!(done["attempts"].as_u64().unwrap() >= 2, "{done}");

    // The slow call still completes at the bank after the client gave up.
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    let stats = stack.sim.ledger_stats();
    assert!(stats.calls >= 2, "the bank saw {} calls", stats.calls);
    assert_eq!(
        stats.distinct_payments, 1,
        "a retry after a timeout must not pay twice"
    );
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_token_or_scope_fail() {
    let stack = Stack::start().await.unwrap();
    let response = stack
        .http
        .get(format!("{}/v1/ledgers", stack.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "unauthenticated");

    let scopes = api::auth::parse_scopes("payments:read").unwrap();
    let reader = stack
        .state
        .tokens
        .issue("reader", &scopes, None, 0)
        .await
        .unwrap();
    let response = stack
        .http
        .post(format!("{}/v1/ledgers", stack.base))
        .bearer_auth(reader)
        .header("Idempotency-Key", "k")
        .json(&json!({"tenant": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body: Value = response.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("ledgers:create"));

    let response = stack
        .http
        .post(format!("{}/v1/ledgers", stack.base))
        .bearer_auth(&stack.token)
        .json(&json!({"tenant": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "idempotency_key_missing");
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_method_gets_405_with_allow() {
    let stack = Stack::start().await.unwrap();
    let (ledger, _) = ledger_with_payee(&stack).await;

    // The route exists for POST only: 405 names the methods, in the header and the body.
    let (status, body) = stack
        .get(&format!("/v1/ledgers/{ledger}/bundles"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    assert_eq!(body["code"], "method_not_allowed", "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("use POST"),
        "{body}"
    );
    let response = stack
        .http
        .delete(format!("{}/v1/ledgers/{ledger}/payments", stack.base))
        .bearer_auth(&stack.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["allow"], "GET, POST");

    // A path that is no route at all stays 404.
    let (status, body) = stack.get("/v1/ledgerz").await.unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_check_ledger_and_position() {
    let stack = Stack::start().await.unwrap();
    let (ledger, _) = ledger_with_payee(&stack).await;

    let unknown = Uuid::now_v7();
    for path in ["payments", "payees", "dlq", "audit"] {
        let (status, body) = stack
            .get(&format!("/v1/ledgers/{unknown}/{path}"))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
    }

    let (status, body) = stack
        .get(&format!(
            "/v1/ledgers/{ledger}/payments?min_position=100000"
        ))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("beyond the head"),
        "{body}"
    );
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_name_the_fix() {
    let stack = Stack::start().await.unwrap();
    let (ledger, payee) = ledger_with_payee(&stack).await;

    let long_key = "k".repeat(300);
    let (status, body) = stack
        .pay(ledger, payee, json!(100), &long_key)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "idempotency_key_invalid");
    assert!(
        body["detail"].as_str().unwrap().contains("300 bytes"),
        "{body}"
    );

    let huge = json!({"payee_id": payee, "amount_minor": 1, "currency": "AUD", "reference": "x".repeat(100_000)});
    let (status, body) = stack
        .post(&format!("/v1/ledgers/{ledger}/payments"), "huge", &huge)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["code"], "body_too_large");

    let too_big_for_server = vec![b'0'; 9 * 1024 * 1024];
    let path = format!("/v1/ledgers/{ledger}/payments/batches");
    let (status, body) = stack
        .post_bytes(&path, "big-file", too_big_for_server)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["code"], "body_too_large");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("server.max_body_bytes"),
        "{body}"
    );
    stack.stop().await.unwrap();
}

/// While a database password secret is stale, no dispatch attempt starts, because it
/// would call the bank and record the attempt on a credential the secrets provider no
/// longer serves. The payment goes once the secret is read again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_database_secret_pauses_dispatch() {
    let stack = Stack::start_with(|config| {
        config.bank.max_attempts = 6;
        config.bank.backoff_base_ms = 200;
        config.bank.backoff_max_ms = 200;
    })
    .await
    .unwrap();
    let (ledger, payee) = ledger_with_payee(&stack).await;
    stack.sim.set_fault(api::bank::sim::FaultMode::Fail, None);
    let (status, body) = stack.pay(ledger, payee, json!(700), "stale").await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let payment = body["payment_id"].as_str().unwrap().to_owned();
    let started = std::time::Instant::now();
    while stack.sim.ledger_stats().calls == 0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "bank never called"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    let setting = "store.password_secret";
    stack
        .state
        .secret_health
        .fail(setting, "secrets provider unreachable".to_owned());
    let (status, body) = stack
        .pay(ledger, payee, json!(700), "during")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    // An attempt already past the check may still finish; after that the count stays.
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let paused_at = stack.sim.ledger_stats().calls;
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    let paused = stack.sim.ledger_stats().calls;
    assert_eq!(
        paused, paused_at,
        "the bank was called while the secret was stale"
    );
    assert!(paused < 6, "every attempt was spent while stale: {paused}");

    stack.sim.set_fault(api::bank::sim::FaultMode::Ok, None);
    stack.state.secret_health.recover(setting);
    stack
        .wait_status(ledger, &payment, &["receipted"])
        .await
        .unwrap();
    assert_eq!(stack.sim.ledger_stats().calls, paused + 1);
    stack.stop().await.unwrap();
}
