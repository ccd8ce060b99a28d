//! `folio verify` on the embedded store after someone edits the SQLite file by hand.

use folio_e2e::harness::Stack;
use serde_json::json;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Row};
use uuid::Uuid;

/// Builds a ledger with a few events, stops everything, returns the data dir and ledger.
async fn finished_ledger() -> (tempfile::TempDir, Uuid) {
    let stack = Stack::start().await.unwrap();
    let ledger = stack.create_ledger("tamper").await.unwrap();
    let payee = stack
        .add_payee(ledger, "Jane Citizen", "062000", "12345678")
        .await
        .unwrap();
    for n in 0..3 {
        let (_, body) = stack
            .pay(ledger, payee, json!(100 + n), &format!("k{n}"))
            .await
            .unwrap();
        let id = body["payment_id"].as_str().unwrap().to_owned();
        stack
            .wait_status(ledger, &id, &["receipted"])
            .await
            .unwrap();
    }
    (stack.stop().await.unwrap(), ledger)
}

async fn open_writable(dir: &std::path::Path) -> sqlx::SqliteConnection {
    let path = dir.join("data").join("events.sqlite");
    SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .unwrap()
}

/// Drops the append-only triggers, as an attacker with file access could.
async fn drop_triggers(connection: &mut sqlx::SqliteConnection) {
    let rows = sqlx::query("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        .fetch_all(&mut *connection)
        .await
        .unwrap();
    for row in rows {
        let name: String = row.get(0);
        sqlx::query(&format!("DROP TRIGGER \"{name}\""))
            .execute(&mut *connection)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untouched_store_verifies() {
    let (dir, ledger) = finished_ledger().await;
    let verdicts = api::cli::verify::verify_store(&dir.path().join("data"), Some(ledger))
        .await
        .unwrap();
    let summary = verdicts[0].result.as_ref().unwrap();
    assert!(summary.event_count >= 11, "{}", summary.event_count);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_rejects_update_and_delete() {
    let (dir, _) = finished_ledger().await;
    let mut connection = open_writable(dir.path()).await;
    let update = sqlx::query("UPDATE events SET event_type = 'x' WHERE position = 1")
        .execute(&mut connection)
        .await;
    assert!(update.is_err(), "UPDATE on events must fail");
    let delete = sqlx::query("DELETE FROM events WHERE position = 1")
        .execute(&mut connection)
        .await;
    assert!(delete.is_err(), "DELETE on events must fail");
    connection.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_payload_byte_is_found() {
    let (dir, ledger) = finished_ledger().await;
    let mut connection = open_writable(dir.path()).await;
    drop_triggers(&mut connection).await;
    let row = sqlx::query("SELECT record FROM events WHERE position = 3")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    let mut record: Vec<u8> = row.get(0);
    // The payload sits before the trailing prev hash, key id, hash and signature.
    let index = record.len() - (32 + 16 + 32 + 64) - 1;
    record[index] ^= 0x01;
    sqlx::query("UPDATE events SET record = ? WHERE position = 3")
        .bind(record)
        .execute(&mut connection)
        .await
        .unwrap();
    connection.close().await.unwrap();

    let verdicts = api::cli::verify::verify_store(&dir.path().join("data"), Some(ledger)).await;
    let failure = match verdicts {
        Ok(verdicts) => verdicts[0].result.clone().unwrap_err(),
        Err(error) => panic!("verify should report a verdict, not fail: {error:#}"),
    };
    assert_eq!(failure.position, Some(3), "{failure}");
    assert_eq!(failure.kind.code(), "changed_bytes", "{failure}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_not_matching_its_record_is_a_verdict() {
    let (dir, ledger) = finished_ledger().await;
    let mut connection = open_writable(dir.path()).await;
    drop_triggers(&mut connection).await;
    // The indexed event id no longer matches the sealed record, so the row cannot be read.
    sqlx::query("UPDATE events SET event_id = randomblob(16) WHERE position = 2")
        .execute(&mut connection)
        .await
        .unwrap();
    connection.close().await.unwrap();

    let verdicts = api::cli::verify::verify_store(&dir.path().join("data"), Some(ledger)).await;
    let failure = match verdicts {
        Ok(verdicts) => verdicts[0].result.clone().unwrap_err(),
        Err(error) => panic!("verify should report a verdict, not fail: {error:#}"),
    };
    assert_eq!(failure.position, Some(2), "{failure}");
    assert_eq!(failure.kind.code(), "undecodable", "{failure}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_tail_event_is_found() {
    let (dir, ledger) = finished_ledger().await;
    let mut connection = open_writable(dir.path()).await;
    drop_triggers(&mut connection).await;
    sqlx::query("DELETE FROM events WHERE position = (SELECT MAX(position) FROM events)")
        .execute(&mut connection)
        .await
        .unwrap();
    connection.close().await.unwrap();

    let verdicts = api::cli::verify::verify_store(&dir.path().join("data"), Some(ledger))
        .await
        .unwrap();
    let failure = verdicts[0].result.clone().unwrap_err();
    assert!(
        ["truncated_tail", "head_mismatch"].contains(&failure.kind.code()),
        "{failure}"
    );
}
