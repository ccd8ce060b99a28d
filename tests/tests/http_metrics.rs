//! `/metrics`: the families operators alert on are present, and promtool accepts the text.

use std::io::Write;
use std::process::{Command, Stdio};

use folio_e2e::harness::Stack;
use serde_json::json;

async fn scrape(stack: &Stack) -> String {
    stack
        .http
        .get(format!("{}/metrics", stack.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn metrics_cover_append_projection_and_dlq() {
    let stack = Stack::start().await.unwrap();
    let ledger = stack.create_ledger("metrics").await.unwrap();
    let payee = stack
        .add_payee(ledger, "Ann Lee", "062-000", "12345678")
        .await
        .unwrap();
    let (status, body) = stack
        .pay(ledger, payee, json!(700), "metrics-1")
        .await
        .unwrap();
    assert!(status.is_success(), "{status} {body}");

    let text = scrape(&stack).await;

    for family in [
        "folio_append_duration_seconds_bucket",
        "folio_append_events_count",
        "folio_bank_call_duration_seconds_bucket",
        "folio_log_lines_dropped_total",
        "folio_mfa_challenges_total{outcome=\"passed\"}",
        "folio_mfa_lockouts_total",
        "folio_recovery_codes_used_total",
    ] {
        assert!(text.contains(family), "{family} missing from:\n{text}");
    }
    for family in [
        "folio_chain_head_position",
        "folio_projection_lag_events",
        "folio_projection_stopped",
        "folio_dlq_depth",
        "folio_approvals_pending",
        "folio_dlq_decisions_pending",
    ] {
        let labelled = format!("{family}{{ledger=\"{ledger}\"}}");
        assert!(text.contains(&labelled), "{labelled} missing from:\n{text}");
    }
    // A single node holds the lease of every ledger.
    let leased = format!("folio_ledger_lease_held{{ledger=\"{ledger}\"}} 1\n");
    assert!(text.contains(&leased), "{leased} missing from:\n{text}");
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn promtool_accepts_metrics_text() {
    let Some(promtool) = promtool() else {
        return;
    };
    let stack = Stack::start().await.unwrap();
    stack.create_ledger("promtool").await.unwrap();
    let text = scrape(&stack).await;

    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();

    let report = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "promtool rejected /metrics:\n{report}\n{text}"
    );
    stack.stop().await.unwrap();
}

/// Finds `promtool`. Without it the test is skipped with a message, except under CI
/// (`CI` set), where `.ci/run` installs it and its absence is a failure.
fn promtool() -> Option<&'static str> {
    let found = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if found {
        return Some("promtool");
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "promtool is not installed; .ci/run installs it (Debian package prometheus)"
    );
    eprintln!("skipped: promtool is not installed (Debian package prometheus)");
    None
}
