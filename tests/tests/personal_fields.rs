//! Sealed payee fields end to end. A payee added through the API is stored as a sealed
//! `payee.added` (schema version 2) whose bytes contain neither the name nor the account.
//! The API and read models show the opened values, and payments to the payee work. The
//! chain verifies without any key, and a sealed field moved to another event fails to open.

use domain::events::{DomainEvent, PayeeAccount};
use domain::personal::PayeeAddedSealed;
use folio_e2e::harness::Stack;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payee_fields_are_sealed_in_the_ledger_and_open_for_readers() {
    let stack = Stack::start().await.unwrap();
    let ledger = stack.create_ledger("sealed").await.unwrap();
    let payee = stack
        .add_payee(ledger, "Zelda Quartermain", "062000", "98765432")
        .await
        .unwrap();

    // The stored event is version 2 and its bytes hide the name and account.
    let events = stack
        .state
        .store
        .read_ledger(ledger, 0, 10_000)
        .await
        .unwrap();
    let proposed: Vec<_> = events
        .iter()
        .filter(|e| e.event_type == "allowlist.change_proposed")
        .collect();
    assert_eq!(proposed.len(), 1);
    assert_eq!(proposed[0].schema_version, 2, "the proposal is sealed too");
    for needle in [&b"Zelda"[..], b"98765432"] {
        assert!(!proposed[0]
            .payload
            .windows(needle.len())
            .any(|w| w == needle));
    }
    let added: Vec<_> = events
        .iter()
        .filter(|e| e.event_type == "payee.added")
        .collect();
    assert_eq!(added.len(), 1);
    let event = added[0];
    assert_eq!(event.schema_version, 2);
    for needle in [&b"Zelda"[..], b"Quartermain", b"98765432", b"zelda"] {
        assert!(
            !event.payload.windows(needle.len()).any(|w| w == needle),
            "{} appears in the sealed payload",
            String::from_utf8_lossy(needle)
        );
    }

    // The API shows the opened name; payments to the payee are dispatched.
    let head = stack.state.store.head(ledger).await.unwrap();
    let path = format!("/v1/ledgers/{ledger}/payees?min_position={}", head.position);
    let (status, body) = stack.get(&path).await.unwrap();
    assert!(status.is_success(), "{body}");
    let text = body.to_string();
    assert!(text.contains("Zelda Quartermain"), "{text}");
    assert!(!text.contains("98765432"), "accounts stay masked: {text}");
    let (status, body) = stack
        .pay(ledger, payee, json!(1234), "sealed-1")
        .await
        .unwrap();
    assert!(status.is_success(), "{body}");
    let id = body["payment_id"].as_str().unwrap().to_owned();
    stack
        .wait_status(ledger, &id, &["receipted"])
        .await
        .unwrap();
    let events = stack
        .state
        .store
        .read_ledger(ledger, 0, 10_000)
        .await
        .unwrap();
    let submitted = events
        .iter()
        .find(|e| e.event_type == "payment.submitted")
        .expect("the payment is recorded");
    assert_eq!(
        submitted.schema_version, 2,
        "the payment's account is sealed"
    );
    for needle in [&b"Zelda"[..], b"98765432"] {
        assert!(!submitted.payload.windows(needle.len()).any(|w| w == needle));
    }

    // The personal fields open through the KMS, and only in their own place.
    let decoded =
        DomainEvent::decode(&event.event_type, event.schema_version, &event.payload).unwrap();
    let DomainEvent::PayeeAddedSealed(sealed) = decoded.clone() else {
        panic!("not sealed: {decoded:?}");
    };
    let opened = stack
        .state
        .personal
        .open(ledger, &event.stream_id, event.event_id, decoded.clone())
        .await
        .unwrap();
    let DomainEvent::PayeeAdded(plain) = opened else {
        panic!("not opened");
    };
    assert_eq!(plain.name, "Zelda Quartermain");
    assert_eq!(
        plain.account,
        PayeeAccount::Bsb {
            bsb: "062000".into(),
            account: "98765432".into()
        }
    );
    let swapped = PayeeAddedSealed {
        name: sealed.account.clone(),
        ..sealed.clone()
    };
    let moved = stack
        .state
        .personal
        .open(
            ledger,
            &event.stream_id,
            event.event_id,
            DomainEvent::PayeeAddedSealed(swapped),
        )
        .await;
    assert!(
        moved.is_err(),
        "a field moved to another field must not open"
    );
    let elsewhere = stack
        .state
        .personal
        .open(ledger, &event.stream_id, uuid::Uuid::now_v7(), decoded)
        .await;
    assert!(
        elsewhere.is_err(),
        "a field moved to another event must not open"
    );

    // The chain verifies with no key at all.
    let dir = stack.stop().await.unwrap();
    let verdicts = api::cli::verify::verify_store(&dir.path().join("data"), Some(ledger))
        .await
        .unwrap();
    assert!(verdicts[0].result.is_ok());
}

/// Erasure: an approved erasure of a removed payee destroys its keys; its fields read as
/// `[erased]` in the API and as-of queries, and the chain still verifies, listing the
/// erasure as policy. An active payee cannot be erased.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erased_payee_reads_as_erased_and_the_chain_still_verifies() {
    let stack = Stack::start().await.unwrap();
    let ledger = stack.create_ledger("erasure").await.unwrap();
    let payee = stack
        .add_payee(ledger, "Yusuf Erasable", "062000", "55554444")
        .await
        .unwrap();
    let (status, body) = stack
        .pay(ledger, payee, json!(700), "erase-1")
        .await
        .unwrap();
    assert!(status.is_success(), "{body}");
    let payment = body["payment_id"].as_str().unwrap().to_owned();
    let done = stack
        .wait_status(ledger, &payment, &["receipted"])
        .await
        .unwrap();
    assert_eq!(done["payee_name"], "Yusuf Erasable", "{done}");
    let erasure = format!("/v1/ledgers/{ledger}/payees/{payee}/erasure");
    let reason = json!({"reason": "subject asked to be forgotten"});

    // The stored idempotent responses hold the name sealed, and it opens on replay.
    let replayed = stored_responses(&stack, ledger).await;
    assert!(replayed.contains("Yusuf Erasable"), "{replayed}");

    // Still on the allow-list: the proposal is refused.
    let operators = stack.operators(ledger).await.unwrap();
    let refused = operators.proposer.propose(&erasure, &reason).await;
    assert!(
        format!("{refused:?}").contains("payee_still_active"),
        "{refused:?}"
    );

    stack
        .remove_payee(ledger, payee, "closed account")
        .await
        .unwrap();
    // The payee's wrapped data keys, which an erasure must leave nowhere on disk.
    let wrapped: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT wrapped FROM data_keys WHERE subject = $1")
            .bind(domain::personal::payee_subject(payee))
            .fetch_all(stack.state.personal.keys().pool())
            .await
            .unwrap();
    assert!(!wrapped.is_empty());
    stack
        .propose_and_approve(ledger, &erasure, &reason)
        .await
        .unwrap();

    let subject = domain::personal::payee_subject(payee);
    let keys = stack.state.personal.keys();
    assert!(keys.live_keys(ledger, &subject).await.unwrap().is_empty());

    // A second erasure, or one of a payee that never existed, is refused by name.
    let again = operators.proposer.propose(&erasure, &reason).await;
    assert!(
        format!("{again:?}").contains("payee_not_erasable"),
        "{again:?}"
    );
    let stranger = format!(
        "/v1/ledgers/{ledger}/payees/{}/erasure",
        uuid::Uuid::now_v7()
    );
    let unknown = operators.proposer.propose(&stranger, &reason).await;
    assert!(
        format!("{unknown:?}").contains("payee_not_erasable"),
        "{unknown:?}"
    );

    let head = stack.state.store.head(ledger).await.unwrap().position;
    let path = format!("/v1/ledgers/{ledger}/payees?include_removed=true&min_position={head}");
    let (status, body) = stack.get(&path).await.unwrap();
    assert!(status.is_success(), "{body}");
    let text = body.to_string();
    assert!(!text.contains("Yusuf"), "{text}");
    assert!(text.contains("[erased]"), "{text}");

    let (status, body) = operators
        .proposer
        .get(&format!("/v1/ledgers/{ledger}/proposals"))
        .await
        .unwrap();
    assert!(status.is_success(), "{body}");
    assert!(!body.to_string().contains("Yusuf"), "{body}");
    assert!(body.to_string().contains("[erased]"), "{body}");

    let path = format!("/v1/ledgers/{ledger}/payments/{payment}?min_position={head}");
    let (status, body) = stack.get(&path).await.unwrap();
    assert!(status.is_success(), "{body}");
    assert_eq!(body["payee_name"], "[erased]", "{body}");

    let replayed = stored_responses(&stack, ledger).await;
    assert!(!replayed.contains("Yusuf"), "{replayed}");
    assert!(replayed.contains("[erased]"), "{replayed}");

    let as_of = format!("/v1/ledgers/{ledger}/payees?include_removed=true&as_of={head}");
    let (status, body) = stack.get(&as_of).await.unwrap();
    assert!(status.is_success(), "{body}");
    assert!(!body.to_string().contains("Yusuf"), "{body}");
    assert!(body.to_string().contains("[erased]"), "{body}");

    // While the server runs, no file of the data directory keeps the name or the account
    // in the clear: not the events, not the idempotency records, not the read models'
    // freed pages or write-ahead log.
    for needle in ["Yusuf", "Erasable", "55554444"] {
        let found = files_containing(&stack.data_dir(), needle.as_bytes());
        assert!(found.is_empty(), "{needle} is still in {found:?}");
    }
    for key in &wrapped {
        let found = files_containing(&stack.data_dir(), key);
        assert!(
            found.is_empty(),
            "a destroyed wrapped key is still in {found:?}"
        );
    }

    let dir = stack.stop().await.unwrap();
    // An offline replay, which has no key, shows the payee as erased from the erasure on.
    let source = api::replay::source::EventSource::Store(
        api::store::StoreLocation::from_dir_or_url(&dir.path().join("data"), None),
    );
    let replayed = api::replay::state_at(&source, None, api::replay::source::Cutoff::Head)
        .await
        .unwrap();
    let removed = serde_json::to_string(&replayed.removed_payees).unwrap();
    assert!(removed.contains("[erased]"), "{removed}");
    assert!(!removed.contains("[encrypted]"), "{removed}");

    let verdicts = api::cli::verify::verify_store(&dir.path().join("data"), Some(ledger))
        .await
        .unwrap();
    let summary = verdicts[0]
        .result
        .as_ref()
        .expect("the chain still verifies");
    assert_eq!(summary.erasures.len(), 1);
    assert_eq!(summary.erasures[0].subject, subject);
    assert!(summary.erasures[0].policy.contains("forgotten"));
}

/// Returns every stored idempotent response of `ledger`, opened as a replay opens it.
async fn stored_responses(stack: &Stack, ledger: uuid::Uuid) -> String {
    let head = stack.state.store.head(ledger).await.unwrap().position;
    let backend = stack.state.store.backend();
    let records = backend.idempotency_range(ledger, 0, head).await.unwrap();
    assert!(!records.is_empty());
    let mut opened = Vec::new();
    for record in records {
        let request = String::from_utf8_lossy(&record.claim.request).into_owned();
        let stored = String::from_utf8_lossy(&record.claim.response_body).into_owned();
        for needle in ["Yusuf", "55554444"] {
            assert!(
                !request.contains(needle),
                "request kept in the clear: {request}"
            );
            assert!(
                !stored.contains(needle),
                "response kept in the clear: {stored}"
            );
        }
        let body = serde_json::from_slice(&record.claim.response_body).unwrap();
        let body =
            api::sealed_replies::open(&stack.state.personal, ledger, &record.claim.key, body)
                .await
                .unwrap();
        opened.push(body.to_string());
    }
    opened.join("\n")
}

/// Paths of the files under `dir` whose bytes contain `needle`.
fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_containing(&path, needle));
        } else {
            // A write-ahead log can disappear between listing and reading.
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            if bytes.windows(needle.len()).any(|window| window == needle) {
                found.push(path);
            }
        }
    }
    found
}
