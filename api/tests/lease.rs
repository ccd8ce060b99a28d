//! Leases on a real PostgreSQL database: one holder at a time, takeover when the holder's
//! session ends, and a dispatcher takeover against the bank simulator over mutual TLS in
//! which the bank pays each payment once.

#[path = "../../projections/tests/support/pg.rs"]
mod pg;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::bank::sim::{BankSim, BankSimConfig, FaultMode};
use api::bank::{
    BankAdapter, BankError, BankMetrics, BankPaymentRequest, BankReceipt, BreakerConfig,
    CircuitBreaker, HttpsBankAdapter, HttpsBankConfig, RetryPolicy,
};
use api::dispatcher::Dispatcher;
use api::lease::{Lease, PgLease};
use api::workers::{LeaseTimings, LeasedWorkers, StartWorkers, Workers};
use async_trait::async_trait;
use domain::clock::SystemClock;
use domain::crypto::LedgerKey;
use domain::events::{
    DispatchAttempted, DomainEvent, EventPayload, PayeeAccount, PaymentSource, PaymentSubmitted,
};
use domain::record::{Actor, EventDraft};
use eventstore_adapter::memory::MemoryBackend;
use eventstore_adapter::{AppendRequest, EventStore, ExpectedVersion, StreamWrite};
use pg::TestDatabase;
use sqlx::Connection;
use uuid::Uuid;

/// Maximum wait for a takeover; the configured retry and check intervals are far shorter.
const TAKEOVER_BOUND: Duration = Duration::from_secs(10);

const FAST: LeaseTimings = LeaseTimings {
    retry: Duration::from_millis(100),
    check: Duration::from_millis(200),
};

fn lease(db: &TestDatabase, name: &str) -> Box<dyn Lease> {
    let lease = PgLease::new(&db.url, name, Duration::from_secs(5)).expect("lease url");
    Box::new(lease)
}

/// Ends the session that holds the advisory lock of lease `name`, as a node crash or a cut
/// connection would.
async fn kill_holder(db: &TestDatabase, name: &str) {
    let key = PgLease::new(&db.url, name, Duration::from_secs(5))
        .unwrap()
        .key();
    let bits = key as u64;
    let (high, low) = (i64::from((bits >> 32) as u32), i64::from(bits as u32));
    let mut connection = db.connect().await;
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' \
         AND granted AND objsubid = 1 AND classid::bigint = $1 AND objid::bigint = $2 \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .bind(high)
    .bind(low)
    .fetch_all(&mut connection)
    .await
    .expect("terminate the holder's session");
    assert_eq!(killed, [true], "exactly one session holds lease {name}");
    let _ = connection.close().await;
}

/// Polls `condition` every 20 ms until it is true or `bound` passes.
async fn wait_until(bound: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + bound;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    condition()
}

#[tokio::test]
async fn pg_lease_has_one_holder() {
    let Some(db) = TestDatabase::create("pg_lease_has_one_holder").await else {
        return;
    };
    let (first, second) = (lease(&db, "one"), lease(&db, "one"));

    let mut held = first
        .try_acquire()
        .await
        .unwrap()
        .expect("first is granted");
    assert!(
        second.try_acquire().await.unwrap().is_none(),
        "second must wait"
    );
    held.confirm().await.expect("holder confirms its lease");

    held.release().await;
    let held = second.try_acquire().await.unwrap();
    assert!(held.is_some(), "second is granted after the release");
    let other = lease(&db, "another-name").try_acquire().await.unwrap();
    assert!(other.is_some(), "another lease name is independent");
}

#[tokio::test]
async fn lost_session_fails_confirm() {
    let Some(db) = TestDatabase::create("lost_session_fails_confirm").await else {
        return;
    };
    let mut held = lease(&db, "lost").try_acquire().await.unwrap().unwrap();
    kill_holder(&db, "lost").await;
    assert!(
        held.confirm().await.is_err(),
        "a dead session no longer holds the lease"
    );
}

/// Counts the starts of one node's workers.
#[derive(Default)]
struct NodeLog {
    starts: AtomicU32,
}

fn counted_workers(log: &Arc<NodeLog>) -> StartWorkers {
    let log = Arc::clone(log);
    Box::new(move || {
        log.starts.fetch_add(1, Ordering::SeqCst);
        Ok(Workers::default())
    })
}

/// A node on its own runtime, which the test can kill like a crashed process:
/// `shutdown_background` drops every task at its current await, the lease connection too.
struct DoomedNode {
    runtime: tokio::runtime::Runtime,
    workers: LeasedWorkers,
}

impl DoomedNode {
    async fn start(lease: Box<dyn Lease>, start_workers: StartWorkers) -> DoomedNode {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let workers = runtime
            .spawn(LeasedWorkers::start(lease, FAST, start_workers))
            .await
            .unwrap()
            .unwrap();
        DoomedNode { runtime, workers }
    }

    fn crash(self) {
        self.runtime.shutdown_background();
        // The handle's drop only signals a supervisor that no longer exists.
        drop(self.workers);
    }
}

#[tokio::test]
async fn standby_takes_over_from_dead_holder() {
    let Some(db) = TestDatabase::create("standby_takes_over_from_dead_holder").await else {
        return;
    };
    let (log_a, log_b) = (Arc::new(NodeLog::default()), Arc::new(NodeLog::default()));
    let node_a = DoomedNode::start(lease(&db, "workers"), counted_workers(&log_a)).await;
    let node_b = LeasedWorkers::start(lease(&db, "workers"), FAST, counted_workers(&log_b))
        .await
        .unwrap();
    assert!(
        node_a.workers.is_held(),
        "the first node holds the lease at once"
    );
    assert!(!node_b.is_held(), "the second node is a standby");
    assert!(node_b.current().is_none());

    node_a.crash();
    let crashed_at = Instant::now();
    assert!(
        wait_until(TAKEOVER_BOUND, || node_b.is_held()).await,
        "standby did not take over within {TAKEOVER_BOUND:?}"
    );
    eprintln!("takeover after {:?}", crashed_at.elapsed());
    assert!(node_b.current().is_some());
    assert_eq!(log_a.starts.load(Ordering::SeqCst), 1);
    assert_eq!(log_b.starts.load(Ordering::SeqCst), 1);

    // A graceful stop hands the lease on at once.
    let log_c = Arc::new(NodeLog::default());
    let node_c = LeasedWorkers::start(lease(&db, "workers"), FAST, counted_workers(&log_c))
        .await
        .unwrap();
    assert!(!node_c.is_held());
    node_b.shutdown().await;
    assert!(!node_b.is_held());
    assert!(
        wait_until(TAKEOVER_BOUND, || node_c.is_held()).await,
        "the third node did not take the released lease"
    );
    node_c.shutdown().await;
}

#[tokio::test]
async fn holder_stops_workers_when_session_lost() {
    let Some(db) = TestDatabase::create("holder_stops_workers_when_session_lost").await else {
        return;
    };
    let log = Arc::new(NodeLog::default());
    // A slow retry keeps the node visibly without the lease between loss and return.
    let timings = LeaseTimings {
        retry: Duration::from_secs(2),
        check: Duration::from_millis(200),
    };
    let node = LeasedWorkers::start(lease(&db, "cut"), timings, counted_workers(&log))
        .await
        .unwrap();
    assert!(node.is_held());

    kill_holder(&db, "cut").await;
    assert!(
        wait_until(TAKEOVER_BOUND, || !node.is_held()).await,
        "the holder did not notice the lost session"
    );
    assert!(
        node.current().is_none(),
        "workers stopped on the lost lease"
    );

    // With no other node around, it becomes the holder again with fresh workers.
    assert!(wait_until(TAKEOVER_BOUND, || node.is_held()).await);
    assert_eq!(log.starts.load(Ordering::SeqCst), 2);
    node.shutdown().await;
}

/// The bank adapter of one node: the real mutual-TLS adapter, with every call logged.
struct CountingBank {
    node: &'static str,
    inner: HttpsBankAdapter,
    calls: Arc<Mutex<Vec<(&'static str, String)>>>,
}

#[async_trait]
impl BankAdapter for CountingBank {
    async fn submit(&self, request: &BankPaymentRequest) -> Result<BankReceipt, BankError> {
        let call = (self.node, request.idempotency_key.clone());
        self.calls.lock().unwrap().push(call);
        self.inner.submit(request).await
    }
}

/// What both nodes share: the event store, the bank simulator and the call log.
struct Cluster {
    _dir: tempfile::TempDir,
    store: EventStore,
    sim: BankSim,
    bank: HttpsBankConfig,
    calls: Arc<Mutex<Vec<(&'static str, String)>>>,
}

impl Cluster {
    async fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let pki = api::tls::generate_dev_pki(&dir.path().join("pki")).unwrap();
        let sim = BankSim::start(BankSimConfig::new("127.0.0.1:0", &pki))
            .await
            .unwrap();
        let mut bank = HttpsBankConfig::new(
            format!("https://localhost:{}", sim.addr().port()),
            &pki.ca_cert,
            &pki.client_cert,
            &pki.client_key,
        );
        bank.request_timeout = Duration::from_secs(20);
        let key = Arc::new(LedgerKey::from_seed([9; 32]));
        let backend = Arc::new(MemoryBackend::new());
        let store = EventStore::open(backend, key, Arc::new(SystemClock));
        Cluster {
            _dir: dir,
            store,
            sim,
            bank,
            calls: Arc::default(),
        }
    }

    /// Starts the dispatcher of one node each time that node gains the lease.
    fn dispatcher(&self, node: &'static str) -> StartWorkers {
        let (store, bank, calls) = (self.store.clone(), self.bank.clone(), self.calls.clone());
        Box::new(move || {
            let metrics = Arc::new(BankMetrics::new());
            let adapter = CountingBank {
                node,
                inner: HttpsBankAdapter::new(&bank, Arc::clone(&metrics))?,
                calls: Arc::clone(&calls),
            };
            let breaker = CircuitBreaker::new(
                BreakerConfig {
                    failure_threshold: 50,
                    cool_down: Duration::from_secs(1),
                },
                metrics,
            );
            let policy = RetryPolicy {
                max_attempts: 5,
                base_delay: Duration::from_millis(20),
                max_delay: Duration::from_millis(100),
            };
            let dispatcher =
                Dispatcher::with_adapter(store.clone(), Arc::new(adapter), breaker, policy, 4);
            Ok(Workers {
                runner: None,
                dispatcher: Some(dispatcher),
            })
        })
    }

    fn calls_by(&self, node: &str) -> usize {
        let calls = self.calls.lock().unwrap();
        calls.iter().filter(|(caller, _)| *caller == node).count()
    }

    fn calls_for(&self, key: &str) -> usize {
        let calls = self.calls.lock().unwrap();
        calls.iter().filter(|(_, called)| called == key).count()
    }
}

/// Creates a ledger with one submitted payment and returns the ledger, payment and key.
async fn submit_payment(store: &EventStore) -> (Uuid, Uuid, String) {
    let (ledger_id, payment_id) = (Uuid::now_v7(), Uuid::now_v7());
    store
        .create_ledger(
            ledger_id,
            "acme-payroll",
            Actor::system("setup"),
            Uuid::now_v7(),
        )
        .await
        .unwrap();
    let key = format!("{ledger_id}:{payment_id}");
    let submitted = PaymentSubmitted {
        payment_id,
        payee_id: Uuid::now_v7(),
        amount_minor: 12_500,
        currency: "AUD".to_owned(),
        account: PayeeAccount::Bsb {
            bsb: "062000".to_owned(),
            account: "00012345".to_owned(),
        },
        payee_name: "Harbour Payroll Pty Ltd".to_owned(),
        reference: "PAY 2026-01".to_owned(),
        bank_idempotency_key: key.clone(),
        source: PaymentSource::Api,
    };
    let draft = EventDraft {
        event_id: Uuid::now_v7(),
        event_type: PaymentSubmitted::EVENT_TYPE.to_owned(),
        schema_version: PaymentSubmitted::SCHEMA_VERSION,
        actor: Actor::system("test-client"),
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        payload: submitted.encode(),
    };
    let write = StreamWrite {
        stream_id: api::state::payment_stream(payment_id),
        expected: ExpectedVersion::NoStream,
        events: vec![draft],
    };
    let request = AppendRequest {
        writes: vec![write],
        idempotency: None,
    };
    store.append(ledger_id, request).await.unwrap();
    (ledger_id, payment_id, key)
}

/// Returns the decoded events of a payment's stream.
async fn payment_events(store: &EventStore, ledger_id: Uuid, payment_id: Uuid) -> Vec<DomainEvent> {
    let stream = api::state::payment_stream(payment_id);
    let events = store.read_stream(ledger_id, &stream, 0, 100).await.unwrap();
    events
        .iter()
        .map(|e| DomainEvent::decode(&e.event_type, e.schema_version, &e.payload).unwrap())
        .collect()
}

async fn wait_for_events(
    store: &EventStore,
    ledger_id: Uuid,
    payment_id: Uuid,
    done: impl Fn(&[DomainEvent]) -> bool,
) -> Vec<DomainEvent> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let events = payment_events(store, ledger_id, payment_id).await;
        if done(&events) || Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn dispatch_takeover_pays_once() {
    let Some(db) = TestDatabase::create("dispatch_takeover_pays_once").await else {
        return;
    };
    let cluster = Cluster::start().await;
    // The bank stores the first payment, then responds only after 5 s, so the first node
    // crashes with an attempt recorded and no outcome.
    cluster
        .sim
        .set_fault(FaultMode::Slow { delay_ms: 5_000 }, Some(1));
    let (ledger_id, payment_id, key) = submit_payment(&cluster.store).await;

    let node_a = DoomedNode::start(lease(&db, "dispatch"), cluster.dispatcher("a")).await;
    let attempted = wait_for_events(&cluster.store, ledger_id, payment_id, |events| {
        events.len() >= 2
    })
    .await;
    assert!(
        matches!(
            &attempted[1],
            DomainEvent::DispatchAttempted(DispatchAttempted { attempt: 1, .. })
        ),
        "first node recorded attempt 1: {attempted:?}"
    );
    assert!(wait_until(TAKEOVER_BOUND, || cluster.calls_by("a") == 1).await);
    let node_b = LeasedWorkers::start(lease(&db, "dispatch"), FAST, cluster.dispatcher("b"))
        .await
        .unwrap();
    assert!(!node_b.is_held());

    node_a.crash();
    assert!(
        wait_until(TAKEOVER_BOUND, || node_b.is_held()).await,
        "second node did not take over within {TAKEOVER_BOUND:?}"
    );
    let events = wait_for_events(&cluster.store, ledger_id, payment_id, |events| {
        events
            .iter()
            .any(|event| matches!(event, DomainEvent::ReceiptRecorded(_)))
    })
    .await;

    // The second node resumed with attempt 2 and the same key, and the bank responded with
    // the payment it had stored on the first call.
    let attempts: Vec<u32> = events
        .iter()
        .filter_map(|event| match event {
            DomainEvent::DispatchAttempted(attempted) => Some(attempted.attempt),
            _ => None,
        })
        .collect();
    assert_eq!(attempts, [1, 2], "events: {events:?}");
    let receipts = events
        .iter()
        .filter(|event| matches!(event, DomainEvent::ReceiptRecorded(_)))
        .count();
    assert_eq!(receipts, 1, "events: {events:?}");
    assert_eq!(
        cluster.calls_by("a"),
        1,
        "the first node called the bank once"
    );
    assert_eq!(
        cluster.calls_by("b"),
        1,
        "the second node called the bank once"
    );
    assert_eq!(cluster.calls_for(&key), 2);

    let bank = cluster.sim.ledger_stats();
    assert_eq!(bank.calls, 2, "bank calls: {bank:?}");
    assert_eq!(bank.distinct_payments, 1, "the bank paid once: {bank:?}");
    assert_eq!(bank.payments.len(), 1);
    assert_eq!(bank.payments[0].idempotency_key, key);

    // The first node's call died with it and never records anything.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = payment_events(&cluster.store, ledger_id, payment_id).await;
    assert_eq!(
        after.len(),
        events.len(),
        "nothing recorded after the receipt"
    );
    assert_eq!(cluster.calls_by("a"), 1);

    node_b.shutdown().await;
    cluster.sim.stop().await;
}

/// Opens a node's state with its own data directory, the shared PostgreSQL read models and
/// the PostgreSQL lease.
async fn open_node(db: &TestDatabase, dir: &std::path::Path) -> Arc<api::state::AppState> {
    let mut config = api::config::Config {
        data_dir: dir.to_path_buf(),
        ..api::config::Config::default()
    };
    config.read_models.backend = api::read_store::ReadModelsBackend::Postgres;
    config.read_models.url = db.url.clone();
    config.cluster.lease_url = db.url.clone();
    config.cluster.lease_name = "state".to_owned();
    config.cluster.lease_retry_ms = 100;
    config.cluster.lease_check_ms = 200;
    api::state::AppState::open(config).await.unwrap()
}

#[tokio::test]
async fn shared_read_models_follow_lease() {
    let Some(db) = TestDatabase::create("shared_read_models_follow_lease").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let node_a = open_node(&db, &dir.path().join("a")).await;
    let node_b = open_node(&db, &dir.path().join("b")).await;
    assert!(
        node_a.local_runner.is_none(),
        "shared read models are projected under the lease"
    );
    assert!(node_a.workers.is_held());
    assert!(!node_b.workers.is_held());

    let ledger_id = Uuid::now_v7();
    let actor = Actor::system("setup");
    node_a
        .store
        .create_ledger(ledger_id, "acme-payroll", actor, Uuid::now_v7())
        .await
        .unwrap();
    node_a.notify_appended(ledger_id);
    let wait = Duration::from_secs(10);
    assert!(node_a
        .models
        .wait_for_position(ledger_id, 0, wait)
        .await
        .unwrap());

    // The standby reports the projection from the shared checkpoint.
    let status = node_b.projection_status(ledger_id).await.unwrap();
    assert_eq!(status.state, projections::ProjectionState::Untracked);
    assert_eq!(status.position, Some(0));
    assert_eq!(node_b.breaker_state(), None);

    node_a.shutdown().await;
    assert!(
        wait_until(TAKEOVER_BOUND, || node_b.workers.is_held()).await,
        "the standby did not take over the workers"
    );
    let runner = node_b
        .workers
        .current()
        .and_then(|workers| workers.runner.is_some().then_some(()));
    assert!(runner.is_some(), "the new holder runs the projections");
    node_b.shutdown().await;
}
