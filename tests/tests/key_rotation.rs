//! Key rotation without downtime, and retention runs.
//!
//! The signing key and the KEK rotate, and the data keys are rewrapped, while a client
//! submits payments. Every request succeeds and the chain verifies across the rotation.
//! The old KEK version can be retired only once nothing depends on it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use domain::record::Actor;
use folio_e2e::harness::Stack;
use serde_json::json;

/// Payments the client submits during the rotation test.
const PAYMENTS: usize = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_both_keys_under_load_fails_no_request() {
    let stack = Stack::start().await.unwrap();
    let ledger = stack.create_ledger("rotation").await.unwrap();
    let first = stack
        .add_payee(ledger, "Rotation One", "062000", "11112222")
        .await
        .unwrap();

    // A client pays continuously while the keys rotate (bounded: 60 payments).
    let client = stack.http.clone();
    let (base, token) = (stack.base.clone(), stack.token.clone());
    let answered = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = answered.clone();
    let payer = tokio::spawn(async move {
        let mut statuses = Vec::new();
        for n in 0..PAYMENTS {
            let body = json!({"payee_id": first, "amount_minor": 100 + n, "currency": "AUD",
                              "reference": "ROTATE"});
            let response = client
                .post(format!("{base}/v1/ledgers/{ledger}/payments"))
                .bearer_auth(&token)
                .header("Idempotency-Key", format!("rotate-{n}"))
                .json(&body)
                .timeout(Duration::from_secs(30))
                .send()
                .await
                .expect("the server answers");
            statuses.push(response.status().as_u16());
            counter.fetch_add(1, Ordering::SeqCst);
        }
        statuses
    });

    let state = &stack.state;
    let actor = Actor::system("test");
    while answered.load(Ordering::SeqCst) < 5 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let keys_dir = stack.data_dir().join("keys");
    let key_id = |keys_dir: &std::path::Path| {
        let current = std::fs::read_to_string(keys_dir.join("current")).unwrap();
        let name = current
            .trim()
            .trim_start_matches("ledger-")
            .trim_end_matches(".wrapped");
        name.to_owned()
    };
    let old_key = key_id(&keys_dir);
    let rotation = api::key_rotation::rotate_signing(state, ledger, actor, "scheduled")
        .await
        .unwrap();
    let at_rotation = answered.load(Ordering::SeqCst);
    let new_key = key_id(&keys_dir);
    assert_ne!(old_key, new_key);
    assert_eq!(
        api::key_rotation::rotate_kek(state, &Actor::system("test"), uuid::Uuid::now_v7())
            .await
            .unwrap(),
        "2"
    );
    let second = stack
        .add_payee(ledger, "Rotation Two", "083004", "33334444")
        .await
        .unwrap();
    let progress = api::key_rotation::rewrap(state, "1", 1).await.unwrap();
    assert_eq!(
        progress.remaining, 0,
        "one payee key and nothing else on version 1"
    );
    assert_eq!(
        api::key_rotation::kek_version_in_use(state, "1")
            .await
            .unwrap(),
        0
    );

    let statuses = payer.await.unwrap();
    assert!(
        at_rotation < PAYMENTS,
        "the rotation ran while payments were in flight"
    );
    assert_eq!(statuses.len(), PAYMENTS);
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 200),
        "{statuses:?}"
    );

    // Both payees still open, before and after the rotation.
    let head = state.store.head(ledger).await.unwrap().position;
    let path = format!("/v1/ledgers/{ledger}/payees?min_position={head}");
    let (_, body) = stack.get(&path).await.unwrap();
    let text = body.to_string();
    assert!(
        text.contains("Rotation One") && text.contains("Rotation Two"),
        "{text}"
    );
    let (status, body) = stack.pay(ledger, second, json!(5), "after").await.unwrap();
    assert!(status.is_success(), "{body}");

    // The KEK rotation and the rewrap are recorded on the ledger.
    let events = state.store.read_ledger(ledger, 0, 10_000).await.unwrap();
    let count = |kind: &str| events.iter().filter(|e| e.event_type == kind).count();
    assert_eq!(count("kms.kek_rotated"), 1);
    assert_eq!(count("kms.data_keys_rewrapped"), 1);

    // The old key is revoked from just before the rotation; the current key cannot be.
    let from = rotation.last_position - 1;
    let refused = api::key_rotation::revoke_signing(state, ledger, &new_key, 0, "wrong key").await;
    assert!(
        format!("{refused:?}").contains("rotate-signing"),
        "{refused:?}"
    );
    api::key_rotation::revoke_signing(state, ledger, &old_key, from, "suspected compromise")
        .await
        .unwrap();
    // Bad input is refused with the fix: a malformed id, a position past the head, an
    // empty reason, and a second revocation that adds nothing.
    for (key, position, reason, expected) in [
        ("zz", from, "x", "32 hex digits"),
        (old_key.as_str(), 1_000_000, "x", "past the head"),
        (old_key.as_str(), from, " ", "reason of 1 to 500"),
        (old_key.as_str(), from + 1, "again", "already revoked"),
    ] {
        let refused = api::key_rotation::revoke_signing(state, ledger, key, position, reason).await;
        assert!(format!("{refused:?}").contains(expected), "{refused:?}");
    }

    // The chain verifies with both keys, the rotation signed by the old one.
    let dir = stack.stop().await.unwrap();
    let data = dir.path().join("data");
    let verdicts = api::cli::verify::verify_store(&data, Some(ledger))
        .await
        .unwrap();
    let summary = verdicts[0].result.as_ref().expect("intact");
    assert_eq!(summary.rotations.len(), 1);
    assert_eq!(summary.keys.len(), 2);
    assert_eq!(summary.revocations.len(), 1);
    assert_eq!(
        summary.revocations[0].untrusted,
        Some((from, rotation.last_position)),
        "the events the old key signed from the revoked position are reported"
    );
    // The rotation that named the new key is among them, so the report shows that the new key
    // rests on the revoked one's word alone.
    assert_eq!(
        summary.revocations[0].named_by_revoked,
        vec![summary.keys[1].key_id]
    );
    assert_eq!(summary.keys[1].named_at, rotation.last_position);

    // Version 1 wraps nothing any more, so the local KMS lets it go.
    let kms = api::kms::local::LocalKms::open(&data.join("keys/kms-local.kek")).unwrap();
    kms.retire(1).unwrap();
    assert_eq!(kms.versions(), vec![2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_erases_payees_removed_long_ago_and_records_the_run() {
    let stack = Stack::start_with(|config| config.retention.erase_removed_payees_after_days = 1)
        .await
        .unwrap();
    let ledger = stack.create_ledger("retention").await.unwrap();
    let gone = stack
        .add_payee(ledger, "Old Supplier", "062000", "77778888")
        .await
        .unwrap();
    let kept = stack
        .add_payee(ledger, "Current Supplier", "083004", "99990000")
        .await
        .unwrap();
    stack
        .remove_payee(ledger, gone, "contract ended")
        .await
        .unwrap();
    let state = &stack.state;

    // Today nothing is due; the run is still recorded.
    let now = state.clock.now_micros();
    let today = api::retention::apply(state, ledger, now).await.unwrap();
    assert!(today.erased.is_empty());

    // Two days on, the removed payee is erased and the active one kept.
    let later = now + 2 * 86_400 * 1_000_000;
    let report = api::retention::apply(state, ledger, later).await.unwrap();
    assert_eq!(report.erased, vec![gone]);
    let keys = state.personal.keys();
    let subject = domain::personal::payee_subject(gone);
    assert!(keys.live_keys(ledger, &subject).await.unwrap().is_empty());
    let kept_subject = domain::personal::payee_subject(kept);
    assert!(!keys
        .live_keys(ledger, &kept_subject)
        .await
        .unwrap()
        .is_empty());

    let events = state.store.read_ledger(ledger, 0, 10_000).await.unwrap();
    let runs = events
        .iter()
        .filter(|e| e.event_type == "retention.applied")
        .count();
    assert_eq!(runs, 2);
    let dir = stack.stop().await.unwrap();
    let verdicts = api::cli::verify::verify_store(&dir.path().join("data"), Some(ledger))
        .await
        .unwrap();
    let summary = verdicts[0].result.as_ref().expect("intact");
    assert_eq!(summary.erasures.len(), 1);
    assert!(summary.erasures[0].policy.starts_with("retention:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn administrator_rotates_keys_over_http() {
    let stack = Stack::start().await.unwrap();
    let ledger = stack.create_ledger("rotation-http").await.unwrap();
    stack
        .add_payee(ledger, "Http Rotation", "062000", "12121212")
        .await
        .unwrap();
    let admin = &stack.operators(ledger).await.unwrap().proposer;

    let path = format!("/v1/ledgers/{ledger}/signing-key/rotation");
    let (status, body) = admin
        .post(&path, &json!({"reason": "scheduled"}))
        .await
        .unwrap();
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    let (status, body) = admin.post(&path, &json!({"reason": " "})).await.unwrap();
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{body}");

    let path = format!("/v1/ledgers/{ledger}/kek/rotation");
    let (status, body) = admin.post(&path, &json!({"batch": 10})).await.unwrap();
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("kms.rewrap_batch"),
        "{body}"
    );
    let (status, body) = admin.post(&path, &json!({})).await.unwrap();
    assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["version"], "2");
    assert_eq!(body["pending_data_keys"], 1, "the payee's data key: {body}");
    // The rotation event names the administrator who asked for it, not the system.
    let kms_events = (stack.state.store)
        .read_stream(ledger, api::key_rotation::KMS_STREAM, 0, 100)
        .await
        .unwrap();
    let rotated = (kms_events.iter())
        .find(|event| event.event_type == "kms.kek_rotated")
        .expect("a kms.kek_rotated event");
    assert_eq!(rotated.actor.kind, domain::record::ActorKind::Operator);

    // The background job moves the key off version 1 without a further request.
    let keys = stack.state.personal.keys();
    let started = std::time::Instant::now();
    while keys.versions_in_use().await.unwrap().contains_key("1") {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the rewrap job did not run"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let in_use = keys.versions_in_use().await.unwrap();
    assert_eq!(in_use.keys().collect::<Vec<_>>(), ["2"]);
    assert_eq!(
        api::key_rotation::kek_version_in_use(&stack.state, "1")
            .await
            .unwrap(),
        0
    );
    assert_eq!(stack.state.rewrap.pending(), Some(0));
    stack.stop().await.unwrap();
}

/// A rewrap cut short (one batch of one key, then nothing, as after a crash) is finished
/// by the background job's next pass, which gets the current version from the KMS itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrap_job_finishes_a_rewrap_cut_short() {
    let stack = Stack::start().await.unwrap();
    let ledger = stack.create_ledger("rewrap-resume").await.unwrap();
    for (name, account) in [("Resume One", "10000001"), ("Resume Two", "10000002")] {
        stack
            .add_payee(ledger, name, "062000", account)
            .await
            .unwrap();
    }
    let state = &stack.state;
    // Nothing can move off the current version: refused, instead of "moving" the same
    // keys on every batch.
    let refused = api::key_rotation::check_old_version(state, "1").await;
    assert!(
        format!("{refused:?}").contains("current version"),
        "{refused:?}"
    );
    let refused = api::key_rotation::rewrap(state, "1", 10).await;
    assert!(
        format!("{refused:?}").contains("current version"),
        "{refused:?}"
    );
    let refused = api::key_rotation::retire_kek(state, "1").await;
    assert!(
        format!("{refused:?}").contains("current version"),
        "{refused:?}"
    );

    assert_eq!(
        api::key_rotation::rotate_kek(state, &Actor::system("test"), uuid::Uuid::now_v7())
            .await
            .unwrap(),
        "2"
    );
    let unknown = api::key_rotation::check_old_version(state, "v9").await;
    assert!(
        format!("{unknown:?}").contains("versions in use: 1"),
        "{unknown:?}"
    );
    let first = api::key_rotation::rewrap(state, "1", 1).await.unwrap();
    assert_eq!((first.rewrapped, first.remaining), (1, 1));

    let moved = api::key_rotation::rewrap_pass(state).await.unwrap();
    assert_eq!(moved, 1);
    assert_eq!(state.rewrap.pending(), Some(0));
    let in_use = state.personal.keys().versions_in_use().await.unwrap();
    assert_eq!(in_use.keys().collect::<Vec<_>>(), ["2"]);
    assert_eq!(api::key_rotation::rewrap_pass(state).await.unwrap(), 0);

    let events = state.store.read_ledger(ledger, 0, 10_000).await.unwrap();
    let rewrapped: Vec<_> = events
        .iter()
        .filter(|e| e.event_type == "kms.data_keys_rewrapped")
        .collect();
    assert_eq!(rewrapped.len(), 2, "one event per batch that moved keys");
    stack.stop().await.unwrap();
}
