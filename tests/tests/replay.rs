//! Auditor replay: history, point-in-time state and diffs over a ledger with a known
//! story, read from the stopped store and from an export file.
//!
//! The story has three points. At point A, an administrator and an approver are enrolled and
//! payees Ann and Bob are added through proposals and approvals. At point B, a DLQ operator
//! exists and Ann is removed. At the head, the bank has failed and a payment to Bob was
//! parked in the dead-letter queue; the DLQ operator proposed a retry, the administrator
//! approved it, and the retry was receipted.

use std::path::Path;

use api::replay::history::{self, Causation, Filter, Format};
use api::replay::source::{self, Cutoff, EventSource};
use api::replay::state::LedgerState;
use api::store::StoreLocation;
use domain::operators::Role;
use domain::record::SealedEvent;
use folio_e2e::harness::Stack;
use serde_json::json;
use uuid::Uuid;

/// What the test recorded while it built the ledger.
struct Story {
    ledger: Uuid,
    admin: Uuid,
    approver: Uuid,
    dlq_operator: Uuid,
    ann: Uuid,
    bob: Uuid,
    payment: Uuid,
    point_a: SealedEvent,
    point_b: u64,
    /// `GET .../replay?as_of=<point B>` from the running server.
    http_state_b: serde_json::Value,
    /// `GET .../replay/diff?from=<point A>` from the running server, at the head.
    http_diff_a: serde_json::Value,
}

async fn last_event(stack: &Stack, ledger: Uuid) -> SealedEvent {
    let events = stack
        .state
        .store
        .read_ledger(ledger, 0, 100_000)
        .await
        .unwrap();
    events.last().cloned().expect("the ledger has events")
}

/// Builds the story through the HTTP API and returns it with the stopped stack's directory.
async fn build_story() -> (Story, tempfile::TempDir) {
    // The story compares the server's answers with the offline tools', which read an
    // export without the KMS; with sealed payee fields the offline side would show
    // `[encrypted]` names, so this ledger keeps them in the clear.
    let stack = Stack::start_with(|config| config.kms.seal_payee_fields = false)
        .await
        .unwrap();
    let ledger = stack.create_ledger("replay").await.unwrap();
    let ann = stack
        .add_payee(ledger, "Ann Lee", "062-000", "12345678")
        .await
        .unwrap();
    let bob = stack
        .add_payee(ledger, "Bob Ray", "083-004", "87654321")
        .await
        .unwrap();
    let operators = stack.operators(ledger).await.unwrap();
    let point_a = last_event(&stack, ledger).await;

    let dlq_operator = stack
        .enrolled_operator(&operators.proposer, ledger, "dora.dlq", &["dlq-operator"])
        .await
        .unwrap();
    stack
        .remove_payee(ledger, ann, "contract ended")
        .await
        .unwrap();
    let point_b = last_event(&stack, ledger).await.position;

    stack.sim.set_fault(api::bank::sim::FaultMode::Fail, None);
    let (_, body) = stack
        .pay(ledger, bob, json!(25_000), "parked")
        .await
        .unwrap();
    let payment = body["payment_id"].as_str().unwrap().to_owned();
    stack
        .wait_status(ledger, &payment, &["dead_lettered"])
        .await
        .unwrap();
    stack.sim.set_fault(api::bank::sim::FaultMode::Ok, None);
    retry_from_dlq(&dlq_operator, &operators.proposer, ledger, &payment).await;
    stack
        .wait_status(ledger, &payment, &["receipted"])
        .await
        .unwrap();

    let (http_state_b, http_diff_a) = http_answers(&stack, ledger, point_a.position, point_b).await;
    let story = Story {
        ledger,
        admin: operators.proposer.operator_id,
        approver: operators.approver.operator_id,
        dlq_operator: dlq_operator.operator_id,
        ann,
        bob,
        payment: payment.parse().unwrap(),
        point_a,
        point_b,
        http_state_b,
        http_diff_a,
    };
    drop(operators);
    (story, stack.stop().await.unwrap())
}

/// Proposes a retry of a parked payment as `proposer` and approves it as `approver`.
async fn retry_from_dlq(
    proposer: &api::operators::client::OperatorClient,
    approver: &api::operators::client::OperatorClient,
    ledger: Uuid,
    payment: &str,
) {
    let body = json!({"payment_ids": [payment], "reason": "bank answered again"});
    let path = format!("/v1/ledgers/{ledger}/dlq/retries");
    let (status, decision) = proposer.post(&path, &body).await.unwrap();
    assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{decision}");
    let id = decision["decision_id"].as_str().unwrap();
    let path = format!("/v1/ledgers/{ledger}/dlq-decisions/{id}/approval");
    let hash = json!({"content_hash": decision["content_hash"]});
    let (status, approved) = approver.post(&path, &hash).await.unwrap();
    assert_eq!(status, reqwest::StatusCode::OK, "{approved}");
}

/// Asks the running server for the state at B and the diff from A, and checks that a bad
/// point is rejected.
async fn http_answers(
    stack: &Stack,
    ledger: Uuid,
    point_a: u64,
    point_b: u64,
) -> (serde_json::Value, serde_json::Value) {
    let base = format!("/v1/ledgers/{ledger}/replay");
    let (status, state_b) = stack.get(&format!("{base}?as_of={point_b}")).await.unwrap();
    assert_eq!(status, reqwest::StatusCode::OK, "{state_b}");
    let (status, diff_a) = stack
        .get(&format!("{base}/diff?from={point_a}"))
        .await
        .unwrap();
    assert_eq!(status, reqwest::StatusCode::OK, "{diff_a}");
    let (status, problem) = stack.get(&format!("{base}?as_of=soon")).await.unwrap();
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{problem}");
    let reversed = format!("{base}/diff?from={point_b}&to={point_a}");
    let (status, problem) = stack.get(&reversed).await.unwrap();
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{problem}");

    // The history endpoint lists the verified events up to A, one JSON object a line.
    let history = |query: String| {
        stack
            .http
            .get(format!(
                "{}/v1/ledgers/{ledger}/history?{query}",
                stack.base
            ))
            .bearer_auth(&stack.token)
            .send()
    };
    let response = history(format!("to={point_a}")).await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let text = response.text().await.unwrap();
    let positions: Vec<u64> = text
        .lines()
        .map(|line| {
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            event["position"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(positions, (0..=point_a).collect::<Vec<_>>());
    for bad in ["from=5&to=1", "format=xml", "since=soon"] {
        let response = history(bad.to_owned()).await.unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::BAD_REQUEST, "{bad}");
    }

    // With as_of, the live queries return a past point, built from the verified chain.
    let names = |page: &serde_json::Value| -> Vec<String> {
        let items = page["items"].as_array().unwrap();
        items
            .iter()
            .map(|item| item["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let payees = format!("/v1/ledgers/{ledger}/payees");
    let (status, at_a) = stack
        .get(&format!("{payees}?as_of={point_a}"))
        .await
        .unwrap();
    assert_eq!(status, reqwest::StatusCode::OK, "{at_a}");
    assert_eq!(names(&at_a), ["Ann Lee", "Bob Ray"]);
    let (status, at_b) = stack
        .get(&format!("{payees}?as_of={point_b}"))
        .await
        .unwrap();
    assert_eq!(status, reqwest::StatusCode::OK, "{at_b}");
    assert_eq!(names(&at_b), ["Bob Ray"]);
    let both = format!("{payees}?as_of={point_b}&min_position=1");
    let (status, problem) = stack.get(&both).await.unwrap();
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{problem}");
    assert_eq!(at_b["as_of_position"], point_b);
    let dlq = format!("/v1/ledgers/{ledger}/dlq");
    let (status, parked_at_b) = stack.get(&format!("{dlq}?as_of={point_b}")).await.unwrap();
    assert_eq!(status, reqwest::StatusCode::OK, "{parked_at_b}");
    assert_eq!(parked_at_b["items"].as_array().unwrap().len(), 0);
    let (status, open_now) = stack
        .get(&format!("{dlq}?min_position={point_b}"))
        .await
        .unwrap();
    assert_eq!(status, reqwest::StatusCode::OK, "{open_now}");
    assert_eq!(open_now["items"].as_array().unwrap().len(), 0, "{open_now}");
    let (status, resolved) = stack.get(&format!("{dlq}?status=resolved")).await.unwrap();
    assert_eq!(status, reqwest::StatusCode::OK, "{resolved}");
    assert_eq!(resolved["items"].as_array().unwrap().len(), 1, "{resolved}");
    (state_b, diff_a)
}

/// Writes an export file with `folio export-ledger`, run as the binary would run it.
fn export_with_cli(data_dir: &Path, ledger: Uuid, out: &Path) {
    run_cli(&[
        "export-ledger",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--ledger",
        &ledger.to_string(),
        "--out",
        out.to_str().unwrap(),
    ]);
}

/// Runs a `folio` command on its own thread, since the command starts its own runtime.
fn run_cli(args: &[&str]) {
    use clap::Parser;
    let argv: Vec<String> = std::iter::once("folio")
        .chain(args.iter().copied())
        .map(str::to_owned)
        .collect();
    let cli = api::cli::Cli::try_parse_from(&argv).expect("valid arguments");
    let code = std::thread::spawn(move || api::cli::run(cli))
        .join()
        .expect("command thread");
    assert_eq!(
        code,
        std::process::ExitCode::SUCCESS,
        "folio {args:?} failed"
    );
}

async fn state(source: &EventSource, cutoff: Cutoff) -> LedgerState {
    api::replay::state_at(source, None, cutoff).await.unwrap()
}

fn payee_ids(state: &LedgerState) -> Vec<Uuid> {
    state
        .allow_list
        .iter()
        .map(|payee| payee.payee_id)
        .collect()
}

fn sorted(mut ids: Vec<Uuid>) -> Vec<Uuid> {
    ids.sort();
    ids
}

fn check_point_a(story: &Story, state: &LedgerState) {
    assert_eq!(state.as_of.position, story.point_a.position);
    assert_eq!(payee_ids(state), sorted(vec![story.ann, story.bob]));
    for payee in &state.allow_list {
        let approval = payee.approval.as_ref().expect("approved payee");
        assert_eq!(approval.proposed_by, story.admin, "{payee:?}");
        assert_eq!(approval.approved_by, story.approver, "{payee:?}");
        assert!(approval.proposed_at < approval.approved_at, "{approval:?}");
        assert!(approval.proposed_at < payee.added_at, "{approval:?}");
    }
    let usernames: Vec<&str> = state
        .operators
        .iter()
        .map(|o| o.username.as_str())
        .collect();
    assert_eq!(usernames.len(), 2, "{usernames:?}");
    assert!(usernames.contains(&"harness.admin"));
    assert!(usernames.contains(&"harness.approver"));
    assert!(state.payments.is_empty());
    assert!(state.dlq.is_empty());
    assert!(state.removed_payees.is_empty());
    assert_eq!(state.signing_keys.len(), 1);
}

fn check_point_b(story: &Story, state: &LedgerState) {
    assert_eq!(state.as_of.position, story.point_b);
    assert_eq!(payee_ids(state), vec![story.bob]);
    let [removed] = state.removed_payees.as_slice() else {
        panic!("one payee removed: {:?}", state.removed_payees);
    };
    assert_eq!(removed.payee.payee_id, story.ann);
    assert_eq!(removed.reason, "contract ended");
    let approval = removed.approval.as_ref().expect("approved removal");
    assert_eq!(approval.proposed_by, story.admin);
    assert_eq!(approval.approved_by, story.approver);
    let dora = state
        .operators
        .iter()
        .find(|o| o.operator_id == story.dlq_operator)
        .expect("the DLQ operator exists at point B");
    assert_eq!(dora.roles, ["dlq-operator"]);
    let scopes: Vec<String> = Role::DlqOperator
        .scopes()
        .iter()
        .map(|s| s.as_str().to_owned())
        .collect();
    assert_eq!(dora.scopes, scopes);
    assert_eq!(dora.created_by, Some(story.admin));
    assert!(dora.mfa_enrolled);
    assert!(state.payments.is_empty());
}

fn check_head(story: &Story, state: &LedgerState) {
    let [payment] = state.payments.as_slice() else {
        panic!("one payment: {:?}", state.payments);
    };
    assert_eq!(payment.payment_id, story.payment);
    assert_eq!(payment.payee_id, story.bob);
    assert_eq!(payment.amount_minor, 25_000);
    assert_eq!(payment.status, "receipted");
    assert_eq!(
        payment.attempts, 4,
        "three before parking, one after the retry"
    );
    assert!(state.dlq.is_empty(), "{:?}", state.dlq);
    let [decision] = state.dlq_decisions.as_slice() else {
        panic!("one DLQ decision: {:?}", state.dlq_decisions);
    };
    assert_eq!(decision.action, "retry");
    assert_eq!(decision.status, "approved");
    assert_eq!(decision.proposed_by, story.dlq_operator);
    assert_eq!(decision.decided_by, Some(story.admin));
    assert_eq!(decision.released, vec![story.payment]);
    assert_eq!(payee_ids(state), vec![story.bob]);
}

async fn check_source(story: &Story, source: &EventSource) {
    let at_a = state(source, Cutoff::Position(story.point_a.position)).await;
    check_point_a(story, &at_a);
    check_point_b(story, &state(source, Cutoff::Position(story.point_b)).await);
    check_head(story, &state(source, Cutoff::Head).await);

    // A time names the last event recorded at or before it: point A's own time gives A.
    let time = api::replay::event_view::format_micros(story.point_a.recorded_at_micros);
    let by_time = state(source, Cutoff::parse_point(&time).unwrap()).await;
    assert_eq!(by_time, at_a, "as of {time}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_answers_story_from_store_and_export() {
    let (story, dir) = build_story().await;
    let data_dir = dir.path().join("data");
    let store = EventSource::Store(StoreLocation::from_dir_or_url(&data_dir, None));
    let export_path = dir.path().join("ledger.folio");
    export_with_cli(&data_dir, story.ledger, &export_path);
    let export = EventSource::Export(export_path.clone());

    check_source(&story, &store).await;
    check_source(&story, &export).await;

    // The same point gives the same bytes, from either source.
    let at_b = Cutoff::Position(story.point_b);
    let from_store = serde_json::to_vec(&state(&store, at_b).await).unwrap();
    let from_export = serde_json::to_vec(&state(&export, at_b).await).unwrap();
    assert_eq!(from_store, from_export);
    let out_1 = dir.path().join("state-1.json");
    let out_2 = dir.path().join("state-2.json");
    for out in [&out_1, &out_2] {
        let b = story.point_b.to_string();
        run_cli(&[
            "replay",
            export_path.to_str().unwrap(),
            "--as-of",
            &b,
            "--out",
            out.to_str().unwrap(),
        ]);
    }
    let written = std::fs::read(&out_1).unwrap();
    assert_eq!(written, std::fs::read(&out_2).unwrap());
    assert_eq!(
        written,
        [
            serde_json::to_vec_pretty(&state(&export, at_b).await).unwrap(),
            b"\n".to_vec()
        ]
        .concat()
    );

    // The server's responses match the offline results.
    let offline_b = serde_json::to_value(state(&store, at_b).await).unwrap();
    assert_eq!(story.http_state_b, offline_b);
    let from_a = Cutoff::Position(story.point_a.position);
    let offline_diff = api::replay::diff_between(&store, None, from_a, Cutoff::Head)
        .await
        .unwrap();
    assert_eq!(
        story.http_diff_a,
        serde_json::to_value(offline_diff).unwrap()
    );

    check_diff(&story, &store).await;
    check_diff(&story, &export).await;
    check_history(&story, &store).await;
    check_history(&story, &export).await;
    check_broken_export(&story, &export_path, dir.path()).await;

    // The commands run end to end on the store and on the export (their output is text).
    let export_arg = export_path.to_str().unwrap();
    let data_arg = data_dir.to_str().unwrap();
    let point_a = story.point_a.position.to_string();
    let payment = story.payment.to_string();
    run_cli(&[
        "history",
        export_arg,
        "--stream",
        &format!("payment-{payment}"),
        "--format",
        "csv",
    ]);
    run_cli(&[
        "history",
        "--data-dir",
        data_arg,
        "--from",
        &point_a,
        "--format",
        "jsonl",
    ]);
    run_cli(&["diff", export_arg, "--from", &point_a]);
    run_cli(&["diff", "--data-dir", data_arg, "--from", &point_a, "--json"]);
    run_cli(&["replay", "--data-dir", data_arg, "--as-of", &point_a]);

    // A rebuild of every read model gives back the rows the server projected.
    let models = projections::ReadModels::open(data_dir.join("read.sqlite"))
        .await
        .unwrap();
    let before = models.dump().await.unwrap();
    assert!(!before["dlq_decisions"].is_empty());
    run_cli(&["projections", "rebuild", "all", "--data-dir", data_arg]);
    assert_eq!(models.dump().await.unwrap(), before);
}

async fn check_diff(story: &Story, source: &EventSource) {
    let from = Cutoff::Position(story.point_a.position);
    let diff = api::replay::diff_between(source, None, from, Cutoff::Head)
        .await
        .unwrap();
    assert_eq!(diff.from.position, story.point_a.position);
    assert!(diff.payees.added.is_empty(), "{:?}", diff.payees.added);
    let [removed] = diff.payees.removed.as_slice() else {
        panic!("one payee removed: {:?}", diff.payees.removed);
    };
    assert_eq!(removed.payee.payee_id, story.ann);
    let approval = removed.approval.as_ref().expect("approved removal");
    assert_eq!(approval.approved_by, story.approver);
    assert!(removed.removed_at > story.point_a.position);
    let added: Vec<Uuid> = diff.operators.added.iter().map(|o| o.operator_id).collect();
    assert_eq!(added, vec![story.dlq_operator]);
    assert_eq!(diff.operators.added[0].roles, ["dlq-operator"]);
    let [payment] = diff.payments.added.as_slice() else {
        panic!("one payment added: {:?}", diff.payments.added);
    };
    assert_eq!(payment.status, "receipted");
    assert!(diff.payments.by_status_from.is_empty());
    assert_eq!(diff.payments.by_status_to.get("receipted"), Some(&1));

    // From B to the head only the payment changes.
    let from_b = Cutoff::Position(story.point_b);
    let later = api::replay::diff_between(source, None, from_b, Cutoff::Head)
        .await
        .unwrap();
    assert!(later.payees.removed.is_empty());
    assert!(later.operators.added.is_empty());
    assert_eq!(later.payments.added.len(), 1);

    let [decision] = diff.dlq_decisions.as_slice() else {
        panic!("one DLQ decision: {:?}", diff.dlq_decisions);
    };
    assert_eq!(decision.released, vec![story.payment]);

    let text = api::cli::replay::diff_text(&diff);
    assert!(text.contains(&format!("- payee {}", story.ann)), "{text}");
    assert!(
        text.contains(&format!("approved by {} at position", story.admin)),
        "{text}"
    );
    assert!(
        text.contains(&format!("approved by {}", story.approver)),
        "{text}"
    );

    let reversed = api::replay::diff_between(source, None, Cutoff::Position(story.point_b), from);
    assert!(reversed.await.is_err(), "a reversed range is rejected");
}

async fn check_history(story: &Story, source: &EventSource) {
    let loaded = source::load(source, Some(story.ledger), Cutoff::Head)
        .await
        .unwrap();
    assert!(loaded.signed_head_checked);
    let events = &loaded.events;
    let find = |event_type: &str| {
        events
            .iter()
            .find(|event| event.event_type == event_type)
            .unwrap_or_else(|| panic!("no {event_type} event"))
    };

    // What did the submission cause? Every attempt, failure and the parking.
    let submitted = find("payment.submitted");
    let caused = history::follow(events, Causation::Caused(submitted.event_id)).unwrap();
    let count = |event_type: &str| {
        caused
            .events
            .iter()
            .filter(|event| event.event_type == event_type)
            .count()
    };
    assert_eq!(count("payment.dispatch_attempted"), 4);
    assert_eq!(count("payment.dispatch_failed"), 3);
    assert_eq!(count("payment.dead_lettered"), 1);
    assert_eq!(count("dlq.retry_released"), 1);
    assert_eq!(count("payment.receipt_recorded"), 1);

    // Why was the payment parked? Back to its submission.
    let parked = find("payment.dead_lettered");
    let why = history::follow(events, Causation::Why(parked.event_id)).unwrap();
    assert_eq!(
        why.events.first().map(|e| e.event_id),
        Some(submitted.event_id)
    );
    assert_eq!(why.events.last().map(|e| e.event_id), Some(parked.event_id));

    // The approver's decisions: three approvals (Ann, Bob, Ann's removal).
    let filter = Filter {
        actor: Some(story.approver.to_string()),
        ..Filter::default()
    };
    let approvals = events
        .iter()
        .filter(|event| filter.matches(event))
        .filter(|event| event.event_type == "allowlist.change_approved")
        .count();
    assert_eq!(approvals, 3);

    // A position range and a stream filter.
    let filter = Filter {
        stream: Some(parked.stream_id.clone()),
        from_position: Some(story.point_b + 1),
        ..Filter::default()
    };
    let listed: Vec<&SealedEvent> = events.iter().filter(|e| filter.matches(e)).collect();
    assert!(listed.iter().all(|e| e.stream_id == parked.stream_id));
    assert!(listed.iter().any(|e| e.event_id == parked.event_id));

    // Every format names the event and its verified signature.
    let jsonl = history::render(&listed, Format::Jsonl);
    let first: serde_json::Value = serde_json::from_str(jsonl.lines().next().unwrap()).unwrap();
    assert_eq!(first["signature"], "verified");
    assert_eq!(first["event_type"], listed[0].event_type);
    assert_eq!(first["hash"], hex::encode(listed[0].hash));
    let approved = find("allowlist.change_approved");
    let approved_json = api::replay::event_view::event_json(approved);
    assert_eq!(
        approved_json["auth"]["operator_id"],
        story.approver.to_string()
    );
    assert_eq!(approved_json["actor"]["kind"], "operator");
    let csv = history::render(&listed, Format::Csv);
    assert_eq!(csv.lines().count(), listed.len() + 1, "{csv}");
    assert!(csv.starts_with("position,recorded_at,event_type"), "{csv}");
    let table = history::render(&listed, Format::Table);
    assert!(table.contains("payment.dead_lettered"), "{table}");
}

/// Changes one payload byte of the event after point A in a copy of the export: the state
/// at A still replays, and any later point is rejected.
async fn check_broken_export(story: &Story, export_path: &Path, dir: &Path) {
    let mut bytes = std::fs::read(export_path).unwrap();
    let source = EventSource::Export(export_path.to_path_buf());
    let loaded = source::load(&source, None, Cutoff::Head).await.unwrap();
    let target = loaded.events[story.point_a.position as usize + 1].to_bytes();
    let offset = bytes
        .windows(target.len())
        .position(|window| window == target.as_slice())
        .expect("the record is in the export");
    // The payload ends just before prev hash, key id, hash and signature.
    let index = offset + target.len() - (32 + 16 + 32 + 64) - 1;
    bytes[index] ^= 0x01;
    let broken_path = dir.join("broken.folio");
    std::fs::write(&broken_path, &bytes).unwrap();
    let broken = EventSource::Export(broken_path);

    let at_a = Cutoff::Position(story.point_a.position);
    check_point_a(story, &state(&broken, at_a).await);
    let error = api::replay::state_at(&broken, None, Cutoff::Head)
        .await
        .expect_err("a changed record is rejected");
    let message = format!("{error:#}");
    assert!(message.contains("does not verify"), "{message}");
    assert!(
        message.contains(&format!("position {}", story.point_a.position + 1)),
        "{message}"
    );
    check_missing_record(story, export_path, dir).await;
}

/// Drops the record after point A from a copy of the export. The verifier alone would wait
/// for later records to tell a gap from a reordering, so a cutoff right after the gap must
/// still be rejected.
async fn check_missing_record(story: &Story, export_path: &Path, dir: &Path) {
    let exported = domain::export::decode(&std::fs::read(export_path).unwrap()).unwrap();
    let missing = story.point_a.position as usize + 1;
    let kept = exported
        .records
        .iter()
        .enumerate()
        .filter(|(index, _)| *index != missing)
        .map(|(_, record)| record.as_slice());
    let head = exported.signed_head.expect("the export has a signed head");
    let gapped_path = dir.join("gapped.folio");
    std::fs::write(&gapped_path, domain::export::encode(kept, &head)).unwrap();
    let gapped = EventSource::Export(gapped_path);

    let at_a = Cutoff::Position(story.point_a.position);
    check_point_a(story, &state(&gapped, at_a).await);
    let after_gap = Cutoff::Position(story.point_a.position + 2);
    let error = api::replay::state_at(&gapped, None, after_gap)
        .await
        .expect_err("a missing record is rejected");
    let message = format!("{error:#}");
    assert!(
        message.contains(&format!("expected position {missing}")),
        "{message}"
    );
}

/// Default PostgreSQL server of [`replay_reads_postgres_store`], which
/// `FOLIO_TEST_POSTGRES_URL` overrides. The CI script starts a server at this address.
const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Creates a fresh database and returns the server's options and the database name, or
/// `None` when PostgreSQL is unreachable outside CI. With `CI` set, that fails the test.
/// A failing test leaves its database behind.
async fn create_postgres_database() -> Option<(sqlx::postgres::PgConnectOptions, String)> {
    use sqlx::{ConnectOptions, Executor};
    let base = std::env::var("FOLIO_TEST_POSTGRES_URL").unwrap_or_else(|_| POSTGRES_URL.into());
    let admin: sqlx::postgres::PgConnectOptions = base.parse().expect("valid PostgreSQL URL");
    let mut connection = match admin.connect().await {
        Ok(connection) => connection,
        Err(error) if std::env::var_os("CI").is_some() => {
            panic!("PostgreSQL at {base} is unreachable and CI is set: {error}")
        }
        Err(error) => {
            eprintln!("skipped: PostgreSQL at {base} is unreachable ({error})");
            return None;
        }
    };
    let name = format!("folio_t_{}", Uuid::now_v7().simple());
    connection
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create the test database");
    Some((admin, name))
}

async fn drop_postgres_database(admin: &sqlx::postgres::PgConnectOptions, name: &str) {
    use sqlx::{ConnectOptions, Executor};
    let mut connection = admin.connect().await.expect("connect to PostgreSQL");
    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    connection
        .execute(sql.as_str())
        .await
        .expect("drop the test database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_reads_postgres_store() {
    let Some((admin, name)) = create_postgres_database().await else {
        return;
    };
    let url = {
        use sqlx::ConnectOptions;
        admin.clone().database(&name).to_url_lossy().to_string()
    };
    let (story, dir) = build_story().await;
    let data_dir = dir.path().join("data");
    let from = format!("sqlite:{}", data_dir.display());
    run_cli(&[
        "migrate",
        "--from",
        &from,
        "--to",
        &url,
        "--ledger",
        &story.ledger.to_string(),
    ]);

    let postgres = EventSource::Store(StoreLocation::parse(&url).unwrap());
    check_source(&story, &postgres).await;
    let sqlite = EventSource::Store(StoreLocation::from_dir_or_url(&data_dir, None));
    let at_b = Cutoff::Position(story.point_b);
    assert_eq!(state(&postgres, at_b).await, state(&sqlite, at_b).await);
    let from_a = Cutoff::Position(story.point_a.position);
    let diff = api::replay::diff_between(&postgres, None, from_a, Cutoff::Head).await;
    assert_eq!(
        diff.unwrap(),
        api::replay::diff_between(&sqlite, None, from_a, Cutoff::Head)
            .await
            .unwrap()
    );
    check_history(&story, &postgres).await;
    drop_postgres_database(&admin, &name).await;
}
