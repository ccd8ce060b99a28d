//! Checkpoints recorded by the sequencer: cadence, roots, signatures, the frontier rebuilt
//! after a restart, and the reserved stream and event type.

use std::sync::Arc;

use domain::checkpoint::{LedgerCheckpoint, CHECKPOINT_STREAM};
use domain::clock::SystemClock;
use domain::crypto::LedgerKey;
use domain::events::EventPayload;
use domain::merkle;
use domain::record::{Actor, ActorKind, EventDraft, SealedEvent};
use eventstore_adapter::memory::MemoryBackend;
use eventstore_adapter::{
    checkpoints, AppendRequest, Backend, CheckpointPolicy, EventStore, ExpectedVersion, StoreError,
    StreamWrite,
};
use uuid::Uuid;

fn drafts(count: usize) -> Vec<EventDraft> {
    (0..count)
        .map(|n| EventDraft {
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
            payload: (n as u32).to_be_bytes().to_vec(),
        })
        .collect()
}

fn request(stream: &str, events: Vec<EventDraft>) -> AppendRequest {
    AppendRequest {
        writes: vec![StreamWrite {
            stream_id: stream.into(),
            expected: ExpectedVersion::Any,
            events,
        }],
        idempotency: None,
    }
}

fn open(backend: &Arc<MemoryBackend>, key: &Arc<LedgerKey>, every_events: u64) -> EventStore {
    let store = EventStore::open(
        Arc::clone(backend) as Arc<dyn Backend>,
        Arc::clone(key),
        Arc::new(SystemClock),
    );
    store.set_checkpoint_policy(Some(CheckpointPolicy {
        every_events,
        every_seconds: 0,
    }));
    store
}

async fn all_events(backend: &MemoryBackend, ledger: Uuid) -> Vec<SealedEvent> {
    let head = backend.head(ledger).await.unwrap().unwrap();
    backend
        .read_ledger(ledger, 0, (head.position + 1) as u32)
        .await
        .unwrap()
}

/// Verifies the whole ledger with the domain verifier and returns its summary.
async fn verify(backend: &MemoryBackend, ledger: Uuid) -> domain::verify::Summary {
    let events = all_events(backend, ledger).await;
    let records: Vec<Vec<u8>> = events.iter().map(SealedEvent::to_bytes).collect();
    let head = backend.signed_head(ledger).await.unwrap().unwrap();
    let file = domain::export::encode(records.iter().map(Vec::as_slice), &head.record);
    domain::verify::verify_export(&file).expect("the ledger verifies")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_follow_groups_and_state_the_right_roots() {
    let backend = Arc::new(MemoryBackend::new());
    let key = Arc::new(LedgerKey::generate());
    let store = open(&backend, &key, 10);
    let ledger = Uuid::now_v7();
    store
        .create_ledger(ledger, "t", Actor::system("test"), Uuid::now_v7())
        .await
        .unwrap();
    for round in 0..30 {
        store
            .append(ledger, request("s", drafts(1 + round % 4)))
            .await
            .unwrap();
    }

    let events = all_events(&backend, ledger).await;
    let hashes: Vec<merkle::Hash> = events.iter().map(|e| e.hash).collect();
    let found = checkpoints::checkpoints(backend.as_ref(), ledger)
        .await
        .unwrap();
    assert!(
        found.len() >= 5,
        "{} checkpoints for {} events",
        found.len(),
        events.len()
    );
    let mut last = 0;
    for checkpoint in &found {
        let size = checkpoint.tree_size;
        assert!(
            size - last >= 10,
            "checkpoint after {} events only",
            size - last
        );
        assert_eq!(
            events[size as usize].event_type,
            LedgerCheckpoint::EVENT_TYPE
        );
        assert_eq!(
            checkpoint.merkle_root,
            merkle::root(&hashes[..size as usize])
        );
        assert_eq!(checkpoint.head_hash, hashes[size as usize - 1]);
        checkpoint.verify(&key.public_key()).unwrap();
        last = size;
    }
    let summary = verify(&backend, ledger).await;
    assert_eq!(summary.checkpoints, found);
    assert_eq!(summary.merkle_root, merkle::root(&hashes));
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frontier_is_rebuilt_after_a_restart() {
    let backend = Arc::new(MemoryBackend::new());
    let key = Arc::new(LedgerKey::generate());
    let store = open(&backend, &key, 7);
    let ledger = Uuid::now_v7();
    store
        .create_ledger(ledger, "t", Actor::system("test"), Uuid::now_v7())
        .await
        .unwrap();
    store.append(ledger, request("s", drafts(9))).await.unwrap();
    store.append(ledger, request("s", drafts(3))).await.unwrap();
    store.shutdown().await;

    let store = open(&backend, &key, 7);
    for _ in 0..5 {
        store.append(ledger, request("t", drafts(5))).await.unwrap();
    }
    store.shutdown().await;
    let summary = verify(&backend, ledger).await;
    assert!(
        summary.checkpoints.len() >= 4,
        "{:?}",
        summary.checkpoints.len()
    );
    let versions: Vec<u64> = backend
        .read_stream(ledger, CHECKPOINT_STREAM, 0, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.stream_version)
        .collect();
    let expected: Vec<u64> = (0..versions.len() as u64).collect();
    assert_eq!(
        versions, expected,
        "the checkpoint stream continues after the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_cannot_write_checkpoints() {
    let backend = Arc::new(MemoryBackend::new());
    let key = Arc::new(LedgerKey::generate());
    let store = open(&backend, &key, 5);
    let ledger = Uuid::now_v7();
    store
        .create_ledger(ledger, "t", Actor::system("test"), Uuid::now_v7())
        .await
        .unwrap();
    let error = store
        .append(ledger, request(CHECKPOINT_STREAM, drafts(1)))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::InvalidAppend(_)), "{error}");
    let mut forged = drafts(1);
    forged[0].event_type = LedgerCheckpoint::EVENT_TYPE.into();
    let error = store
        .append(ledger, request("s", forged))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::InvalidAppend(_)), "{error}");
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_groups_keep_checkpoints_consistent() {
    let backend = Arc::new(MemoryBackend::new());
    let key = Arc::new(LedgerKey::generate());
    let store = open(&backend, &key, 100);
    let ledger = Uuid::now_v7();
    store
        .create_ledger(ledger, "t", Actor::system("test"), Uuid::now_v7())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for caller in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..2 {
                let stream = format!("s{caller}");
                store
                    .append(ledger, request(&stream, drafts(300)))
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    store.shutdown().await;
    let summary = verify(&backend, ledger).await;
    assert_eq!(
        summary.event_count,
        1 + 2400 + summary.checkpoints.len() as u64
    );
    // At most one checkpoint ends each group, and groups here hold hundreds of events.
    assert!(
        summary.checkpoints.len() >= 2,
        "{}",
        summary.checkpoints.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_keep_checkpoints_right_after_lost_races() {
    let backend = Arc::new(MemoryBackend::new());
    let key = Arc::new(LedgerKey::generate());
    let (first, second) = (open(&backend, &key, 5), open(&backend, &key, 5));
    let ledger = Uuid::now_v7();
    first
        .create_ledger(ledger, "t", Actor::system("test"), Uuid::now_v7())
        .await
        .unwrap();

    // Each writer's tip is stale at each of its appends, because the other appended last,
    // so every append first loses a race and catches its frontier up with the other's
    // events and checkpoints.
    for round in 0..24 {
        let writer = if round % 2 == 0 { &first } else { &second };
        writer
            .append(ledger, request("s", drafts(1 + round % 3)))
            .await
            .unwrap();
    }
    first.shutdown().await;
    second.shutdown().await;

    let events = all_events(&backend, ledger).await;
    let hashes: Vec<merkle::Hash> = events.iter().map(|e| e.hash).collect();
    let found = checkpoints::checkpoints(backend.as_ref(), ledger)
        .await
        .unwrap();
    assert!(found.len() >= 6, "{} checkpoints", found.len());
    for checkpoint in &found {
        let size = checkpoint.tree_size as usize;
        assert_eq!(checkpoint.merkle_root, merkle::root(&hashes[..size]));
        assert_eq!(checkpoint.head_hash, hashes[size - 1]);
    }
    let versions: Vec<u64> = backend
        .read_stream(ledger, CHECKPOINT_STREAM, 0, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.stream_version)
        .collect();
    let expected: Vec<u64> = (0..versions.len() as u64).collect();
    assert_eq!(
        versions, expected,
        "both writers continue one checkpoint stream"
    );
    let summary = verify(&backend, ledger).await;
    assert_eq!(summary.checkpoints, found);
}
