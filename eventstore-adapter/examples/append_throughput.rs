//! Measures sealed, durable append throughput on SQLite in a temporary directory.
//!
//! Run with `cargo run --release -p folio-eventstore --example append_throughput [tasks]
//! [appends_per_task] [events_per_append]`. Defaults: 8 tasks, 40 appends, 256 events each.
//! Prints events per second, which depends on the machine, its load and the disk.

use std::sync::Arc;
use std::time::Instant;

use domain::clock::SystemClock;
use domain::crypto::LedgerKey;
use domain::record::{Actor, ActorKind, EventDraft};
use eventstore_adapter::sqlite::SqliteBackend;
use eventstore_adapter::{AppendRequest, EventStore, ExpectedVersion, StreamWrite};
use uuid::Uuid;

fn argument(index: usize, default: usize) -> usize {
    std::env::args()
        .nth(index)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn draft() -> EventDraft {
    EventDraft {
        event_id: Uuid::now_v7(),
        event_type: "payment.submitted".into(),
        schema_version: 1,
        actor: Actor {
            kind: ActorKind::ApiClient,
            id: "client".into(),
            credential: "tok".into(),
        },
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        payload: vec![0x5A; 160],
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tasks = argument(1, 8);
    let appends = argument(2, 40);
    let events_per_append = argument(3, 256);

    let dir = tempfile::tempdir()?;
    let backend = SqliteBackend::open(&dir.path().join("events.sqlite")).await?;
    let key = Arc::new(LedgerKey::generate());
    let store = EventStore::open(Arc::new(backend), key, Arc::new(SystemClock));
    let ledger = Uuid::now_v7();
    store
        .create_ledger(ledger, "bench", Actor::system("bench"), Uuid::now_v7())
        .await?;

    let started = Instant::now();
    let mut handles = Vec::new();
    for task in 0..tasks {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..appends {
                let events = (0..events_per_append).map(|_| draft()).collect();
                let stream_id = format!("stream-{task}-{i}");
                let write = StreamWrite {
                    stream_id,
                    expected: ExpectedVersion::NoStream,
                    events,
                };
                let request = AppendRequest {
                    writes: vec![write],
                    idempotency: None,
                };
                store.append(ledger, request).await?;
            }
            Ok::<(), eventstore_adapter::StoreError>(())
        }));
    }
    for handle in handles {
        handle.await??;
    }
    let elapsed = started.elapsed();

    let total = tasks * appends * events_per_append;
    let head = store.head(ledger).await?;
    assert_eq!(head.position, total as u64, "every event was committed");
    let rate = total as f64 / elapsed.as_secs_f64();
    println!(
        "{total} events in {:.3} s: {rate:.0} events/s",
        elapsed.as_secs_f64()
    );
    store.shutdown().await;
    Ok(())
}
