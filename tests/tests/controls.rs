//! Control runs: evaluated from the ledger, recorded as signed events, read back over HTTP.

use domain::controls::{ControlPolicy, ControlStatus};
use folio_e2e::harness::Stack;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn post_run(stack: &Stack, ledger: uuid::Uuid) -> (StatusCode, Value) {
    let response = stack
        .http
        .post(format!("{}/v1/ledgers/{ledger}/controls/runs", stack.base))
        .bearer_auth(&stack.token)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_is_recorded_and_read_back() {
    let stack = Stack::start().await.unwrap();
    let ledger = stack.create_ledger("controls").await.unwrap();
    let payee = stack
        .add_payee(ledger, "Ann Lee", "062-000", "12345678")
        .await
        .unwrap();
    stack.pay(ledger, payee, json!(100), "c-1").await.unwrap();

    let (status, run) = post_run(&stack, ledger).await;

    assert_eq!(status, StatusCode::CREATED, "{run}");
    assert_eq!(run["passed"], true, "{run}");
    let statuses: Vec<(&str, &str)> = run["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["control"].as_str().unwrap(),
                r["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("chain_verifies", "pass"),
            ("chain_to_checkpoint", "not_applicable"),
            ("signing_key_age", "pass"),
            ("no_secrets_in_events", "pass"),
            ("no_secrets_in_logs", "not_applicable"),
            ("step_up_fresh", "pass"),
            ("totp_step_unique", "pass"),
            ("dual_approval", "pass"),
        ]
    );

    let (status, latest) = stack
        .get(&format!("/v1/ledgers/{ledger}/controls/runs/latest"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{latest}");
    assert_eq!(latest["position"], run["position"]);
    assert_eq!(latest["results"], run["results"]);

    let events = stack
        .state
        .store
        .read_ledger(ledger, 0, 1_000)
        .await
        .unwrap();
    let recorded = events
        .iter()
        .find(|event| event.event_type == "controls.run_recorded")
        .expect("the run is an event");
    assert_eq!(Some(recorded.position), run["position"].as_u64());
    assert_eq!(recorded.stream_id, "controls");

    let metrics = stack
        .http
        .get(format!("{}/metrics", stack.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = format!("folio_control_failed{{ledger=\"{ledger}\",control=\"chain_verifies\"}} 0");
    assert!(metrics.contains(&line), "{line} missing");

    let dir = stack.stop().await.unwrap();
    let verdicts = api::cli::verify::verify_store(&dir.path().join("data"), Some(ledger))
        .await
        .unwrap();
    assert!(
        verdicts[0].result.is_ok(),
        "the ledger with its control run verifies"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_signing_key_fails_control() {
    let stack = Stack::start().await.unwrap();
    let ledger = stack.create_ledger("key-age").await.unwrap();
    let policy = ControlPolicy {
        max_signing_key_age_micros: 0,
    };
    let now = stack.state.clock.now_micros() + 1;

    let backend = stack.state.store.backend().as_ref();
    let run = api::controls::evaluate(backend, ledger, policy, now, None)
        .await
        .unwrap()
        .unwrap();

    let key_age = run
        .results
        .iter()
        .find(|result| result.control == "signing_key_age")
        .unwrap();
    assert_eq!(key_age.status, ControlStatus::Fail, "{}", key_age.detail);
    assert!(key_age.detail.contains("rotate"), "{}", key_age.detail);
    assert!(!run.passed());
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_on_unknown_ledger_is_404() {
    let stack = Stack::start().await.unwrap();

    let (status, body) = post_run(&stack, uuid::Uuid::now_v7()).await;

    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    stack.stop().await.unwrap();
}
