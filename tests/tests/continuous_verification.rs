//! The server's continuous verification finds a row changed behind its back.

use api::verification::{snapshot, Verification};
use folio_e2e::harness::Stack;
use serde_json::json;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Row};

/// Changes the indexed `event_id` column of one ledger's event at `position`, so the row no
/// longer matches its sealed record and the store refuses to decode it.
async fn corrupt_index(stack: &Stack, ledger: uuid::Uuid, position: i64) {
    let path = stack.data_dir().join("events.sqlite");
    let mut connection = SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .unwrap();
    sqlx::query("DROP TRIGGER \"events_no_update\"")
        .execute(&mut connection)
        .await
        .unwrap();
    let changed =
        sqlx::query("UPDATE events SET event_id = ? WHERE ledger_id = ? AND position = ?")
            .bind(uuid::Uuid::now_v7().as_bytes().to_vec())
            .bind(ledger.as_bytes().to_vec())
            .bind(position)
            .execute(&mut connection)
            .await
            .unwrap();
    assert_eq!(changed.rows_affected(), 1);
    connection.close().await.unwrap();
}

/// Flips one payload byte of the event at `position`, after dropping the append-only
/// triggers, as an attacker with write access to the database file could.
async fn tamper(stack: &Stack, position: i64) {
    let path = stack.data_dir().join("events.sqlite");
    let mut connection = SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .unwrap();
    for trigger in ["events_no_update", "events_no_delete"] {
        sqlx::query(&format!("DROP TRIGGER \"{trigger}\""))
            .execute(&mut connection)
            .await
            .unwrap();
    }
    let row = sqlx::query("SELECT record FROM events WHERE position = ?")
        .bind(position)
        .fetch_one(&mut connection)
        .await
        .unwrap();
    let mut record: Vec<u8> = row.get(0);
    // The payload ends before the prev hash, key id, hash and signature.
    let index = record.len() - (32 + 16 + 32 + 64) - 1;
    record[index] ^= 0x01;
    sqlx::query("UPDATE events SET record = ? WHERE position = ?")
        .bind(record)
        .bind(position)
        .execute(&mut connection)
        .await
        .unwrap();
    connection.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_row_is_found_by_full_pass() {
    let stack = Stack::start().await.unwrap();
    let ledger = stack.create_ledger("continuous").await.unwrap();
    let payee = stack
        .add_payee(ledger, "Ann Lee", "062-000", "12345678")
        .await
        .unwrap();
    let (_, body) = stack.pay(ledger, payee, json!(100), "cv-1").await.unwrap();
    let payment = body["payment_id"].as_str().unwrap().to_owned();
    // Once receipted, the dispatcher appends nothing more, so the head stays put.
    stack
        .wait_status(ledger, &payment, &["receipted"])
        .await
        .unwrap();
    let mut job = Verification::new(3);

    job.pass(&stack.state.store).await.unwrap();
    let head = stack.state.store.ledgers().await.unwrap()[0].head.position;
    let first = snapshot()[&ledger].clone();
    assert_eq!(first.verified_position, Some(head));
    assert_eq!(first.failure, None);

    // An incremental pass checks only new events, so the changed old row goes unseen...
    tamper(&stack, 1).await;
    stack.pay(ledger, payee, json!(200), "cv-2").await.unwrap();
    job.pass(&stack.state.store).await.unwrap();
    assert_eq!(snapshot()[&ledger].failure, None);

    // ...until the full pass, which starts again from genesis.
    job.pass(&stack.state.store).await.unwrap();
    job.pass(&stack.state.store).await.unwrap();
    let result = snapshot()[&ledger].clone();
    let (code, _) = result.failure.expect("the full pass finds the changed row");
    assert_eq!(code, "changed_bytes");
    assert_eq!(result.verified_position, Some(0));

    let metrics = stack
        .http
        .get(format!("{}/metrics", stack.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = format!("folio_chain_verification_failed{{ledger=\"{ledger}\"}} 1");
    assert!(metrics.contains(&line), "{line} missing from:\n{metrics}");

    // The failed ledger is quarantined: no new event joins a chain that no longer
    // verifies, while reads and readiness carry on and name the ledger.
    let (status, body) = stack.pay(ledger, payee, json!(300), "cv-3").await.unwrap();
    assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "ledger_quarantined", "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("changed_bytes"),
        "{body}"
    );
    let (status, body) = stack
        .get(&format!("/v1/ledgers/{ledger}/payments"))
        .await
        .unwrap();
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    let (status, body) = stack.get("/readyz").await.unwrap();
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    assert_eq!(
        body["quarantined_ledgers"][0]["ledger_id"],
        ledger.to_string(),
        "{body}"
    );
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_row_quarantines_only_its_ledger() {
    let stack = Stack::start().await.unwrap();
    let broken = stack.create_ledger("corrupt-row").await.unwrap();
    let intact = stack.create_ledger("still-intact").await.unwrap();
    let payee = stack
        .add_payee(broken, "Ann Lee", "062-000", "12345678")
        .await
        .unwrap();
    let mut job = Verification::new(1);
    corrupt_index(&stack, broken, 1).await;

    // Every pass starts from genesis; the unreadable row is a failure of its ledger, and
    // the other ledger is still verified, including events added afterwards.
    job.pass(&stack.state.store).await.unwrap();
    let result = snapshot()[&broken].clone();
    let (code, message) = result.failure.expect("the corrupt row is a failure");
    assert_eq!(code, "undecodable", "{message}");
    assert!(message.contains("position 1"), "{message}");
    assert_eq!(result.verified_position, Some(0));
    stack
        .add_payee(intact, "Bob Ray", "083-004", "87654321")
        .await
        .unwrap();
    job.pass(&stack.state.store).await.unwrap();
    let head = stack.state.store.head(intact).await.unwrap().position;
    assert_eq!(snapshot()[&intact].verified_position, Some(head));
    assert_eq!(snapshot()[&intact].failure, None);

    let (status, body) = stack.pay(broken, payee, json!(100), "cv-9").await.unwrap();
    assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "ledger_quarantined", "{body}");
    stack.stop().await.unwrap();
}
