//! Contract tests run against every backend: the memory backend, SQLite in a temporary
//! directory, PostgreSQL in a fresh database (skipped, with a message, when no server is
//! reachable outside CI), and with the `kurrentdb` feature a KurrentDB server when
//! `FOLIO_TEST_KURRENTDB_URL` names one. Each backend sits behind `FaultyBackend`, which
//! can fail the next commit.

#[path = "support/pg.rs"]
mod pg;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use domain::clock::SystemClock;
use domain::crypto::{event_signature_message, verify_strict, KeyId, LedgerKey};
use domain::record::{Actor, ActorKind, EventDraft, SealedEvent, GENESIS_PREV_HASH};
use domain::verify::ChainVerifier;
use eventstore_adapter::memory::MemoryBackend;
use eventstore_adapter::postgres::PostgresBackend;
use eventstore_adapter::sqlite::SqliteBackend;
use eventstore_adapter::{
    AppendOutcome, AppendRequest, AppendResult, Backend, BackendError, ChainHead, CommitBatch,
    EventStore, ExpectedVersion, IdempotencyClaim, IdempotencyRecord, LedgerInfo, SignedHead,
    StoreError, StreamWrite,
};
use tempfile::TempDir;
use uuid::Uuid;

/// A backend wrapper that fails the next commit on request, before it reaches the backend.
struct FaultyBackend {
    inner: Arc<dyn Backend>,
    fail_next_commit: AtomicBool,
}

#[async_trait]
impl Backend for FaultyBackend {
    async fn commit(&self, batch: CommitBatch) -> Result<(), BackendError> {
        if self.fail_next_commit.swap(false, Ordering::SeqCst) {
            return Err(BackendError::Unavailable("injected commit failure".into()));
        }
        self.inner.commit(batch).await
    }
    async fn head(&self, ledger_id: Uuid) -> Result<Option<ChainHead>, BackendError> {
        self.inner.head(ledger_id).await
    }
    async fn signed_head(&self, ledger_id: Uuid) -> Result<Option<SignedHead>, BackendError> {
        self.inner.signed_head(ledger_id).await
    }
    async fn stream_version(&self, id: Uuid, stream: &str) -> Result<Option<u64>, BackendError> {
        self.inner.stream_version(id, stream).await
    }
    async fn idempotency(
        &self,
        id: Uuid,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, BackendError> {
        self.inner.idempotency(id, key).await
    }
    async fn stream_versions(
        &self,
        id: Uuid,
        streams: &[&str],
    ) -> Result<HashMap<String, u64>, BackendError> {
        self.inner.stream_versions(id, streams).await
    }
    async fn idempotency_records(
        &self,
        id: Uuid,
        keys: &[&str],
    ) -> Result<HashMap<String, IdempotencyRecord>, BackendError> {
        self.inner.idempotency_records(id, keys).await
    }
    async fn read_ledger(
        &self,
        id: Uuid,
        from: u64,
        limit: u32,
    ) -> Result<Vec<SealedEvent>, BackendError> {
        self.inner.read_ledger(id, from, limit).await
    }
    async fn read_stream(
        &self,
        id: Uuid,
        stream: &str,
        from: u64,
        limit: u32,
    ) -> Result<Vec<SealedEvent>, BackendError> {
        self.inner.read_stream(id, stream, from, limit).await
    }
    async fn ledgers(&self) -> Result<Vec<LedgerInfo>, BackendError> {
        self.inner.ledgers().await
    }
}

/// A store with one ledger created, over a backend that can fail a commit.
struct Harness {
    store: EventStore,
    faults: Arc<FaultyBackend>,
    key: Arc<LedgerKey>,
    ledger: Uuid,
    _dir: Option<TempDir>,
    /// Dropped after the store, so the database outlives its connections' use.
    _db: Option<pg::TestDatabase>,
}

impl Harness {
    async fn memory() -> Harness {
        Harness::over(Arc::new(MemoryBackend::new()), None).await
    }

    async fn sqlite() -> Harness {
        let dir = tempfile::tempdir().expect("temporary directory");
        let backend = SqliteBackend::open(&dir.path().join("events.sqlite"))
            .await
            .expect("open");
        Harness::over(Arc::new(backend), Some(dir)).await
    }

    /// Opens a harness on the KurrentDB server named by `FOLIO_TEST_KURRENTDB_URL`, or
    /// returns `None` after printing a skip message when the variable is unset.
    #[cfg(feature = "kurrentdb")]
    async fn kurrentdb(test: &str) -> Option<Harness> {
        use std::io::Write;

        let Ok(url) = std::env::var("FOLIO_TEST_KURRENTDB_URL") else {
            // Written past the test harness's capture, so a skip shows in every run.
            let _ = writeln!(
                std::io::stderr(),
                "kurrentdb::{test}: skipped, FOLIO_TEST_KURRENTDB_URL is not set \
                 (set it to kurrentdb://host:port?tls=false to run against a server)"
            );
            return None;
        };
        let backend = eventstore_adapter::kurrentdb::KurrentBackend::connect(&url)
            .unwrap_or_else(|error| panic!("FOLIO_TEST_KURRENTDB_URL: {error}"));
        Some(Harness::over(Arc::new(backend), None).await)
    }

    /// Returns `None` when PostgreSQL is unreachable outside CI, and the test then passes as
    /// skipped.
    async fn postgres() -> Option<Harness> {
        let db = pg::TestDatabase::create().await?;
        let backend = PostgresBackend::connect(db.url()).await.expect("connect");
        let mut harness = Harness::over(Arc::new(backend), None).await;
        harness._db = Some(db);
        Some(harness)
    }

    async fn over(inner: Arc<dyn Backend>, dir: Option<TempDir>) -> Harness {
        let faults = Arc::new(FaultyBackend {
            inner,
            fail_next_commit: AtomicBool::new(false),
        });
        let key = Arc::new(LedgerKey::generate());
        let store = EventStore::open(faults.clone(), Arc::clone(&key), Arc::new(SystemClock));
        let ledger = Uuid::now_v7();
        let actor = Actor::system("test");
        store
            .create_ledger(ledger, "tenant-a", actor, Uuid::now_v7())
            .await
            .expect("create");
        Harness {
            store,
            faults,
            key,
            ledger,
            _dir: dir,
            _db: None,
        }
    }

    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        self.store.append(self.ledger, request).await
    }

    async fn all_events(&self) -> Vec<SealedEvent> {
        let mut events = Vec::new();
        loop {
            let from = events.len() as u64;
            let page = self
                .store
                .read_ledger(self.ledger, from, 1000)
                .await
                .expect("read");
            if page.is_empty() {
                return events;
            }
            events.extend(page);
        }
    }
}

fn draft(note: &str) -> EventDraft {
    EventDraft {
        event_id: Uuid::now_v7(),
        event_type: "test.noted".into(),
        schema_version: 1,
        actor: Actor {
            kind: ActorKind::ApiClient,
            id: "client-1".into(),
            credential: "t1".into(),
        },
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        payload: note.as_bytes().to_vec(),
    }
}

fn write(stream: &str, expected: ExpectedVersion, count: usize) -> StreamWrite {
    let events = (0..count)
        .map(|i| draft(&format!("{stream} {i}")))
        .collect();
    StreamWrite {
        stream_id: stream.into(),
        expected,
        events,
    }
}

fn request(writes: Vec<StreamWrite>) -> AppendRequest {
    AppendRequest {
        writes,
        idempotency: None,
    }
}

fn claim(key: &str, body: &str) -> IdempotencyClaim {
    IdempotencyClaim {
        key: key.into(),
        request_hash: *blake3::hash(body.as_bytes()).as_bytes(),
        request: body.as_bytes().to_vec(),
        response_status: 201,
        response_body: b"{}".to_vec(),
    }
}

fn committed(outcome: AppendOutcome) -> AppendResult {
    match outcome {
        AppendOutcome::Committed(result) => result,
        AppendOutcome::Duplicate(record) => panic!("expected a commit, got duplicate {record:?}"),
    }
}

/// Checks positions, hash links, hashes and signatures of a whole chain, with the keys by id.
fn assert_chain_valid(events: &[SealedEvent], keys: &[&LedgerKey]) {
    let keys: HashMap<KeyId, [u8; 32]> =
        keys.iter().map(|k| (k.key_id(), k.public_key())).collect();
    let mut prev_hash = GENESIS_PREV_HASH;
    for (index, event) in events.iter().enumerate() {
        assert_eq!(event.position, index as u64, "positions are gapless");
        assert_eq!(event.prev_hash, prev_hash, "prev_hash links at {index}");
        assert_eq!(
            event.compute_hash(),
            event.hash,
            "hash recomputes at {index}"
        );
        let public_key = keys.get(&event.key_id).expect("signing key is known");
        let message = event_signature_message(&event.hash);
        verify_strict(public_key, &message, &event.signature).expect("signature verifies");
        prev_hash = event.hash;
    }
}

/// Runs the domain's independent verifier over the stored records and the signed head.
async fn assert_verifier_accepts(h: &Harness) {
    let events = h.all_events().await;
    let records: Vec<Vec<u8>> = events.iter().map(SealedEvent::to_bytes).collect();
    let signed = h.store.signed_head(h.ledger).await.unwrap();
    let mut verifier = ChainVerifier::new();
    for chunk in records.chunks(100) {
        verifier.push_chunk(chunk).expect("chunk verifies");
    }
    let summary = verifier
        .finish(Some(&signed.record))
        .expect("chain and signed head verify");
    assert_eq!(summary.event_count, events.len() as u64);
    assert_eq!(summary.head_position, signed.head.position);
    assert_eq!(summary.head_hash, signed.head.hash);
}

/// Checks stream versions are gapless from 0 in every stream.
fn assert_streams_gapless(events: &[SealedEvent]) {
    let mut versions: HashMap<&str, u64> = HashMap::new();
    for event in events {
        let next = versions.entry(event.stream_id.as_str()).or_insert(0);
        assert_eq!(
            event.stream_version, *next,
            "stream {} version",
            event.stream_id
        );
        *next += 1;
    }
}

async fn expected_version_rules(h: Harness) {
    let first = committed(
        h.append(request(vec![write("s", ExpectedVersion::NoStream, 1)]))
            .await
            .unwrap(),
    );
    assert_eq!(first.first_position, 1);
    assert_eq!(first.stream_versions, vec![("s".to_string(), 0)]);

    let again = h
        .append(request(vec![write("s", ExpectedVersion::NoStream, 1)]))
        .await;
    assert!(
        matches!(
            again,
            Err(StoreError::WrongExpectedVersion {
                actual: Some(0),
                ..
            })
        ),
        "NoStream on an existing stream: {again:?}"
    );

    let exact = committed(
        h.append(request(vec![write("s", ExpectedVersion::Exact(0), 2)]))
            .await
            .unwrap(),
    );
    assert_eq!(exact.stream_versions, vec![("s".to_string(), 2)]);
    assert_eq!((exact.first_position, exact.last_position), (2, 3));

    let stale = h
        .append(request(vec![write("s", ExpectedVersion::Exact(0), 1)]))
        .await;
    assert!(matches!(
        stale,
        Err(StoreError::WrongExpectedVersion {
            actual: Some(2),
            ..
        })
    ));

    let missing = h
        .append(request(vec![write("t", ExpectedVersion::Exact(0), 1)]))
        .await;
    assert!(matches!(
        missing,
        Err(StoreError::WrongExpectedVersion { actual: None, .. })
    ));

    let any = committed(
        h.append(request(vec![write("s", ExpectedVersion::Any, 1)]))
            .await
            .unwrap(),
    );
    assert_eq!(any.stream_versions, vec![("s".to_string(), 3)]);
    let head = h.store.head(h.ledger).await.unwrap();
    assert_eq!(head.position, 4);
    assert_eq!(head.hash, any.last_hash);
    assert_eq!(
        h.store
            .read_stream(h.ledger, "s", 0, 100)
            .await
            .unwrap()
            .len(),
        4
    );
}

async fn concurrent_same_version_one_wins(h: Harness) {
    committed(
        h.append(request(vec![write("acct", ExpectedVersion::NoStream, 1)]))
            .await
            .unwrap(),
    );
    let h = Arc::new(h);
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let h = Arc::clone(&h);
        let req = request(vec![write("acct", ExpectedVersion::Exact(0), 3)]);
        let ids: Vec<Uuid> = req.writes[0].events.iter().map(|e| e.event_id).collect();
        tasks.push(tokio::spawn(async move { (ids, h.append(req).await) }));
    }
    let mut wins = 0;
    let mut loser_ids = Vec::new();
    for task in tasks {
        let (ids, outcome) = task.await.unwrap();
        match outcome {
            Ok(AppendOutcome::Committed(_)) => wins += 1,
            Err(StoreError::WrongExpectedVersion {
                actual: Some(3), ..
            }) => loser_ids = ids,
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(wins, 1, "exactly one append wins");
    assert_eq!(loser_ids.len(), 3, "the other is rejected");

    let events = h.all_events().await;
    let stream = h.store.read_stream(h.ledger, "acct", 0, 100).await.unwrap();
    for id in &loser_ids {
        assert!(
            events.iter().all(|e| e.event_id != *id),
            "loser event in read_ledger"
        );
        assert!(
            stream.iter().all(|e| e.event_id != *id),
            "loser event in read_stream"
        );
    }
    assert_eq!(events.len(), 5);
    assert_eq!(h.store.head(h.ledger).await.unwrap().position, 4);
    assert_chain_valid(&events, &[&h.key]);
}

async fn multi_stream_append_is_atomic(h: Harness) {
    let both = request(vec![
        write("payment-1", ExpectedVersion::NoStream, 2),
        write("batch-1", ExpectedVersion::NoStream, 1),
    ]);
    let result = committed(h.append(both).await.unwrap());
    assert_eq!((result.first_position, result.last_position), (1, 3));
    assert_eq!(
        result.stream_versions,
        vec![("payment-1".to_string(), 1), ("batch-1".to_string(), 0)]
    );

    // The second write conflicts, so the first must not land either.
    let half = request(vec![
        write("payment-2", ExpectedVersion::NoStream, 1),
        write("batch-1", ExpectedVersion::NoStream, 1),
    ]);
    let conflict = h.append(half).await;
    assert!(
        matches!(conflict, Err(StoreError::WrongExpectedVersion { .. })),
        "{conflict:?}"
    );
    assert!(h
        .store
        .read_stream(h.ledger, "payment-2", 0, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(h.store.head(h.ledger).await.unwrap().position, 3);
}

async fn check_only_write_guards_append(h: Harness) {
    committed(
        h.append(request(vec![write(
            "allowlist",
            ExpectedVersion::NoStream,
            1,
        )]))
        .await
        .unwrap(),
    );

    // The allow-list is at version 0: a payment that relied on it commits, and the
    // allow-list stream does not change.
    let pinned = request(vec![
        write("payment-1", ExpectedVersion::NoStream, 1),
        write("allowlist", ExpectedVersion::Exact(0), 0),
    ]);
    let result = committed(h.append(pinned).await.unwrap());
    assert_eq!(result.stream_versions, vec![("payment-1".to_string(), 0)]);
    assert_eq!(
        h.store
            .read_stream(h.ledger, "allowlist", 0, 10)
            .await
            .unwrap()
            .len(),
        1
    );

    // The allow-list moved on: a payment decided on version 0 is rejected whole.
    committed(
        h.append(request(vec![write(
            "allowlist",
            ExpectedVersion::Exact(0),
            1,
        )]))
        .await
        .unwrap(),
    );
    let stale = request(vec![
        write("payment-2", ExpectedVersion::NoStream, 1),
        write("allowlist", ExpectedVersion::Exact(0), 0),
    ]);
    let conflict = h.append(stale).await;
    assert!(
        matches!(&conflict, Err(StoreError::WrongExpectedVersion { stream_id, actual: Some(1), .. }) if stream_id == "allowlist"),
        "{conflict:?}"
    );
    assert!(h
        .store
        .read_stream(h.ledger, "payment-2", 0, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(h.store.head(h.ledger).await.unwrap().position, 3);
}

async fn idempotency_duplicate_and_reuse(h: Harness) {
    let mut first = request(vec![write("p", ExpectedVersion::NoStream, 2)]);
    first.idempotency = Some(claim("key-1", "body-a"));
    let original = committed(h.append(first).await.unwrap());

    // A retry carries new event ids but the same request hash.
    let mut retry = request(vec![write("p", ExpectedVersion::NoStream, 2)]);
    retry.idempotency = Some(claim("key-1", "body-a"));
    match h.append(retry).await.unwrap() {
        AppendOutcome::Duplicate(record) => {
            assert_eq!(record.first_position, original.first_position);
            assert_eq!(record.last_position, original.last_position);
            assert_eq!(record.claim, claim("key-1", "body-a"));
        }
        other => panic!("expected duplicate, got {other:?}"),
    }

    let mut changed = request(vec![write("q", ExpectedVersion::NoStream, 1)]);
    changed.idempotency = Some(claim("key-1", "body-b"));
    let reused = h.append(changed).await;
    assert!(
        matches!(reused, Err(StoreError::IdempotencyKeyReused { .. })),
        "{reused:?}"
    );
    assert!(h
        .store
        .read_stream(h.ledger, "q", 0, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        h.store.head(h.ledger).await.unwrap().position,
        original.last_position
    );

    let stored = h
        .store
        .idempotency(h.ledger, "key-1")
        .await
        .unwrap()
        .expect("stored key");
    assert_eq!(stored.first_position, original.first_position);
}

async fn concurrent_same_key_commits_once(h: Harness) {
    let h = Arc::new(h);
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let h = Arc::clone(&h);
        let mut req = request(vec![write("r", ExpectedVersion::Any, 1)]);
        req.idempotency = Some(claim("key-c", "same-body"));
        tasks.push(tokio::spawn(async move { h.append(req).await }));
    }
    let mut committed_count = 0;
    let mut duplicates = 0;
    for task in tasks {
        match task.await.unwrap().unwrap() {
            AppendOutcome::Committed(_) => committed_count += 1,
            AppendOutcome::Duplicate(_) => duplicates += 1,
        }
    }
    assert_eq!((committed_count, duplicates), (1, 1));
    assert_eq!(
        h.store
            .read_stream(h.ledger, "r", 0, 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn many_concurrent_callers_gapless(h: Harness) {
    let h = Arc::new(h);
    let mut tasks = Vec::new();
    for task_index in 0..50 {
        let h = Arc::clone(&h);
        tasks.push(tokio::spawn(async move {
            let stream = format!("task-{task_index}");
            for i in 0..20u64 {
                let expected = if i == 0 {
                    ExpectedVersion::NoStream
                } else {
                    ExpectedVersion::Exact(i - 1)
                };
                committed(
                    h.append(request(vec![write(&stream, expected, 1)]))
                        .await
                        .unwrap(),
                );
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }

    let events = h.all_events().await;
    assert_eq!(events.len(), 1 + 50 * 20);
    assert_chain_valid(&events, &[&h.key]);
    assert_streams_gapless(&events);
    let head = h.store.head(h.ledger).await.unwrap();
    assert_eq!(head.position, 1000);
    assert_eq!(h.store.signed_head(h.ledger).await.unwrap().head, head);
    assert_verifier_accepts(&h).await;
}

async fn subscription_catches_up_then_goes_live(h: Harness) {
    for i in 0..5 {
        let stream = format!("s{i}");
        committed(
            h.append(request(vec![write(&stream, ExpectedVersion::NoStream, 2)]))
                .await
                .unwrap(),
        );
    }
    let mut from_start = h.store.subscribe(h.ledger, 0);
    let mut from_middle = h.store.subscribe(h.ledger, 7);
    for position in 0..11 {
        let event = from_start.next().await.unwrap().unwrap();
        assert_eq!(event.position, position);
    }
    assert_eq!(from_middle.next().await.unwrap().unwrap().position, 7);

    let store = h.store.clone();
    let ledger = h.ledger;
    let writer = tokio::spawn(async move {
        for i in 0..10 {
            let req = request(vec![write(
                &format!("live{i}"),
                ExpectedVersion::NoStream,
                3,
            )]);
            committed(store.append(ledger, req).await.unwrap());
        }
    });
    for position in 11..41 {
        let event = from_start.next().await.unwrap().unwrap();
        assert_eq!(
            event.position, position,
            "live events arrive in order without gaps"
        );
    }
    for position in 8..41 {
        assert_eq!(
            from_middle.next().await.unwrap().unwrap().position,
            position
        );
    }
    writer.await.unwrap();
}

async fn subscription_waits_for_new_ledger(h: Harness) {
    let ledger = Uuid::now_v7();
    let mut subscription = h.store.subscribe(ledger, 0);
    let store = h.store.clone();
    let creator = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let actor = Actor::system("test");
        store
            .create_ledger(ledger, "tenant-b", actor, Uuid::now_v7())
            .await
            .unwrap();
        let req = request(vec![write("late", ExpectedVersion::NoStream, 1)]);
        committed(store.append(ledger, req).await.unwrap());
    });
    let genesis = subscription.next().await.unwrap().unwrap();
    assert_eq!(genesis.position, 0);
    assert_eq!(genesis.event_type, "ledger.created");
    assert_eq!(subscription.next().await.unwrap().unwrap().position, 1);
    creator.await.unwrap();
}

async fn failed_commit_leaves_no_trace(h: Harness) {
    committed(
        h.append(request(vec![write("a", ExpectedVersion::NoStream, 1)]))
            .await
            .unwrap(),
    );
    let head_before = h.store.head(h.ledger).await.unwrap();

    h.faults.fail_next_commit.store(true, Ordering::SeqCst);
    let mut doomed = request(vec![write("b", ExpectedVersion::NoStream, 2)]);
    doomed.idempotency = Some(claim("key-f", "body"));
    let failed = h.append(doomed.clone()).await;
    assert!(
        matches!(failed, Err(StoreError::CommitFailed(_))),
        "{failed:?}"
    );
    assert_eq!(h.store.head(h.ledger).await.unwrap(), head_before);
    assert!(h
        .store
        .read_stream(h.ledger, "b", 0, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(h
        .store
        .idempotency(h.ledger, "key-f")
        .await
        .unwrap()
        .is_none());

    // The sequencer's tip went back to the stored head, so the retry lands right after it.
    let retried = committed(h.append(doomed).await.unwrap());
    assert_eq!(retried.first_position, head_before.position + 1);
    assert_chain_valid(&h.all_events().await, &[&h.key]);
    assert_verifier_accepts(&h).await;
}

async fn key_rotation_switches_signer(h: Harness) {
    committed(
        h.append(request(vec![write("a", ExpectedVersion::NoStream, 1)]))
            .await
            .unwrap(),
    );
    let new_key = Arc::new(LedgerKey::generate());
    let rotation = h
        .store
        .rotate_key(
            h.ledger,
            Arc::clone(&new_key),
            Actor::system("test"),
            "scheduled",
        )
        .await
        .unwrap();
    assert_eq!(rotation.first_position, 2);
    let after = committed(
        h.append(request(vec![write("a", ExpectedVersion::Exact(0), 1)]))
            .await
            .unwrap(),
    );

    let events = h.all_events().await;
    assert_eq!(events[2].event_type, "ledger.key_rotated");
    assert_eq!(
        events[2].key_id,
        h.key.key_id(),
        "the old key signs the rotation"
    );
    assert_eq!(
        events[after.first_position as usize].key_id,
        new_key.key_id()
    );
    assert_chain_valid(&events, &[&h.key, &new_key]);
    assert_verifier_accepts(&h).await;
}

async fn invalid_requests_rejected(h: Harness) {
    let empty = h.append(request(Vec::new())).await;
    assert!(matches!(empty, Err(StoreError::InvalidAppend(_))));
    let ledger_stream = h
        .append(request(vec![write("ledger", ExpectedVersion::Any, 1)]))
        .await;
    assert!(matches!(ledger_stream, Err(StoreError::InvalidAppend(_))));
    let twice = request(vec![
        write("x", ExpectedVersion::Any, 1),
        write("x", ExpectedVersion::Any, 1),
    ]);
    assert!(matches!(
        h.append(twice).await,
        Err(StoreError::InvalidAppend(_))
    ));
    let no_events = request(vec![write("x", ExpectedVersion::Any, 0)]);
    assert!(matches!(
        h.append(no_events).await,
        Err(StoreError::InvalidAppend(_))
    ));
    let only_checks = request(vec![
        write("x", ExpectedVersion::NoStream, 0),
        write("y", ExpectedVersion::NoStream, 0),
    ]);
    assert!(matches!(
        h.append(only_checks).await,
        Err(StoreError::InvalidAppend(_))
    ));
    let too_many = request(vec![write("x", ExpectedVersion::Any, 10_001)]);
    assert!(matches!(
        h.append(too_many).await,
        Err(StoreError::InvalidAppend(_))
    ));

    let unknown = h
        .store
        .append(
            Uuid::now_v7(),
            request(vec![write("x", ExpectedVersion::Any, 1)]),
        )
        .await;
    assert!(
        matches!(unknown, Err(StoreError::LedgerNotFound(_))),
        "{unknown:?}"
    );
    let again = h
        .store
        .create_ledger(h.ledger, "tenant-a", Actor::system("test"), Uuid::now_v7())
        .await;
    assert!(
        matches!(again, Err(StoreError::LedgerExists(_))),
        "{again:?}"
    );
    assert_eq!(h.store.head(h.ledger).await.unwrap().position, 0);

    let ledgers = h.store.ledgers().await.unwrap();
    assert_eq!(ledgers.len(), 1);
    assert_eq!(ledgers[0].tenant, "tenant-a");
}

async fn shutdown_drains_queue(h: Harness) {
    let h = Arc::new(h);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let h = Arc::clone(&h);
        let req = request(vec![write(&format!("d{i}"), ExpectedVersion::NoStream, 1)]);
        tasks.push(tokio::spawn(async move { h.append(req).await }));
    }
    let mut ok = 0;
    for task in tasks {
        if task.await.unwrap().is_ok() {
            ok += 1;
        }
    }
    h.store.shutdown().await;
    let after = h
        .append(request(vec![write("late", ExpectedVersion::Any, 1)]))
        .await;
    assert!(matches!(after, Err(StoreError::SequencerStopped(_))));
    assert_eq!(ok, 20);
    assert_eq!(h.all_events().await.len(), 21);
}

async fn batched_lookups_match_single_lookups(h: Harness) {
    let backend = Arc::clone(&h.faults.inner);
    let mut keyed = request(vec![write("a", ExpectedVersion::NoStream, 3)]);
    keyed.idempotency = Some(claim("k1", "body-1"));
    h.append(keyed).await.unwrap();
    let mut keyed = request(vec![write("b", ExpectedVersion::NoStream, 1)]);
    keyed.idempotency = Some(claim("k2", "body-2"));
    h.append(keyed).await.unwrap();
    // A stream longer than one page of any index scan, built in several appends.
    for _ in 0..3 {
        h.append(request(vec![write("long", ExpectedVersion::Any, 100)]))
            .await
            .unwrap();
    }

    // More names than one lookup query takes, with the known ones at both ends and repeated.
    let fillers: Vec<String> = (0..600).map(|i| format!("missing-{i}")).collect();
    let mut streams = vec!["a", "ledger", "a"];
    streams.extend(fillers.iter().map(String::as_str));
    streams.extend(["long", "b"]);
    let versions = backend.stream_versions(h.ledger, &streams).await.unwrap();
    let expected: HashMap<String, u64> = [("a", 2), ("b", 0), ("ledger", 0), ("long", 299)]
        .into_iter()
        .map(|(stream, version)| (stream.to_string(), version))
        .collect();
    assert_eq!(versions, expected);
    for stream in ["a", "b", "ledger", "long", "missing-0"] {
        let single = backend.stream_version(h.ledger, stream).await.unwrap();
        assert_eq!(versions.get(stream).copied(), single, "stream {stream}");
    }

    let mut keys = vec!["k2"];
    keys.extend(fillers.iter().map(String::as_str));
    keys.push("k1");
    let records = backend.idempotency_records(h.ledger, &keys).await.unwrap();
    assert_eq!(records.len(), 2);
    for key in ["k1", "k2"] {
        let single = backend.idempotency(h.ledger, key).await.unwrap();
        assert_eq!(records.get(key), single.as_ref(), "key {key}");
    }
    // Keys by the position their append ended at, as a migration copies them.
    let ranged = backend.idempotency_range(h.ledger, 0, 100).await.unwrap();
    let ranged: Vec<&str> = ranged.iter().map(|r| r.claim.key.as_str()).collect();
    assert_eq!(ranged, vec!["k1", "k2"]);
    let k1_end = records["k1"].last_position;
    let only_k1 = backend
        .idempotency_range(h.ledger, 0, k1_end)
        .await
        .unwrap();
    assert_eq!(only_k1, vec![records["k1"].clone()]);
    let after = backend
        .idempotency_range(h.ledger, k1_end + 1, 100)
        .await
        .unwrap();
    assert_eq!(after, vec![records["k2"].clone()]);

    let other = Uuid::now_v7();
    assert!(backend
        .stream_versions(other, &["a"])
        .await
        .unwrap()
        .is_empty());
    assert!(backend
        .idempotency_records(other, &["k1"])
        .await
        .unwrap()
        .is_empty());
    assert!(backend
        .stream_versions(h.ledger, &[])
        .await
        .unwrap()
        .is_empty());
}

async fn concurrent_retries_of_stored_keys(h: Harness) {
    for i in 0..10 {
        let mut first = request(vec![write(
            &format!("old-{i}"),
            ExpectedVersion::NoStream,
            1,
        )]);
        first.idempotency = Some(claim(&format!("old-{i}"), "body"));
        h.append(first).await.unwrap();
    }
    let head = h.store.head(h.ledger).await.unwrap().position;

    // Retries of stored keys and new keys arrive together, so groups mix both.
    let h = Arc::new(h);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let h = Arc::clone(&h);
        let name = if i % 2 == 0 {
            format!("old-{}", i / 2)
        } else {
            format!("new-{i}")
        };
        let mut req = request(vec![write(&name, ExpectedVersion::NoStream, 1)]);
        req.idempotency = Some(claim(&name, "body"));
        tasks.push(tokio::spawn(async move { (i, h.append(req).await) }));
    }
    for task in tasks {
        let (i, outcome) = task.await.unwrap();
        match outcome.unwrap() {
            AppendOutcome::Duplicate(record) => {
                assert_eq!(i % 2, 0, "request {i} is a retry");
                assert!(record.last_position <= head);
            }
            AppendOutcome::Committed(result) => {
                assert_eq!(i % 2, 1, "request {i} is new");
                assert!(result.first_position > head);
            }
        }
    }
    let events = h.all_events().await;
    assert_eq!(events.len() as u64, head + 1 + 10);
    assert_streams_gapless(&events);
}

macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Harness::memory().await).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Harness::sqlite().await).await;
                }
            )*
        }
        #[cfg(feature = "kurrentdb")]
        mod kurrentdb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(harness) = super::Harness::kurrentdb(stringify!($name)).await else {
                        return;
                    };
                    super::$name(harness).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(harness) = super::Harness::postgres().await {
                        super::$name(harness).await;
                    }
                }
            )*
        }
    };
}

contract_tests!(
    expected_version_rules,
    concurrent_same_version_one_wins,
    multi_stream_append_is_atomic,
    check_only_write_guards_append,
    idempotency_duplicate_and_reuse,
    concurrent_same_key_commits_once,
    many_concurrent_callers_gapless,
    subscription_catches_up_then_goes_live,
    subscription_waits_for_new_ledger,
    failed_commit_leaves_no_trace,
    key_rotation_switches_signer,
    invalid_requests_rejected,
    shutdown_drains_queue,
    batched_lookups_match_single_lookups,
    concurrent_retries_of_stored_keys,
);
