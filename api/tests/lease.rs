//! Ledger leases on a real PostgreSQL database: one holder per ledger, ledgers spread over
//! the nodes, and takeover when a holder's session ends. A dispatcher takeover runs against
//! the bank simulator over mutual TLS, and the bank pays each payment once.

#[path = "../../projections/tests/support/pg.rs"]
mod pg;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::bank::sim::{BankSim, BankSimConfig, FaultMode};
use api::bank::{
    BankAdapter, BankError, BankMetrics, BankPaymentRequest, BankReceipt, BreakerConfig,
    CircuitBreaker, HttpsBankAdapter, HttpsBankConfig, RetryPolicy,
};
use api::dispatcher::{BankLink, Dispatcher};
use api::lease::{ledger_lease_key, split_key, LeaseSession, PgLeases};
use api::workers::{LeaseTimings, LedgerWorkers, StartWorkers, Workers};
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

fn leases(db: &TestDatabase, name: &str) -> PgLeases {
    PgLeases::new(&db.url, name, Duration::from_secs(5)).expect("lease url")
}

/// Ends the session that holds the lease of `ledger_id` under lease `name`, as a node
/// crash or a cut connection would.
async fn kill_holder(db: &TestDatabase, name: &str, ledger_id: Uuid) {
    let (high, low) = split_key(ledger_lease_key(name, ledger_id));
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
    assert_eq!(
        killed,
        [true],
        "exactly one session holds ledger {ledger_id}"
    );
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

/// Creates an event store in memory with `count` ledgers, which the nodes of a test share.
async fn store_with_ledgers(count: usize) -> (EventStore, Vec<Uuid>) {
    let key = Arc::new(LedgerKey::from_seed([9; 32]));
    let store = EventStore::open(Arc::new(MemoryBackend::new()), key, Arc::new(SystemClock));
    let mut ledgers = Vec::new();
    for n in 0..count {
        let ledger_id = Uuid::now_v7();
        let tenant = format!("tenant-{n}");
        let actor = Actor::system("setup");
        store
            .create_ledger(ledger_id, &tenant, actor, Uuid::now_v7())
            .await
            .unwrap();
        ledgers.push(ledger_id);
    }
    (store, ledgers)
}

#[tokio::test]
async fn pg_ledger_lease_has_one_holder() {
    let Some(db) = TestDatabase::create("pg_ledger_lease_has_one_holder").await else {
        return;
    };
    let (mut first, mut second) = (leases(&db, "one"), leases(&db, "one"));
    let (ledger, other) = (Uuid::now_v7(), Uuid::now_v7());

    assert!(first.try_acquire(ledger).await.unwrap(), "first is granted");
    assert!(
        !second.try_acquire(ledger).await.unwrap(),
        "second must wait"
    );
    assert!(
        second.try_acquire(other).await.unwrap(),
        "another ledger is free"
    );
    assert_eq!(first.members().await.unwrap(), 2);
    assert_eq!(second.members().await.unwrap(), 2);
    let both = [ledger, other];
    assert_eq!(first.held(&both).await.unwrap(), HashSet::from([ledger]));
    assert_eq!(second.held(&both).await.unwrap(), HashSet::from([other]));

    first.release(ledger).await.unwrap();
    assert!(first.held(&both).await.unwrap().is_empty());
    assert!(
        second.try_acquire(ledger).await.unwrap(),
        "second is granted after the release"
    );
    let mut elsewhere = leases(&db, "another-name");
    assert!(
        elsewhere.try_acquire(ledger).await.unwrap(),
        "another lease name is independent"
    );
    assert_eq!(elsewhere.members().await.unwrap(), 1);
}

#[tokio::test]
async fn lost_session_fails_held() {
    let Some(db) = TestDatabase::create("lost_session_fails_held").await else {
        return;
    };
    let mut held = leases(&db, "lost");
    let ledger = Uuid::now_v7();
    assert!(held.try_acquire(ledger).await.unwrap());
    kill_holder(&db, "lost", ledger).await;
    assert!(
        held.held(&[ledger]).await.is_err(),
        "a dead session no longer holds the lease"
    );
    assert!(
        held.try_acquire(ledger).await.unwrap(),
        "the next call opens a new session"
    );
}

/// Counts the starts of one node's workers, by ledger.
#[derive(Default)]
struct NodeLog {
    starts: AtomicU32,
    ledgers: Mutex<Vec<Uuid>>,
}

fn counted_workers(log: &Arc<NodeLog>) -> StartWorkers {
    let log = Arc::clone(log);
    Box::new(move |ledger_id| {
        log.starts.fetch_add(1, Ordering::SeqCst);
        log.ledgers.lock().unwrap().push(ledger_id);
        Ok(Workers::default())
    })
}

/// A node on its own runtime, which the test can kill like a crashed process:
/// `shutdown_background` drops every task at its current await, the lease connection too.
struct DoomedNode {
    runtime: tokio::runtime::Runtime,
    workers: LedgerWorkers,
}

impl DoomedNode {
    async fn start(leases: PgLeases, store: EventStore, start_workers: StartWorkers) -> DoomedNode {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let workers = runtime
            .spawn(LedgerWorkers::start(
                Box::new(leases),
                FAST,
                store,
                start_workers,
            ))
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

async fn node(db: &TestDatabase, store: &EventStore, log: &Arc<NodeLog>) -> LedgerWorkers {
    let leases = Box::new(leases(db, "workers"));
    LedgerWorkers::start(leases, FAST, store.clone(), counted_workers(log))
        .await
        .unwrap()
}

#[tokio::test]
async fn nodes_split_ledgers_then_take_over() {
    let Some(db) = TestDatabase::create("nodes_split_ledgers_then_take_over").await else {
        return;
    };
    let (store, ledgers) = store_with_ledgers(2).await;
    let all: HashSet<Uuid> = ledgers.iter().copied().collect();
    let (log_a, log_b) = (Arc::new(NodeLog::default()), Arc::new(NodeLog::default()));

    // Alone, the first node leads both ledgers at once.
    let node_a = DoomedNode::start(
        leases(&db, "workers"),
        store.clone(),
        counted_workers(&log_a),
    )
    .await;
    assert_eq!(node_a.workers.held().len(), 2, "the only node leads both");

    // A second node makes the share one ledger each: the first hands one over.
    let node_b = node(&db, &store, &log_b).await;
    let spread = wait_until(TAKEOVER_BOUND, || {
        node_a.workers.held().len() == 1 && node_b.held().len() == 1
    })
    .await;
    assert!(
        spread,
        "a: {:?}, b: {:?}",
        node_a.workers.held(),
        node_b.held()
    );
    let (a, b) = (node_a.workers.held()[0], node_b.held()[0]);
    assert_ne!(a, b, "each ledger has one leader");
    assert_eq!(HashSet::from([a, b]), all);
    assert!(node_a.workers.for_ledger(b).is_none());
    assert!(node_b.for_ledger(a).is_none());

    // When the first node dies, the second leads both.
    node_a.crash();
    let crashed_at = Instant::now();
    assert!(
        wait_until(TAKEOVER_BOUND, || node_b.held().len() == 2).await,
        "the second node did not take over within {TAKEOVER_BOUND:?}"
    );
    eprintln!("takeover after {:?}", crashed_at.elapsed());
    assert_eq!(log_a.starts.load(Ordering::SeqCst), 2);
    assert_eq!(log_b.starts.load(Ordering::SeqCst), 2);
    assert_eq!(*log_b.ledgers.lock().unwrap(), [b, a]);

    // A graceful stop hands the ledgers on at once.
    let log_c = Arc::new(NodeLog::default());
    let node_c = node(&db, &store, &log_c).await;
    node_b.shutdown().await;
    assert!(node_b.held().is_empty());
    assert!(
        wait_until(TAKEOVER_BOUND, || node_c.held().len() == 2).await,
        "the third node did not take the released ledgers"
    );
    node_c.shutdown().await;
}

#[tokio::test]
async fn holder_stops_workers_when_session_lost() {
    let Some(db) = TestDatabase::create("holder_stops_workers_when_session_lost").await else {
        return;
    };
    let (store, ledgers) = store_with_ledgers(1).await;
    let log = Arc::new(NodeLog::default());
    // A slow retry keeps the node visibly without the lease between loss and return.
    let timings = LeaseTimings {
        retry: Duration::from_secs(2),
        check: Duration::from_millis(200),
    };
    let leases = Box::new(leases(&db, "cut"));
    let node = LedgerWorkers::start(leases, timings, store, counted_workers(&log))
        .await
        .unwrap();
    assert_eq!(node.held(), ledgers);

    kill_holder(&db, "cut", ledgers[0]).await;
    assert!(
        wait_until(TAKEOVER_BOUND, || node.held().is_empty()).await,
        "the holder did not notice the lost session"
    );
    assert!(
        node.for_ledger(ledgers[0]).is_none(),
        "workers stopped on the lost lease"
    );

    // With no other node around, it leads the ledger again with fresh workers.
    assert!(wait_until(TAKEOVER_BOUND, || node.held() == ledgers).await);
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

    /// Starts the dispatcher of a ledger on one node each time that node gains its lease.
    fn dispatcher(&self, node: &'static str) -> StartWorkers {
        let (store, bank, calls) = (self.store.clone(), self.bank.clone(), self.calls.clone());
        Box::new(move |ledger_id| {
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
            let link = BankLink::new(Arc::new(adapter), breaker, policy, 4);
            let dispatcher = Dispatcher::for_ledger(store.clone(), &link, ledger_id);
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

    let node_a = DoomedNode::start(
        leases(&db, "dispatch"),
        cluster.store.clone(),
        cluster.dispatcher("a"),
    )
    .await;
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
    let node_b = LedgerWorkers::start(
        Box::new(leases(&db, "dispatch")),
        FAST,
        cluster.store.clone(),
        cluster.dispatcher("b"),
    )
    .await
    .unwrap();
    assert!(node_b.held().is_empty(), "one ledger has one leader");

    node_a.crash();
    assert!(
        wait_until(TAKEOVER_BOUND, || node_b.held() == [ledger_id]).await,
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

/// Opens a node's state with its own data directory, and the shared PostgreSQL event store,
/// read models and lease.
async fn open_node(db: &TestDatabase, dir: &std::path::Path) -> Arc<api::state::AppState> {
    let mut config = api::config::Config {
        data_dir: dir.to_path_buf(),
        ..api::config::Config::default()
    };
    config.store.backend = api::config::StoreBackend::Postgres;
    config.store.url = db.url.clone();
    config.read_models.backend = api::read_store::ReadModelsBackend::Postgres;
    config.read_models.url = db.url.clone();
    config.cluster.lease_url = db.url.clone();
    config.cluster.lease_name = "state".to_owned();
    config.cluster.lease_retry_ms = 100;
    config.cluster.lease_check_ms = 200;
    // Nodes that share operators share the key of their TOTP secrets.
    let key = dir
        .parent()
        .expect("node directories have a parent")
        .join("mfa.key");
    if !key.exists() {
        std::fs::write(&key, hex::encode([5_u8; 32])).unwrap();
    }
    config.mfa.secret_key_file = key;
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

    // One node leads the ledger; the other reports the projection from the shared
    // checkpoint.
    let led = |node: &api::state::AppState| node.workers.held() == [ledger_id];
    assert!(wait_until(TAKEOVER_BOUND, || led(&node_a) != led(&node_b)).await);
    let (leader, standby) = match led(&node_a) {
        true => (node_a, node_b),
        false => (node_b, node_a),
    };
    let status = standby.projection_status(ledger_id).await.unwrap();
    assert_eq!(status.state, projections::ProjectionState::Untracked);
    assert_eq!(status.position, Some(0));
    assert_eq!(standby.breaker_state(), None);

    leader.shutdown().await;
    assert!(
        wait_until(TAKEOVER_BOUND, || led(&standby)).await,
        "the standby did not take over the ledger"
    );
    let runner = standby
        .workers
        .for_ledger(ledger_id)
        .and_then(|workers| workers.runner.is_some().then_some(()));
    assert!(runner.is_some(), "the new leader runs the projection");
    standby.shutdown().await;
}
