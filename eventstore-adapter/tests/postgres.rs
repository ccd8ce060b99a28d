//! PostgreSQL-only behaviour: append-only triggers, the least-privilege role, schema creation
//! by several nodes at once, two stores writing one ledger, and readers around a slow commit.
//!
//! Each test runs in a fresh database and passes as skipped, with a message, when PostgreSQL is
//! unreachable outside CI (see `support/pg.rs`).

#[path = "support/pg.rs"]
mod pg;

use std::sync::Arc;
use std::time::Duration;

use domain::clock::SystemClock;
use domain::crypto::LedgerKey;
use domain::record::{Actor, ActorKind, EventDraft, SealedEvent};
use domain::verify::ChainVerifier;
use eventstore_adapter::postgres::{PostgresBackend, SCHEMA_VERSION};
use eventstore_adapter::{
    AppendOutcome, AppendRequest, Backend, BackendError, EventStore, ExpectedVersion,
    IdempotencyClaim, StreamWrite,
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

fn store_over(backend: PostgresBackend, key: &Arc<LedgerKey>) -> EventStore {
    EventStore::open(Arc::new(backend), Arc::clone(key), Arc::new(SystemClock))
}

async fn new_ledger(store: &EventStore) -> Uuid {
    let ledger = Uuid::now_v7();
    store
        .create_ledger(ledger, "tenant", Actor::system("test"), Uuid::now_v7())
        .await
        .expect("create ledger");
    ledger
}

async fn all_events(backend: &dyn Backend, ledger: Uuid) -> Vec<SealedEvent> {
    let mut events: Vec<SealedEvent> = Vec::new();
    loop {
        let page = backend
            .read_ledger(ledger, events.len() as u64, 1000)
            .await
            .unwrap();
        if page.is_empty() {
            return events;
        }
        events.extend(page);
    }
}

/// Checks a whole chain from its genesis, and the signed head it ends at, with the domain's
/// verifier, and returns its length.
async fn verify_chain(events: &[SealedEvent], store: &EventStore) -> usize {
    let ledger = events.first().expect("a chain has a genesis").ledger_id;
    let signed = store.signed_head(ledger).await.expect("signed head");
    let records: Vec<Vec<u8>> = events.iter().map(SealedEvent::to_bytes).collect();
    let mut verifier = ChainVerifier::new();
    verifier.push_chunk(&records).expect("chain verifies");
    let summary = verifier
        .finish(Some(&signed.record))
        .expect("chain verifies");
    assert_eq!(summary.event_count, events.len() as u64);
    events.len()
}

#[tokio::test]
async fn append_only_triggers_reject_changes() {
    let Some(db) = pg::TestDatabase::create().await else {
        return;
    };
    let backend = PostgresBackend::connect(db.url()).await.unwrap();
    let key = Arc::new(LedgerKey::generate());
    let store = store_over(backend.clone(), &key);
    let ledger = new_ledger(&store).await;
    let mut request = append_one("s", ExpectedVersion::NoStream);
    request.idempotency = Some(IdempotencyClaim {
        key: "k".into(),
        request_hash: [7; 32],
        request: Vec::new(),
        response_status: 201,
        response_body: Vec::new(),
    });
    store.append(ledger, request).await.unwrap();

    for statement in [
        "UPDATE events SET event_type = 'x'",
        "DELETE FROM events",
        "TRUNCATE events CASCADE",
        "UPDATE idempotency_keys SET response_status = 500",
        "DELETE FROM idempotency_keys",
        "TRUNCATE idempotency_keys",
        "DELETE FROM ledger_heads",
        "TRUNCATE ledger_heads CASCADE",
    ] {
        let result = sqlx::query(statement).execute(backend.pool()).await;
        let error = result.expect_err(statement).to_string();
        assert!(error.contains("append-only"), "{statement}: {error}");
    }
    // The head row moves, but only forward and only to a stored event.
    for statement in [
        "UPDATE ledger_heads SET head_position = 0",
        "UPDATE ledger_heads SET head_position = 5",
        "UPDATE ledger_heads SET tenant = 'other'",
    ] {
        let result = sqlx::query(statement).execute(backend.pool()).await;
        let error = result.expect_err(statement).to_string();
        assert!(error.contains("ledger_heads"), "{statement}: {error}");
    }
    let events = store.read_ledger(ledger, 0, 10).await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(store.head(ledger).await.unwrap().position, 1);
    assert!(store.idempotency(ledger, "k").await.unwrap().is_some());
    store.shutdown().await;
    backend.close().await;
}

/// The grants of `docs/operations/postgres.md`, for a role named `{role}`.
const APP_ROLE_GRANTS: &str = "
    GRANT SELECT ON folio_store_schema TO {role};
    GRANT SELECT, INSERT ON events, idempotency_keys TO {role};
    GRANT SELECT, INSERT, UPDATE ON ledger_heads TO {role};
    REVOKE UPDATE, DELETE, TRUNCATE ON events, idempotency_keys FROM {role};
    REVOKE DELETE, TRUNCATE ON ledger_heads FROM {role};
";

#[tokio::test]
async fn least_privilege_role_appends_but_cannot_delete() {
    let Some(db) = pg::TestDatabase::create().await else {
        return;
    };
    // The owner creates the schema; the application role only uses it.
    let owner = PostgresBackend::connect(db.url()).await.unwrap();
    // The random end of the database name, because roles are shared by the whole server.
    let role = format!("folio_app_{}", &db.name()[db.name().len() - 12..]);
    sqlx::raw_sql(&format!("CREATE ROLE {role} LOGIN"))
        .execute(owner.pool())
        .await
        .unwrap();
    let _role = RoleGuard {
        role: role.clone(),
        url: db.url().to_owned(),
    };
    sqlx::raw_sql(&APP_ROLE_GRANTS.replace("{role}", &role))
        .execute(owner.pool())
        .await
        .unwrap();

    let app_url = db.url().replacen("postgres@", &format!("{role}@"), 1);
    assert_ne!(app_url, db.url(), "the test URL names the postgres user");
    let app = PostgresBackend::connect(&app_url).await.unwrap();
    let key = Arc::new(LedgerKey::generate());
    let store = store_over(app.clone(), &key);
    let ledger = new_ledger(&store).await;
    for version in 0..3 {
        let expected = match version {
            0 => ExpectedVersion::NoStream,
            v => ExpectedVersion::Exact(v - 1),
        };
        store
            .append(ledger, append_one("s", expected))
            .await
            .unwrap();
    }
    for statement in [
        "DELETE FROM events",
        "UPDATE events SET event_type = 'x'",
        "TRUNCATE events CASCADE",
        "DELETE FROM ledger_heads",
        "DROP TABLE events",
    ] {
        let result = sqlx::query(statement).execute(app.pool()).await;
        let error = result.expect_err(statement).to_string();
        // The privilege check comes before any trigger, so the role is refused outright.
        let refused = error.contains("permission denied") || error.contains("must be owner");
        assert!(refused, "{statement}: {error}");
    }
    let events = all_events(&app, ledger).await;
    assert_eq!(verify_chain(&events, &store).await, 4);
    store.shutdown().await;
    app.close().await;
    owner.close().await;
}

/// Drops a test role when the test ends, even when it fails, because roles outlive the test
/// database.
struct RoleGuard {
    role: String,
    url: String,
}

impl Drop for RoleGuard {
    fn drop(&mut self) {
        use sqlx::{ConnectOptions, Connection};
        let sql = format!("DROP OWNED BY {0}; DROP ROLE {0}", self.role);
        let url = self.url.clone();
        // As in `TestDatabase`, the test's runtime cannot block, so a thread does the work.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime for dropping a test role");
            runtime.block_on(async move {
                let options: sqlx::postgres::PgConnectOptions = url.parse()?;
                let mut connection = options.connect().await?;
                sqlx::raw_sql(&sql).execute(&mut connection).await?;
                connection.close().await
            })
        })
        .join();
        if let Ok(Err(error)) = dropped {
            eprintln!("could not drop test role {}: {error}", self.role);
        }
    }
}

#[tokio::test]
async fn schema_is_created_once_by_nodes_opening_together() {
    let Some(db) = pg::TestDatabase::create().await else {
        return;
    };
    let opens = (0..4).map(|_| PostgresBackend::connect_with(db.url(), 2));
    let backends = futures::future::join_all(opens).await;
    let backends: Vec<PostgresBackend> = backends.into_iter().map(Result::unwrap).collect();
    let versions: Vec<i32> = sqlx::query_scalar("SELECT version FROM folio_store_schema")
        .fetch_all(backends[0].pool())
        .await
        .unwrap();
    assert_eq!(versions, vec![SCHEMA_VERSION]);

    // A database written by a newer Folio is refused with a message naming both versions.
    sqlx::query("INSERT INTO folio_store_schema (version) VALUES ($1)")
        .bind(SCHEMA_VERSION + 1)
        .execute(backends[0].pool())
        .await
        .unwrap();
    let error = PostgresBackend::connect(db.url()).await.unwrap_err();
    let BackendError::Unavailable(reason) = &error else {
        panic!("{error:?}")
    };
    assert!(
        reason.contains(&format!("version {}", SCHEMA_VERSION + 1)),
        "{reason}"
    );
    for backend in backends {
        backend.close().await;
    }
}

/// Two nodes that create a ledger for the same tenant at the same moment: the database's
/// unique tenant lets exactly one through, so a tenant never gets two chains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ledger_per_tenant_across_nodes() {
    let Some(db) = pg::TestDatabase::create().await else {
        return;
    };
    let key = Arc::new(LedgerKey::generate());
    let mut stores = Vec::new();
    for _ in 0..2 {
        let backend = PostgresBackend::connect_with(db.url(), 2).await.unwrap();
        stores.push(store_over(backend, &key));
    }
    for round in 0..5 {
        let tenant = format!("tenant-{round}");
        let attempts = stores.iter().map(|store| {
            store.create_ledger(
                Uuid::now_v7(),
                &tenant,
                Actor::system("test"),
                Uuid::now_v7(),
            )
        });
        let results = futures::future::join_all(attempts).await;
        let created = results.iter().filter(|result| result.is_ok()).count();
        assert_eq!(created, 1, "{tenant}: {results:?}");
    }
    let ledgers = stores[0].ledgers().await.unwrap();
    assert_eq!(ledgers.len(), 5);
    for store in &stores {
        store.shutdown().await;
    }
}

#[tokio::test]
async fn reader_does_not_create_schema() {
    let Some(db) = pg::TestDatabase::create().await else {
        return;
    };
    let error = PostgresBackend::connect_existing(db.url(), 1)
        .await
        .unwrap_err();
    let BackendError::Unavailable(reason) = &error else {
        panic!("{error:?}")
    };
    assert!(reason.contains("no Folio store schema"), "{reason}");
    let writer = PostgresBackend::connect(db.url()).await.unwrap();
    let reader = PostgresBackend::connect_existing(db.url(), 1)
        .await
        .unwrap();
    assert!(reader.ledgers().await.unwrap().is_empty());
    reader.close().await;
    writer.close().await;
}

#[tokio::test]
async fn sslmode_require_connects_over_tls() {
    let Some(db) = pg::TestDatabase::create().await else {
        return;
    };
    let plain = PostgresBackend::connect(db.url()).await.unwrap();
    let ssl: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(plain.pool())
        .await
        .unwrap();
    if ssl != "on" {
        eprintln!("SKIPPED: the test server has ssl = {ssl}, so TLS cannot be checked");
        return;
    }
    let separator = if db.url().contains('?') { '&' } else { '?' };
    let url = format!("{}{separator}sslmode=require", db.url());
    let backend = PostgresBackend::connect(&url).await.unwrap();
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(backend.pool())
            .await
            .unwrap();
    assert!(encrypted, "the connection with sslmode=require uses TLS");
    backend.close().await;
    plain.close().await;
}

#[tokio::test]
async fn malformed_url_is_named() {
    let error = PostgresBackend::connect("postgres://[::1:5432/x")
        .await
        .unwrap_err();
    let BackendError::Unavailable(reason) = &error else {
        panic!("{error:?}")
    };
    assert!(reason.contains("invalid PostgreSQL URL"), "{reason}");
}

/// Appends `count` single-event requests to distinct streams from `tasks` concurrent callers,
/// each with an idempotency key, and returns the committed positions.
async fn append_many(store: &EventStore, ledger: Uuid, node: &str, count: usize) -> Vec<u64> {
    let calls = (0..count).map(|i| {
        let store = store.clone();
        let stream = format!("{node}-{}", i % 7);
        let key = format!("{node}-key-{i}");
        tokio::spawn(async move {
            let mut request = append_one(&stream, ExpectedVersion::Any);
            request.idempotency = Some(IdempotencyClaim {
                key,
                request_hash: [1; 32],
                request: Vec::new(),
                response_status: 201,
                response_body: Vec::new(),
            });
            match store.append(ledger, request).await {
                Ok(AppendOutcome::Committed(result)) => result.first_position,
                other => panic!("append failed: {other:?}"),
            }
        })
    });
    let mut positions = Vec::with_capacity(count);
    for call in futures::future::join_all(calls).await {
        positions.push(call.expect("append task"));
    }
    positions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_ledger_keep_one_gapless_chain() {
    let Some(db) = pg::TestDatabase::create().await else {
        return;
    };
    // Two nodes: separate pools, separate sequencers, one key (shared by the cluster).
    let key = Arc::new(LedgerKey::generate());
    let first_backend = PostgresBackend::connect(db.url()).await.unwrap();
    let second_backend = PostgresBackend::connect(db.url()).await.unwrap();
    let first = store_over(first_backend.clone(), &key);
    let second = store_over(second_backend.clone(), &key);
    let ledger = new_ledger(&first).await;

    let per_node = 300;
    let (mut a, b) = tokio::join!(
        append_many(&first, ledger, "a", per_node),
        append_many(&second, ledger, "b", per_node),
    );
    a.extend(b);
    a.sort_unstable();
    a.dedup();
    assert_eq!(a.len(), 2 * per_node, "every append got its own position");

    let events = all_events(&first_backend, ledger).await;
    assert_eq!(verify_chain(&events, &second).await, 2 * per_node + 1);
    let positions: Vec<u64> = events.iter().skip(1).map(|e| e.position).collect();
    assert_eq!(
        positions, a,
        "the acknowledged positions are the stored events"
    );
    // A retried request that its own node already committed is a duplicate, not a new event.
    let mut request = append_one("a-0", ExpectedVersion::Any);
    request.idempotency = Some(IdempotencyClaim {
        key: "a-key-0".into(),
        request_hash: [1; 32],
        request: Vec::new(),
        response_status: 201,
        response_body: Vec::new(),
    });
    let repeated = second.append(ledger, request).await.unwrap();
    assert!(
        matches!(repeated, AppendOutcome::Duplicate(_)),
        "{repeated:?}"
    );

    first.shutdown().await;
    second.shutdown().await;
    first_backend.close().await;
    second_backend.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_commit_does_not_make_readers_skip_events() {
    let Some(db) = pg::TestDatabase::create().await else {
        return;
    };
    let key = Arc::new(LedgerKey::generate());
    let slow_backend = PostgresBackend::connect(db.url()).await.unwrap();
    let fast_backend = PostgresBackend::connect(db.url()).await.unwrap();
    // In this test database only: inserting into stream `slow` takes a second, inside the
    // commit transaction and so while the ledger's head row is locked.
    sqlx::raw_sql(
        "CREATE FUNCTION test_slow_insert() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_sleep(1); RETURN NEW; END; $$;
         CREATE TRIGGER test_slow BEFORE INSERT ON events FOR EACH ROW
         WHEN (NEW.stream_id = 'slow') EXECUTE FUNCTION test_slow_insert();",
    )
    .execute(slow_backend.pool())
    .await
    .unwrap();
    let slow = store_over(slow_backend.clone(), &key);
    let fast = store_over(fast_backend.clone(), &key);
    let ledger = new_ledger(&slow).await;
    let total = 2 + 20;

    // A reader polls the table throughout and must never see a later event without the
    // earlier ones, which is what a reader ordered by a sequence would run into.
    let reader_backend = fast_backend.clone();
    let reader = tokio::spawn(async move {
        let mut snapshots = 0;
        loop {
            let events = reader_backend.read_ledger(ledger, 0, 1000).await.unwrap();
            for (expected, event) in events.iter().enumerate() {
                assert_eq!(event.position, expected as u64, "a reader saw a gap");
            }
            snapshots += 1;
            if events.len() == total {
                return snapshots;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let mut subscription = fast.subscribe(ledger, 0);

    let slow_append = {
        let slow = slow.clone();
        tokio::spawn(async move {
            slow.append(ledger, append_one("slow", ExpectedVersion::NoStream))
                .await
        })
    };
    // Give the slow commit time to take the head lock, then append from the other node.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fast_positions = append_many(&fast, ledger, "f", total - 2).await;
    let slow_result = slow_append.await.unwrap().unwrap();
    let AppendOutcome::Committed(slow_result) = slow_result else {
        panic!("{slow_result:?}")
    };
    assert!(
        fast_positions
            .iter()
            .all(|p| *p > slow_result.first_position),
        "the other node's appends wait for the slow commit: {fast_positions:?}"
    );

    let snapshots = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("reader finished")
        .unwrap();
    assert!(snapshots > 1);
    let mut seen = Vec::new();
    while seen.len() < total {
        let next = tokio::time::timeout(Duration::from_secs(10), subscription.next())
            .await
            .expect("subscription keeps up");
        let event = next
            .expect("subscription open")
            .expect("no gap or chain error");
        seen.push(event);
    }
    assert_eq!(verify_chain(&seen, &fast).await, total);

    slow.shutdown().await;
    fast.shutdown().await;
    slow_backend.close().await;
    fast_backend.close().await;
}

#[tokio::test]
async fn reconnecting_node_continues_the_chain() {
    let Some(db) = pg::TestDatabase::create().await else {
        return;
    };
    let key = Arc::new(LedgerKey::generate());
    let backend = PostgresBackend::connect(db.url()).await.unwrap();
    let store = store_over(backend.clone(), &key);
    let ledger = new_ledger(&store).await;
    store
        .append(ledger, append_one("s", ExpectedVersion::NoStream))
        .await
        .unwrap();
    store.shutdown().await;
    backend.close().await;

    let backend = PostgresBackend::connect(db.url()).await.unwrap();
    let store = store_over(backend.clone(), &key);
    let outcome = store
        .append(ledger, append_one("s", ExpectedVersion::Exact(0)))
        .await
        .unwrap();
    let AppendOutcome::Committed(result) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(result.first_position, 2);
    let ledgers = store.ledgers().await.unwrap();
    assert_eq!(ledgers.len(), 1);
    assert_eq!(ledgers[0].tenant, "tenant");
    assert_eq!(ledgers[0].head.position, 2);
    let signed = store.signed_head(ledger).await.unwrap();
    assert_eq!(signed.head, ledgers[0].head);
    store.shutdown().await;
    backend.close().await;
}
