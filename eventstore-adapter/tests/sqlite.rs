//! SQLite-only behaviour: append-only triggers, reopening, read-only mode, corruption checks.

use std::path::Path;
use std::sync::Arc;

use domain::clock::SystemClock;
use domain::crypto::LedgerKey;
use domain::record::{Actor, ActorKind, EventDraft};
use eventstore_adapter::sqlite::SqliteBackend;
use eventstore_adapter::{
    AppendOutcome, AppendRequest, Backend, BackendError, EventStore, ExpectedVersion, StoreError,
    StreamWrite,
};
use uuid::Uuid;

fn draft() -> EventDraft {
    EventDraft {
        event_id: Uuid::now_v7(),
        event_type: "test.noted".into(),
        schema_version: 1,
        actor: Actor {
            kind: ActorKind::Operator,
            id: "op-1".into(),
            credential: "s1".into(),
        },
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        payload: vec![1, 2, 3],
    }
}

fn append_one(stream: &str, expected: ExpectedVersion) -> AppendRequest {
    let write = StreamWrite {
        stream_id: stream.into(),
        expected,
        events: vec![draft()],
    };
    AppendRequest {
        writes: vec![write],
        idempotency: None,
    }
}

async fn open_store(path: &Path, keys: Vec<Arc<LedgerKey>>) -> (EventStore, SqliteBackend) {
    let backend = SqliteBackend::open(path).await.expect("open database");
    let mut keys = keys.into_iter();
    let first = keys.next().expect("at least one key");
    let store = EventStore::open_with_ring(
        Arc::new(backend.clone()),
        first,
        keys.collect(),
        Arc::new(SystemClock),
    );
    (store, backend)
}

async fn new_ledger(store: &EventStore) -> Uuid {
    let ledger = Uuid::now_v7();
    store
        .create_ledger(ledger, "tenant", Actor::system("test"), Uuid::now_v7())
        .await
        .unwrap();
    ledger
}

#[tokio::test]
async fn update_and_delete_on_events_fail() {
    let dir = tempfile::tempdir().unwrap();
    let (store, backend) = open_store(
        &dir.path().join("events.sqlite"),
        vec![Arc::new(LedgerKey::generate())],
    )
    .await;
    let ledger = new_ledger(&store).await;
    let mut request = append_one("s", ExpectedVersion::NoStream);
    request.idempotency = Some(eventstore_adapter::IdempotencyClaim {
        key: "k".into(),
        request_hash: [7; 32],
        request: Vec::new(),
        response_status: 201,
        response_body: Vec::new(),
    });
    store.append(ledger, request).await.unwrap();

    let pool = backend.pool();
    for statement in [
        "UPDATE events SET event_type = 'x'",
        "DELETE FROM events",
        "UPDATE idempotency_keys SET response_status = 500",
        "DELETE FROM idempotency_keys",
    ] {
        let result = sqlx::query(statement).execute(pool).await;
        let error = result.expect_err(statement).to_string();
        assert!(error.contains("append-only"), "{statement}: {error}");
    }
    assert_eq!(store.read_ledger(ledger, 0, 10).await.unwrap().len(), 2);
}

#[tokio::test]
async fn reopen_continues_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.sqlite");
    let key = Arc::new(LedgerKey::generate());
    let (store, backend) = open_store(&path, vec![Arc::clone(&key)]).await;
    let ledger = new_ledger(&store).await;
    store
        .append(ledger, append_one("s", ExpectedVersion::NoStream))
        .await
        .unwrap();
    store.shutdown().await;
    backend.close().await;

    let (store, _backend) = open_store(&path, vec![key]).await;
    let outcome = store
        .append(ledger, append_one("s", ExpectedVersion::Exact(0)))
        .await
        .unwrap();
    let AppendOutcome::Committed(result) = outcome else {
        panic!("expected a commit")
    };
    assert_eq!(result.first_position, 2);
    assert_eq!(result.stream_versions, vec![("s".to_string(), 1)]);
    let events = store.read_ledger(ledger, 0, 10).await.unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[2].prev_hash, events[1].hash);
}

#[tokio::test]
async fn reopen_after_rotation_needs_current_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.sqlite");
    let old_key = Arc::new(LedgerKey::generate());
    let new_key = Arc::new(LedgerKey::generate());
    let (store, backend) = open_store(&path, vec![Arc::clone(&old_key)]).await;
    let ledger = new_ledger(&store).await;
    store
        .rotate_key(
            ledger,
            Arc::clone(&new_key),
            Actor::system("test"),
            "scheduled",
        )
        .await
        .unwrap();
    // Regression: the head after a rotation event is signed by the new key, as the
    // verifier requires, even when the rotation is the last event.
    let signed = store.signed_head(ledger).await.unwrap();
    let head = domain::record::SignedHead::from_bytes(&signed.record).unwrap();
    assert_eq!(head.key_id, new_key.key_id());
    store.shutdown().await;
    backend.close().await;

    let (store, backend) = open_store(&path, vec![Arc::clone(&old_key)]).await;
    let missing = store
        .append(ledger, append_one("s", ExpectedVersion::Any))
        .await;
    assert!(
        matches!(missing, Err(StoreError::KeyNotInRing { .. })),
        "{missing:?}"
    );
    store.shutdown().await;
    backend.close().await;

    let (store, _backend) = open_store(&path, vec![old_key, Arc::clone(&new_key)]).await;
    store
        .append(ledger, append_one("s", ExpectedVersion::Any))
        .await
        .unwrap();
    let events = store.read_ledger(ledger, 0, 10).await.unwrap();
    assert_eq!(events[2].key_id, new_key.key_id());
}

#[tokio::test]
async fn read_only_open_rejects_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.sqlite");
    let key = Arc::new(LedgerKey::generate());
    let (store, backend) = open_store(&path, vec![Arc::clone(&key)]).await;
    let ledger = new_ledger(&store).await;
    store.shutdown().await;
    backend.close().await;

    let read_only = SqliteBackend::open_read_only(&path).await.unwrap();
    assert_eq!(read_only.read_ledger(ledger, 0, 10).await.unwrap().len(), 1);
    let store = EventStore::open(Arc::new(read_only), key, Arc::new(SystemClock));
    let result = store
        .append(ledger, append_one("s", ExpectedVersion::Any))
        .await;
    let Err(StoreError::CommitFailed(error)) = result else {
        panic!("expected failure: {result:?}")
    };
    assert!(matches!(*error, BackendError::Unavailable(_)), "{error:?}");
}

#[tokio::test]
async fn mismatched_index_column_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (store, backend) = open_store(
        &dir.path().join("events.sqlite"),
        vec![Arc::new(LedgerKey::generate())],
    )
    .await;
    let ledger = new_ledger(&store).await;
    store
        .append(ledger, append_one("s", ExpectedVersion::NoStream))
        .await
        .unwrap();

    // Simulate tampering by someone who can drop the trigger first.
    let pool = backend.pool();
    sqlx::query("DROP TRIGGER events_no_update")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("UPDATE events SET stream_id = 'other' WHERE position = 1")
        .execute(pool)
        .await
        .unwrap();

    let read = backend.read_ledger(ledger, 0, 10).await;
    assert!(
        matches!(read, Err(BackendError::Corrupt { position: 1, .. })),
        "{read:?}"
    );
}
