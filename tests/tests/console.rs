//! The operator console in headless Chromium, driven over WebDriver against a real
//! server: sign-in with TOTP enrolment, chain status, approving an allow-list proposal
//! with a step-up code, the audit trail, the dead-letter queue and the controls.
//!
//! Needs Debian's `chromium` and `chromium-driver` packages (or `FOLIO_CHROMIUM` and
//! `FOLIO_CHROMEDRIVER`). Without them the test prints that it was skipped; with `CI` set it
//! fails instead. Screenshots go to `FOLIO_CONSOLE_SCREENSHOTS` when set (the ones in
//! docs/console/ come from there), else to a temporary directory.

use std::path::PathBuf;

use domain::mfa::TotpSecret;
use folio_e2e::clock::ManualClock;
use folio_e2e::harness::{Stack, OPERATOR_PASSWORD};
use folio_e2e::webdriver::{browser_paths, Browser};
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

/// Returns the browser and driver paths, or `None` (after saying why) when they are
/// missing outside CI.
fn browser_or_skip() -> Option<(PathBuf, PathBuf)> {
    let (chromium, chromedriver) = browser_paths();
    if chromium.exists() && chromedriver.exists() {
        return Some((chromium, chromedriver));
    }
    let why = format!(
        "console test needs {} and {} (apt install chromium chromium-driver)",
        chromium.display(),
        chromedriver.display()
    );
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("SKIPPED: {why}");
    None
}

fn screenshot_dir() -> (PathBuf, Option<tempfile::TempDir>) {
    match std::env::var_os("FOLIO_CONSOLE_SCREENSHOTS") {
        Some(dir) => (PathBuf::from(dir), None),
        None => {
            let temp = tempfile::tempdir().unwrap();
            (temp.path().to_owned(), Some(temp))
        }
    }
}

/// The code an authenticator app shows at the server's current time.
fn code_now(secret: &TotpSecret, clock: &ManualClock) -> String {
    secret
        .code_at_time(clock.unix_seconds())
        .as_str()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_works_the_console_with_totp_and_step_up() {
    let Some((chromium, chromedriver)) = browser_or_skip() else {
        return;
    };
    let (shots, _keep) = screenshot_dir();
    let clock = ManualClock::starting_now();
    let stack = Stack::start_with_clock(
        |config| {
            config.checkpoints.every_events = 8;
            // Only the amount rule, so the other payments of the story go straight out.
            config.anomalies.enabled = true;
            config.anomalies.new_payee_seconds = 0;
            config.anomalies.quiet_start_hour = 0;
            config.anomalies.quiet_end_hour = 0;
            config.anomalies.burst_count = 1_000;
        },
        clock.clone(),
    )
    .await
    .unwrap();
    let ledger = stack.create_ledger("console").await.unwrap();
    let payee = stack
        .add_payee(ledger, "Ann Lee", "062-000", "12345678")
        .await
        .unwrap();
    let operators = stack.operators(ledger).await.unwrap();
    let admin = &operators.proposer;
    let reviewer = admin
        .create_operator(
            ledger,
            "console.reviewer",
            OPERATOR_PASSWORD,
            &["approver", "dlq-operator"],
        )
        .await
        .unwrap();
    let proposal = admin
        .propose(
            &format!("/v1/ledgers/{ledger}/payees"),
            &json!({"name": "Bea Cole", "bsb": "083-004", "account": "55501234"}),
        )
        .await
        .unwrap();
    let proposal_id = proposal["proposal_id"].as_str().unwrap().to_owned();
    for key in ["usual-1", "usual-2", "usual-3"] {
        let (status, body) = stack.pay(ledger, payee, json!(10_000), key).await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id = body["payment_id"].as_str().unwrap();
        stack.wait_status(ledger, id, &["receipted"]).await.unwrap();
    }
    let parked = park_a_payment(&stack, ledger, payee).await;
    let (status, body) = stack
        .pay(ledger, payee, json!(500_000), "outlier")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let outlier = body["payment_id"].as_str().unwrap().to_owned();
    stack
        .wait_status(ledger, &outlier, &["held_for_review"])
        .await
        .unwrap();
    let retry = json!({"payment_ids": [parked], "reason": "bank is back"});
    let (status, decision) = admin
        .post(&format!("/v1/ledgers/{ledger}/dlq/retries"), &retry)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "{decision}");
    let decision_id = decision["decision_id"].as_str().unwrap().to_owned();
    let (status, body) = stack
        .post(
            &format!("/v1/ledgers/{ledger}/controls/runs"),
            "controls-1",
            &json!({}),
        )
        .await
        .unwrap();
    assert!(status.is_success(), "{body}");

    // The continuous verifier `folio serve` runs, so the status shows a verified head.
    let (stop_verifier, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(api::verification::run(
        stack.state.store.clone(),
        std::time::Duration::from_millis(200),
        api::verification::Verification::new(1),
        stopped,
    ));

    let browser = Browser::start(&chromium, &chromedriver).await.unwrap();
    browser
        .goto(&format!("{}/console/?ledger={ledger}", stack.base))
        .await
        .unwrap();

    // Sign in with the password, then enrol TOTP from the page's own secret.
    browser
        .type_into("#sign-in input[name=username]", "console.reviewer")
        .await
        .unwrap();
    browser
        .type_into("#sign-in input[name=password]", OPERATOR_PASSWORD)
        .await
        .unwrap();
    browser
        .screenshot(&shots.join("sign-in.png"))
        .await
        .unwrap();
    browser.click("#sign-in button[type=submit]").await.unwrap();
    let secret_text = browser.text("#enrol-secret").await.unwrap();
    let secret_bytes = domain::mfa::base32::decode(&secret_text).unwrap();
    let secret = TotpSecret::from_bytes(secret_bytes).unwrap();
    let recovery = browser.text("#recovery-codes").await.unwrap();
    let first_recovery = recovery
        .lines()
        .map(str::trim)
        .find(|line| line.len() == 24 && line.matches('-').count() == 4)
        .unwrap()
        .to_owned();
    browser
        .type_into("#enrol input[name=totp]", &code_now(&secret, &clock))
        .await
        .unwrap();
    browser
        .type_into("#enrol input[name=recovery]", &first_recovery)
        .await
        .unwrap();
    browser.screenshot(&shots.join("enrol.png")).await.unwrap();
    browser.click("#enrol button[type=submit]").await.unwrap();

    // Chain status: head, verification, read models and the last checkpoint.
    let mut status_text = browser
        .wait_for_text("#chain-status", "Head: position")
        .await
        .unwrap();
    for attempt in 0..50 {
        if status_text.contains("verified to position") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        browser
            .go_to_view(&format!("#/status?{attempt}"))
            .await
            .unwrap();
        status_text = browser
            .wait_for_text("#chain-status", "Head: position")
            .await
            .unwrap();
    }
    assert!(
        status_text.contains("verified to position"),
        "{status_text}"
    );
    assert!(
        status_text.contains("Last signed checkpoint: "),
        "{status_text}"
    );
    // The head shown is a real position, with the hash stored there.
    let (position, hash) = shown_head(&status_text);
    let stored = stack
        .state
        .store
        .read_ledger(ledger, position, 1)
        .await
        .unwrap();
    assert_eq!(hex::encode(stored[0].hash), hash, "{status_text}");
    assert!(
        browser
            .text("#who")
            .await
            .unwrap()
            .contains("console.reviewer"),
        "the header names the operator"
    );
    browser.screenshot(&shots.join("status.png")).await.unwrap();

    // Five minutes later the factor is stale: approving requires a fresh code.
    clock.advance_seconds(301);
    browser.go_to_view("#/proposals").await.unwrap();
    let row = format!("tr[data-proposal='{proposal_id}']");
    browser.wait_for_text(&row, "Bea Cole").await.unwrap();
    browser
        .click(&format!("{row} button.approve"))
        .await
        .unwrap();
    browser
        .type_into("#step-up-code", &code_now(&secret, &clock))
        .await
        .unwrap();
    browser
        .screenshot(&shots.join("step-up.png"))
        .await
        .unwrap();
    browser.click("#step-up-submit").await.unwrap();
    browser
        .wait_for_text("#message", "Approving the proposal: done.")
        .await
        .unwrap();
    browser.wait_for_text(&row, "approved").await.unwrap();
    browser
        .screenshot(&shots.join("proposals.png"))
        .await
        .unwrap();
    let (status, book) = admin
        .get(&format!("/v1/ledgers/{ledger}/proposals"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let approved = book["proposals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["proposal_id"] == proposal_id.as_str())
        .unwrap();
    assert_eq!(approved["status"], "approved", "{approved}");
    assert_eq!(approved["approver"], reviewer.to_string(), "{approved}");

    // The approval is in the audit trail under the reviewer's name.
    browser.go_to_view("#/audit").await.unwrap();
    browser
        .type_into("#audit-filter input[name=actor]", &reviewer.to_string())
        .await
        .unwrap();
    browser.click("#audit-filter button").await.unwrap();
    browser
        .wait_for_text("#audit-table", "allowlist.change_approved")
        .await
        .unwrap();
    browser.screenshot(&shots.join("audit.png")).await.unwrap();

    // The parked payment: viewing it is recorded; the administrator's retry is approved
    // here by a second person, and the bank books the payment once.
    browser.go_to_view("#/dlq").await.unwrap();
    let parked_row = format!("tr[data-payment='{parked}']");
    browser
        .wait_for_text(&parked_row, "250.00 AUD")
        .await
        .unwrap();
    browser
        .click(&format!("{parked_row} button.view"))
        .await
        .unwrap();
    browser
        .wait_for_text("#dlq-view-recorded", "recorded in the ledger at position")
        .await
        .unwrap();
    let booked_before = stack.sim.ledger_stats().distinct_payments;
    let decision_row = format!("tr[data-decision='{decision_id}']");
    browser
        .wait_for_text(&decision_row, "pending")
        .await
        .unwrap();
    browser.screenshot(&shots.join("dlq.png")).await.unwrap();
    browser
        .click(&format!("{decision_row} button.approve"))
        .await
        .unwrap();
    browser
        .wait_for_text("#message", "Approving the decision: done.")
        .await
        .unwrap();
    stack
        .wait_status(ledger, &parked, &["receipted"])
        .await
        .unwrap();
    assert_eq!(
        stack.sim.ledger_stats().distinct_payments,
        booked_before + 1
    );
    let viewed = stack
        .state
        .store
        .read_ledger(ledger, 0, 10_000)
        .await
        .unwrap();
    let viewers: Vec<_> = viewed
        .iter()
        .filter(|event| event.event_type == "dlq.item_viewed")
        .map(|event| event.actor.id.clone())
        .collect();
    assert_eq!(viewers, [reviewer.to_string()]);
    browser.go_to_view("#/dlq?after").await.unwrap();
    browser
        .wait_for_text(&decision_row, "approved")
        .await
        .unwrap();
    browser
        .screenshot(&shots.join("dlq-approved.png"))
        .await
        .unwrap();

    // The held outlier: the reviewer reads the explanation and releases it to the bank.
    browser.go_to_view("#/anomalies").await.unwrap();
    let card = format!("div.anomaly[data-payment='{outlier}']");
    let explanation = browser
        .wait_for_text(&card, "amount_above_usual")
        .await
        .unwrap();
    assert!(
        explanation.contains("100.00"),
        "the median is quoted: {explanation}"
    );
    browser
        .type_into(
            &format!("{card} input[name=reason]"),
            "payroll bonus confirmed by phone",
        )
        .await
        .unwrap();
    browser
        .screenshot(&shots.join("anomalies.png"))
        .await
        .unwrap();
    browser
        .click(&format!("{card} button.release"))
        .await
        .unwrap();
    browser
        .wait_for_text("#message", "Releasing the payment: done.")
        .await
        .unwrap();
    stack
        .wait_status(ledger, &outlier, &["receipted"])
        .await
        .unwrap();
    let events = stack
        .state
        .store
        .read_ledger(ledger, 0, 10_000)
        .await
        .unwrap();
    let flag = events
        .iter()
        .find(|event| event.event_type == "payment.flagged")
        .unwrap();
    let review = events
        .iter()
        .find(|event| event.event_type == "payment.reviewed")
        .unwrap();
    assert_eq!(
        review.causation_id,
        Some(flag.event_id),
        "the decision links to the flag"
    );
    assert_eq!(review.actor.id, reviewer.to_string());

    // Analytics count the decision.
    browser.go_to_view("#/analytics").await.unwrap();
    browser
        .wait_for_text("#analytics-summary", "1 released")
        .await
        .unwrap();
    browser
        .screenshot(&shots.join("analytics.png"))
        .await
        .unwrap();

    browser.go_to_view("#/controls").await.unwrap();
    browser
        .wait_for_text("#view-controls", "step_up_fresh")
        .await
        .unwrap();
    browser
        .screenshot(&shots.join("controls.png"))
        .await
        .unwrap();

    // Signing out revokes the session on the server.
    browser.click("#sign-out").await.unwrap();
    browser.find("#sign-in").await.unwrap();
    drop(browser);
    stop_verifier.send(true).unwrap();
    stack.stop().await.unwrap();
}

/// Reads "Head: position N, hash H" from the status card.
fn shown_head(text: &str) -> (u64, String) {
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix("Head: position "))
        .unwrap_or_else(|| panic!("no head line in {text:?}"));
    let (position, hash) = line.split_once(", hash ").unwrap();
    (position.parse().unwrap(), hash.trim().to_owned())
}

/// Parks a payment in the dead-letter queue: the bank fails every attempt.
async fn park_a_payment(stack: &Stack, ledger: Uuid, payee: Uuid) -> String {
    stack.sim.set_fault(api::bank::sim::FaultMode::Fail, None);
    let (status, body) = stack
        .pay(ledger, payee, json!(25_000), "console-parked")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let payment = body["payment_id"].as_str().unwrap().to_owned();
    stack
        .wait_status(ledger, &payment, &["dead_lettered"])
        .await
        .unwrap();
    stack.sim.set_fault(api::bank::sim::FaultMode::Ok, None);
    payment
}
