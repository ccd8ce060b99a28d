//! ABA files over real HTTP: every detail record becomes exactly one payment, or the
//! whole file is rejected and nothing is stored.

use folio_e2e::harness::{read_fixture, Stack};
use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

/// Allow-lists every account named in a generator sidecar.
async fn allow_list_sidecar(stack: &Stack, ledger: Uuid, sidecar: &Value) {
    let mut seen = std::collections::BTreeSet::new();
    for record in sidecar["records"].as_array().unwrap() {
        let bsb = record["bsb"].as_str().unwrap();
        let account = record["account_number"].as_str().unwrap();
        if seen.insert((bsb.to_owned(), account.to_owned())) {
            let name = record["account_title"].as_str().unwrap().trim();
            stack.add_payee(ledger, name, bsb, account).await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_file_becomes_exact_payments() {
    let stack = Stack::start().await.unwrap();
    let ledger = stack.create_ledger("aba").await.unwrap();
    let sidecar: Value =
        serde_json::from_slice(&read_fixture("aba/generated-leading-zeros.json").unwrap()).unwrap();
    allow_list_sidecar(&stack, ledger, &sidecar).await;

    let file = read_fixture("aba/generated-leading-zeros.aba").unwrap();
    let path = format!("/v1/ledgers/{ledger}/payments/batches");
    let (status, body) = stack
        .post_bytes(&path, "file-1", file.clone())
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let batch = body["batch_id"].as_str().unwrap();
    let position = body["position"].as_u64().unwrap();

    let records = sidecar["records"].as_array().unwrap();
    let (_, page) = stack
        .get(&format!(
            "/v1/ledgers/{ledger}/payments?batch_id={batch}&min_position={position}"
        ))
        .await
        .unwrap();
    let payments = page["items"].as_array().unwrap();
    assert_eq!(payments.len(), records.len());
    for (payment, record) in payments.iter().zip(records) {
        assert_eq!(payment["amount_minor"], record["amount_minor"], "{payment}");
        assert_eq!(payment["payee_name"], record["account_title"], "{payment}");
        assert_eq!(
            payment["reference"], record["lodgement_reference"],
            "{payment}"
        );
        assert_eq!(payment["batch_line"], record["line"], "{payment}");
        let account = record["account_number"].as_str().unwrap();
        let masked = payment["account_masked"].as_str().unwrap();
        assert!(
            masked.ends_with(&account[account.len() - 3..]),
            "{masked} vs {account}"
        );
    }

    // The submitted events carry the full account, exactly as in the file, sealed under
    // the payee's data key: opened through the KMS, they match the file.
    let events = stack
        .state
        .store
        .read_ledger(ledger, 0, 10_000)
        .await
        .unwrap();
    let mut submitted: Vec<domain::events::PaymentSubmitted> = Vec::new();
    for e in events
        .iter()
        .filter(|e| e.event_type == "payment.submitted")
    {
        assert_eq!(e.schema_version, 2, "ABA payments are sealed");
        let decoded =
            domain::events::DomainEvent::decode(&e.event_type, e.schema_version, &e.payload)
                .unwrap();
        let personal = &stack.state.personal;
        let opened = personal.open(ledger, &e.stream_id, e.event_id, decoded);
        if let domain::events::DomainEvent::PaymentSubmitted(p) = opened.await.unwrap() {
            submitted.push(p);
        }
    }
    assert_eq!(submitted.len(), records.len());
    for (payment, record) in submitted.iter().zip(records) {
        let bsb = record["bsb"].as_str().unwrap().replace('-', "");
        let expected = domain::events::PayeeAccount::Bsb {
            bsb,
            account: record["account_number"].as_str().unwrap().to_owned(),
        };
        assert_eq!(payment.account, expected);
        assert_eq!(
            payment.amount_minor,
            record["amount_minor"].as_u64().unwrap()
        );
    }

    let (status, again) = stack.post_bytes(&path, "file-1", file).await.unwrap();
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        again, body,
        "resubmitting with the same key replays the first answer"
    );
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_file_stores_nothing() {
    let stack = Stack::start().await.unwrap();
    let ledger = stack.create_ledger("aba-bad").await.unwrap();
    stack
        .add_payee(ledger, "J Smith", "062-000", "12345678")
        .await
        .unwrap();
    let head_before = stack.state.store.head(ledger).await.unwrap();

    let cases = [
        ("aba/bad-total.aba", "line 4", "credit_total"),
        ("aba/bad-count.aba", "line 4", "record_count"),
        ("aba/bad-bsb.aba", "line 3", "bsb"),
        ("aba/short-line.aba", "line 2", "record"),
        ("aba/missing-trailer.aba", "line 3", "record_type"),
        ("aba/non-digit-amount.aba", "line 2", "amount"),
    ];
    for (file, line, field) in cases {
        let bytes = read_fixture(file).unwrap();
        let path = format!("/v1/ledgers/{ledger}/payments/batches");
        let (status, body) = stack.post_bytes(&path, file, bytes).await.unwrap();
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{file}: {body}");
        assert_eq!(body["code"], "aba_file_invalid", "{file}");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains(line), "{file}: {detail}");
        assert!(
            detail.contains(&format!("field {field}")),
            "{file}: {detail}"
        );
    }
    assert_eq!(
        stack.state.store.head(ledger).await.unwrap(),
        head_before,
        "nothing stored"
    );
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_with_unknown_account_is_rejected_whole() {
    let stack = Stack::start().await.unwrap();
    let ledger = stack.create_ledger("aba-partial").await.unwrap();
    let sidecar: Value =
        serde_json::from_slice(&read_fixture("aba/generated-small.json").unwrap()).unwrap();
    // Allow-list only the first record's account: the second record must sink the file.
    let first = &sidecar["records"][0];
    let bsb = first["bsb"].as_str().unwrap();
    let account = first["account_number"].as_str().unwrap();
    stack
        .add_payee(ledger, "J Smith", bsb, account)
        .await
        .unwrap();
    let head_before = stack.state.store.head(ledger).await.unwrap();

    let path = format!("/v1/ledgers/{ledger}/payments/batches");
    let file = read_fixture("aba/generated-small.aba").unwrap();
    let (status, body) = stack.post_bytes(&path, "partial", file).await.unwrap();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let line = sidecar["records"][1]["line"].as_u64().unwrap();
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("line {line}")),
        "{body}"
    );
    assert_eq!(stack.state.store.head(ledger).await.unwrap(), head_before);
    assert_eq!(stack.sim.ledger_stats().calls, 0);
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_file_twice_is_rejected() {
    let stack = Stack::start().await.unwrap();
    let ledger = stack.create_ledger("aba-twice").await.unwrap();
    let sidecar: Value =
        serde_json::from_slice(&read_fixture("aba/generated-small.json").unwrap()).unwrap();
    allow_list_sidecar(&stack, ledger, &sidecar).await;
    let path = format!("/v1/ledgers/{ledger}/payments/batches");
    let file = read_fixture("aba/generated-small.aba").unwrap();

    let (status, first) = stack
        .post_bytes(&path, "first-key", file.clone())
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{first}");

    let (status, second) = stack.post_bytes(&path, "second-key", file).await.unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{second}");
    assert_eq!(second["code"], "aba_file_duplicate");
    let detail = second["detail"].as_str().unwrap();
    assert!(
        detail.contains(first["batch_id"].as_str().unwrap()),
        "{detail}"
    );
    // The dispatcher keeps appending attempts for the first batch, so count what the
    // upload appends rather than compare heads.
    let events = stack
        .state
        .store
        .read_ledger(ledger, 0, 10_000)
        .await
        .unwrap();
    let count = |event_type: &str| events.iter().filter(|e| e.event_type == event_type).count();
    assert_eq!(count("aba.batch_imported"), 1, "nothing stored again");
    let records = sidecar["records"].as_array().unwrap().len();
    assert_eq!(count("payment.submitted"), records);
    stack.stop().await.unwrap();
}
