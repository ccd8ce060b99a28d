//! A known story of one ledger, written through the real event store, and the ids it uses.

#![allow(dead_code)] // Each test file uses a different part of the story.

use std::sync::Arc;
use std::time::Duration;

use domain::clock::SteppingClock;
use domain::crypto::LedgerKey;
use domain::events::{
    AbaBatchImported, DispatchAttempted, DispatchFailed, EventPayload, PayeeAccount, PayeeAdded,
    PayeeRemoved, PaymentDeadLettered, PaymentRejected, PaymentSource, PaymentSubmitted,
    ReceiptRecorded,
};
use domain::record::{Actor, ActorKind, EventDraft};
use eventstore_adapter::memory::MemoryBackend;
use eventstore_adapter::{
    AppendOutcome, AppendRequest, Backend, EventStore, ExpectedVersion, StreamWrite,
};
use uuid::Uuid;

pub mod pg;

/// 2025-12-04T00:00:00Z in microseconds; the store clock starts here and steps 1 s per read.
pub const START_MICROS: i64 = 1_764_806_400_000_000;

/// The account number of every payee in the story; it must never appear in full.
pub const ACCOUNT: &str = "12345678";

/// Ids used by the story.
pub struct Story {
    pub ledger_id: Uuid,
    pub alice: Uuid,
    pub alicia: Uuid,
    pub bob: Uuid,
    pub batch_id: Uuid,
    pub batch_payments: [Uuid; 2],
    pub paid: Uuid,
    pub parked: Uuid,
    pub rejected: Uuid,
    /// Position of the last event of the story.
    pub head: u64,
}

/// Opens a store over `backend` with a fixed key and a clock stepping one second per read.
pub fn open_store(backend: Arc<dyn Backend>) -> EventStore {
    let key = Arc::new(LedgerKey::from_seed([7; 32]));
    let clock = Arc::new(SteppingClock::new(START_MICROS, 1_000_000));
    EventStore::open(backend, key, clock)
}

/// Opens a store over a fresh in-memory backend.
pub fn memory_store() -> EventStore {
    open_store(Arc::new(MemoryBackend::new()))
}

pub fn api_client() -> Actor {
    Actor {
        kind: ActorKind::ApiClient,
        id: "payroll-co".into(),
        credential: "token-1".into(),
    }
}

pub fn operator() -> Actor {
    Actor {
        kind: ActorKind::Operator,
        id: "ops-jane".into(),
        credential: "session-9".into(),
    }
}

pub fn draft<P: EventPayload>(payload: &P, actor: &Actor) -> EventDraft {
    raw_draft(P::EVENT_TYPE, P::SCHEMA_VERSION, payload.encode(), actor)
}

pub fn raw_draft(event_type: &str, schema: u16, payload: Vec<u8>, actor: &Actor) -> EventDraft {
    EventDraft {
        event_id: Uuid::now_v7(),
        event_type: event_type.to_owned(),
        schema_version: schema,
        actor: actor.clone(),
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        payload,
    }
}

/// Appends drafts to one stream and returns the last position.
pub async fn append(
    store: &EventStore,
    ledger_id: Uuid,
    stream: &str,
    events: Vec<EventDraft>,
) -> u64 {
    let write = StreamWrite {
        stream_id: stream.to_owned(),
        expected: ExpectedVersion::Any,
        events,
    };
    let request = AppendRequest {
        writes: vec![write],
        idempotency: None,
    };
    match store.append(ledger_id, request).await.expect("append") {
        AppendOutcome::Committed(result) => result.last_position,
        AppendOutcome::Duplicate(_) => panic!("unexpected duplicate append"),
    }
}

/// Creates a ledger and returns its id.
pub async fn create_ledger(store: &EventStore) -> Uuid {
    let ledger_id = Uuid::now_v7();
    store
        .create_ledger(
            ledger_id,
            "acme-payroll",
            Actor::system("setup"),
            Uuid::now_v7(),
        )
        .await
        .expect("create ledger");
    ledger_id
}

fn bsb_account() -> PayeeAccount {
    PayeeAccount::Bsb {
        bsb: "062000".into(),
        account: ACCOUNT.into(),
    }
}

pub fn submitted(
    payment_id: Uuid,
    payee_id: Uuid,
    amount: u64,
    source: PaymentSource,
) -> PaymentSubmitted {
    PaymentSubmitted {
        payment_id,
        payee_id,
        amount_minor: amount,
        currency: "AUD".into(),
        account: bsb_account(),
        payee_name: "Alice Nguyen".into(),
        reference: "PAYROLL DEC".into(),
        bank_idempotency_key: format!("bank-key-{payment_id}"),
        source,
    }
}

fn payee(payee_id: Uuid, name: &str, lookalike_of: Vec<Uuid>) -> PayeeAdded {
    PayeeAdded {
        payee_id,
        name: name.into(),
        normalized_name: name.to_lowercase(),
        account: bsb_account(),
        lookalike_of,
    }
}

/// Writes the story: three payees (one a lookalike, one removed) and an ABA batch of two
/// payments. Then a payment receipted after one retry, a payment dead-lettered after two
/// attempts, a rejected request, and an event of a type this build does not know.
pub async fn write_story(store: &EventStore) -> Story {
    let ledger_id = create_ledger(store).await;
    let (alice, alicia, bob) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let ops = operator();
    let api = api_client();
    let system = Actor::system("dispatcher");

    append(
        store,
        ledger_id,
        &format!("payee-{alice}"),
        vec![draft(&payee(alice, "Alice Nguyen", vec![]), &ops)],
    )
    .await;
    append(
        store,
        ledger_id,
        &format!("payee-{alicia}"),
        vec![draft(&payee(alicia, "Alicia Nguyen", vec![alice]), &ops)],
    )
    .await;
    append(
        store,
        ledger_id,
        &format!("payee-{bob}"),
        vec![draft(&payee(bob, "Bob Smith", vec![]), &ops)],
    )
    .await;
    let removal = PayeeRemoved {
        payee_id: bob,
        reason: "left the company".into(),
    };
    append(
        store,
        ledger_id,
        &format!("payee-{bob}"),
        vec![draft(&removal, &ops)],
    )
    .await;

    let batch_id = Uuid::now_v7();
    let batch_payments = [Uuid::now_v7(), Uuid::now_v7()];
    let import = AbaBatchImported {
        batch_id,
        file_blake3: [0xab; 32],
        detail_count: 2,
        credit_total_minor: 3_000,
        debit_total_minor: 0,
        user_name: "ACME PAYROLL".into(),
        processing_date: "041225".into(),
    };
    let mut batch = vec![draft(&import, &api)];
    for (line, payment_id) in batch_payments.iter().enumerate() {
        let source = PaymentSource::AbaFile {
            batch_id,
            line: line as u32 + 2,
        };
        batch.push(draft(
            &submitted(*payment_id, alice, 1_000 + 1_000 * line as u64, source),
            &api,
        ));
    }
    append(store, ledger_id, &format!("aba-{batch_id}"), batch).await;

    let paid = Uuid::now_v7();
    let stream = format!("payment-{paid}");
    let key = format!("bank-key-{paid}");
    let events = vec![
        draft(&submitted(paid, alice, 12_345, PaymentSource::Api), &api),
        draft(
            &DispatchAttempted {
                payment_id: paid,
                attempt: 1,
                bank_idempotency_key: key.clone(),
            },
            &system,
        ),
        draft(
            &DispatchFailed {
                payment_id: paid,
                attempt: 1,
                error_kind: "timeout".into(),
                detail: "no answer in 10 s".into(),
                will_retry: true,
                retry_in_ms: Some(2_000),
            },
            &system,
        ),
        draft(
            &DispatchAttempted {
                payment_id: paid,
                attempt: 2,
                bank_idempotency_key: key,
            },
            &system,
        ),
        draft(
            &ReceiptRecorded {
                payment_id: paid,
                attempt: 2,
                bank_reference: "BANK-REF-1".into(),
                response_status: 201,
                response_blake3: [1; 32],
            },
            &system,
        ),
    ];
    append(store, ledger_id, &stream, events).await;

    let parked = Uuid::now_v7();
    let stream = format!("payment-{parked}");
    let key = format!("bank-key-{parked}");
    let events = vec![
        draft(&submitted(parked, alicia, 50_000, PaymentSource::Api), &api),
        draft(
            &DispatchAttempted {
                payment_id: parked,
                attempt: 1,
                bank_idempotency_key: key.clone(),
            },
            &system,
        ),
        draft(
            &DispatchFailed {
                payment_id: parked,
                attempt: 1,
                error_kind: "http_5xx".into(),
                detail: "HTTP 503".into(),
                will_retry: true,
                retry_in_ms: Some(1_000),
            },
            &system,
        ),
        draft(
            &DispatchAttempted {
                payment_id: parked,
                attempt: 2,
                bank_idempotency_key: key,
            },
            &system,
        ),
        draft(
            &DispatchFailed {
                payment_id: parked,
                attempt: 2,
                error_kind: "http_5xx".into(),
                detail: "HTTP 503".into(),
                will_retry: false,
                retry_in_ms: None,
            },
            &system,
        ),
        draft(
            &PaymentDeadLettered {
                payment_id: parked,
                attempts: 2,
                last_error_kind: "http_5xx".into(),
                last_error: "HTTP 503".into(),
            },
            &system,
        ),
    ];
    append(store, ledger_id, &stream, events).await;

    let rejected = Uuid::now_v7();
    let rejection = PaymentRejected {
        payment_id: rejected,
        payee_id: Uuid::nil(),
        amount_minor: 700,
        currency: "AUD".into(),
        code: "payee_not_allowed".into(),
        detail: "payee is not on the allow-list".into(),
    };
    append(
        store,
        ledger_id,
        &format!("payment-{rejected}"),
        vec![draft(&rejection, &api)],
    )
    .await;

    let note = raw_draft("custom.note", 1, b"opaque".to_vec(), &ops);
    let head = append(store, ledger_id, "notes", vec![note]).await;

    Story {
        ledger_id,
        alice,
        alicia,
        bob,
        batch_id,
        batch_payments,
        paid,
        parked,
        rejected,
        head,
    }
}

/// Timeout for waits on the runner in tests: generous, because the machine is shared.
pub const WAIT: Duration = Duration::from_secs(20);

/// A memory backend whose ledger reads show only positions up to a gate and can hide one
/// position, to stop a runner at a known point or show it a gap.
#[derive(Default)]
pub struct GatedBackend {
    inner: MemoryBackend,
    visible_up_to: std::sync::atomic::AtomicU64,
    hidden: std::sync::Mutex<Option<u64>>,
}

impl GatedBackend {
    /// Creates a backend that shows every position.
    pub fn open() -> Arc<Self> {
        let backend = GatedBackend::default();
        backend.open_gate(u64::MAX);
        Arc::new(backend)
    }

    /// Shows positions up to and including `position`.
    pub fn open_gate(&self, position: u64) {
        self.visible_up_to
            .store(position, std::sync::atomic::Ordering::SeqCst);
    }

    /// Hides one position from ledger reads.
    pub fn hide(&self, position: u64) {
        *self.hidden.lock().unwrap() = Some(position);
    }
}

#[async_trait::async_trait]
impl Backend for GatedBackend {
    async fn commit(
        &self,
        batch: eventstore_adapter::CommitBatch,
    ) -> Result<(), eventstore_adapter::BackendError> {
        self.inner.commit(batch).await
    }

    async fn head(
        &self,
        ledger_id: Uuid,
    ) -> Result<Option<eventstore_adapter::ChainHead>, eventstore_adapter::BackendError> {
        self.inner.head(ledger_id).await
    }

    async fn signed_head(
        &self,
        ledger_id: Uuid,
    ) -> Result<Option<eventstore_adapter::SignedHead>, eventstore_adapter::BackendError> {
        self.inner.signed_head(ledger_id).await
    }

    async fn stream_version(
        &self,
        ledger_id: Uuid,
        stream_id: &str,
    ) -> Result<Option<u64>, eventstore_adapter::BackendError> {
        self.inner.stream_version(ledger_id, stream_id).await
    }

    async fn idempotency(
        &self,
        ledger_id: Uuid,
        key: &str,
    ) -> Result<Option<eventstore_adapter::IdempotencyRecord>, eventstore_adapter::BackendError>
    {
        self.inner.idempotency(ledger_id, key).await
    }

    async fn read_ledger(
        &self,
        ledger_id: Uuid,
        from_position: u64,
        limit: u32,
    ) -> Result<Vec<domain::record::SealedEvent>, eventstore_adapter::BackendError> {
        let gate = self.visible_up_to.load(std::sync::atomic::Ordering::SeqCst);
        let hidden = *self.hidden.lock().unwrap();
        let mut events = self
            .inner
            .read_ledger(ledger_id, from_position, limit)
            .await?;
        events.retain(|e| e.position <= gate && Some(e.position) != hidden);
        Ok(events)
    }

    async fn read_stream(
        &self,
        ledger_id: Uuid,
        stream_id: &str,
        from_version: u64,
        limit: u32,
    ) -> Result<Vec<domain::record::SealedEvent>, eventstore_adapter::BackendError> {
        self.inner
            .read_stream(ledger_id, stream_id, from_version, limit)
            .await
    }

    async fn ledgers(
        &self,
    ) -> Result<Vec<eventstore_adapter::LedgerInfo>, eventstore_adapter::BackendError> {
        self.inner.ledgers().await
    }
}

/// Appends `count` submitted payments, `per_append` to an append, and returns the last position.
pub async fn append_payments(
    store: &EventStore,
    ledger_id: Uuid,
    count: usize,
    per_append: usize,
) -> u64 {
    let api = api_client();
    let payee_id = Uuid::now_v7();
    let mut last = 0;
    for _ in 0..count.div_ceil(per_append) {
        let events = (0..per_append)
            .map(|_| {
                draft(
                    &submitted(Uuid::now_v7(), payee_id, 100, PaymentSource::Api),
                    &api,
                )
            })
            .collect();
        last = append(
            store,
            ledger_id,
            &format!("payments-{}", Uuid::now_v7()),
            events,
        )
        .await;
    }
    last
}

/// Database engine a test keeps its read models on.
#[derive(Debug, Clone, Copy)]
pub enum Engine {
    /// An SQLite file in a temporary directory.
    Sqlite,
    /// A fresh PostgreSQL database.
    Postgres,
}

/// Keeps a test's database alive until the test ends.
pub enum DbGuard {
    Sqlite(tempfile::TempDir),
    Postgres(Box<pg::TestDatabase>),
}

/// Opens empty read models on `engine`; `None` when PostgreSQL is unreachable outside CI.
pub async fn open_models(engine: Engine, test: &str) -> Option<(DbGuard, projections::ReadModels)> {
    match engine {
        Engine::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("folio-data/read.sqlite");
            let models = projections::ReadModels::open(path).await.unwrap();
            Some((DbGuard::Sqlite(dir), models))
        }
        Engine::Postgres => {
            let db = pg::TestDatabase::create(test).await?;
            let models = projections::ReadModels::connect(&db.url).await.unwrap();
            Some((DbGuard::Postgres(Box::new(db)), models))
        }
    }
}

/// Runs each named `async fn(Engine)` as two tests, `sqlite::name` and `postgres::name`.
#[macro_export]
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::support::Engine::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::support::Engine::Postgres).await;
                }
            )*
        }
    };
}
