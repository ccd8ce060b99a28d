//! `folio migrate` from SQLite to PostgreSQL and back: every event and idempotency key is
//! copied, the copy verifies, the exports are equal byte for byte, a non-empty target ledger is
//! refused, and a store opened on the copy continues the chain.

#[path = "../../eventstore-adapter/tests/support/pg.rs"]
mod pg;

use std::sync::Arc;

use api::cli::migrate::migrate;
use api::store::StoreLocation;
use domain::clock::SystemClock;
use domain::crypto::LedgerKey;
use domain::record::{Actor, ActorKind, EventDraft};
use eventstore_adapter::sqlite::SqliteBackend;
use eventstore_adapter::{
    AppendOutcome, AppendRequest, EventStore, ExpectedVersion, IdempotencyClaim, StreamWrite,
};
use uuid::Uuid;

fn request(stream: &str, events: usize, key: Option<String>) -> AppendRequest {
    let drafts = (0..events)
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
            payload: format!("event {n}").into_bytes(),
        })
        .collect();
    let idempotency = key.map(|key| IdempotencyClaim {
        request_hash: *blake3::hash(key.as_bytes()).as_bytes(),
        request: key.as_bytes().to_vec(),
        key,
        response_status: 201,
        response_body: b"{}".to_vec(),
    });
    AppendRequest {
        writes: vec![StreamWrite {
            stream_id: stream.into(),
            expected: ExpectedVersion::Any,
            events: drafts,
        }],
        idempotency,
    }
}

/// Builds a SQLite store with two ledgers, one of them longer than a migration chunk and with a
/// key rotation, and returns the ledger ids.
async fn source_store(dir: &std::path::Path, keys: &[Arc<LedgerKey>; 2]) -> Vec<Uuid> {
    let backend = SqliteBackend::open_dir(dir).await.unwrap();
    let store = EventStore::open(
        Arc::new(backend.clone()),
        Arc::clone(&keys[0]),
        Arc::new(SystemClock),
    );
    let mut ledgers = Vec::new();
    for tenant in ["long", "short"] {
        let ledger = Uuid::now_v7();
        store
            .create_ledger(ledger, tenant, Actor::system("test"), Uuid::now_v7())
            .await
            .unwrap();
        ledgers.push(ledger);
    }
    for n in 0..30 {
        let key = Some(format!("key-{n}"));
        store
            .append(ledgers[0], request(&format!("s{}", n % 4), 100, key))
            .await
            .unwrap();
        if n == 10 {
            store
                .rotate_key(
                    ledgers[0],
                    Arc::clone(&keys[1]),
                    Actor::system("test"),
                    "yearly",
                )
                .await
                .unwrap();
        }
    }
    store
        .append(ledgers[1], request("only", 3, Some("short-key".into())))
        .await
        .unwrap();
    store.shutdown().await;
    backend.close().await;
    ledgers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_round_trip_matches_bytes() {
    let Some(db) = pg::TestDatabase::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let keys = [
        Arc::new(LedgerKey::generate()),
        Arc::new(LedgerKey::generate()),
    ];
    let ledgers = source_store(&dir.path().join("source"), &keys).await;
    let sqlite =
        StoreLocation::parse(&format!("sqlite:{}", dir.path().join("source").display())).unwrap();
    let postgres = StoreLocation::parse(db.url()).unwrap();

    let copied = migrate(&sqlite, &postgres, None).await.unwrap();
    assert_eq!(copied.len(), 2);
    let long = copied.iter().find(|c| c.ledger_id == ledgers[0]).unwrap();
    // Genesis, 3,000 events and the rotation, with one key per append.
    assert_eq!((long.events, long.keys), (3_002, 30));
    let short = copied.iter().find(|c| c.ledger_id == ledgers[1]).unwrap();
    assert_eq!((short.events, short.keys), (4, 1));
    assert!(long.export_bytes > 0);

    let verdicts = api::cli::verify::verify_location(&postgres, None)
        .await
        .unwrap();
    assert_eq!(verdicts.len(), 2);
    for verdict in &verdicts {
        let summary = verdict.result.as_ref().expect("the copy verifies");
        assert!(summary.event_count > 0);
    }

    // Copying again is rejected before anything is written.
    let error = migrate(&sqlite, &postgres, Some(ledgers[1]))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("already has 4 events"),
        "{error}"
    );

    // And back, into a fresh data directory, one ledger only.
    let back =
        StoreLocation::parse(&format!("sqlite:{}", dir.path().join("back").display())).unwrap();
    let copied = migrate(&postgres, &back, Some(ledgers[0])).await.unwrap();
    assert_eq!(copied.len(), 1);
    assert_eq!(copied[0].export_bytes, long.export_bytes);

    // A store on the copy continues the chain, and a repeat of a copied key is a duplicate.
    let target = postgres.open(2).await.unwrap();
    let store = EventStore::open_with_ring(
        target,
        Arc::clone(&keys[0]),
        vec![Arc::clone(&keys[1])],
        Arc::new(SystemClock),
    );
    let repeat = store
        .append(ledgers[0], request("s0", 100, Some("key-3".into())))
        .await
        .unwrap();
    assert!(matches!(repeat, AppendOutcome::Duplicate(_)), "{repeat:?}");
    let next = store
        .append(ledgers[0], request("s0", 1, None))
        .await
        .unwrap();
    let AppendOutcome::Committed(next) = next else {
        panic!("{next:?}")
    };
    assert_eq!(next.first_position, 3_002);
    store.shutdown().await;
    let verdicts = api::cli::verify::verify_location(&postgres, Some(ledgers[0]))
        .await
        .unwrap();
    assert!(verdicts[0].result.is_ok());
}

#[tokio::test]
async fn sqlite_copy_rejects_missing_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let keys = [
        Arc::new(LedgerKey::generate()),
        Arc::new(LedgerKey::generate()),
    ];
    source_store(dir.path(), &keys).await;
    let source = StoreLocation::parse(&format!("sqlite:{}", dir.path().display())).unwrap();
    let target = StoreLocation::parse(&format!(
        "sqlite:{}",
        dir.path().join("target.sqlite").display()
    ))
    .unwrap();
    let missing = Uuid::now_v7();
    let error = migrate(&source, &target, Some(missing)).await.unwrap_err();
    assert!(error.to_string().contains(&missing.to_string()), "{error}");

    let copied = migrate(&source, &target, None).await.unwrap();
    let events: Vec<u64> = copied.iter().map(|c| c.events).collect();
    assert_eq!(events.iter().sum::<u64>(), 3_002 + 4);
}

#[tokio::test]
async fn migrate_command_reports_each_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let keys = [
        Arc::new(LedgerKey::generate()),
        Arc::new(LedgerKey::generate()),
    ];
    let ledgers = source_store(&dir.path().join("source"), &keys).await;
    let from = format!("sqlite:{}", dir.path().join("source").display());
    let to = format!("sqlite:{}", dir.path().join("copy").display());
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_folio"))
            .arg("migrate")
            .args(args)
            .output()
            .expect("run folio migrate")
    };

    let output = run(&["--from", &from, "--to", &to]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    for ledger in &ledgers {
        assert!(stdout.contains(&format!("ledger {ledger}:")), "{stdout}");
    }
    assert!(stdout.contains("exports identical"), "{stdout}");

    // The same store on both sides, and an unknown form, are usage errors.
    let output = run(&["--from", &from, "--to", &from]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("same store"), "{stderr}");
    let output = run(&["--from", "mysql://db/x", "--to", &to]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--from"), "{stderr}");
}

#[tokio::test]
async fn tampered_source_stops_the_copy_visibly() {
    let dir = tempfile::tempdir().unwrap();
    let keys = [
        Arc::new(LedgerKey::generate()),
        Arc::new(LedgerKey::generate()),
    ];
    let ledgers = source_store(&dir.path().join("source"), &keys).await;
    // Someone with write access to the file drops a trigger and changes the last signature
    // byte of an event in the second migration chunk (to 0, or to 1 when it already is 0).
    let path = dir.path().join("source").join("events.sqlite");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    sqlx::raw_sql(
        "DROP TRIGGER events_no_update;
         UPDATE events SET record = CAST(substr(record, 1, length(record) - 1)
             || CASE WHEN substr(record, -1) = x'00' THEN x'01' ELSE x'00' END AS BLOB)
         WHERE position = 2500",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let source =
        StoreLocation::parse(&format!("sqlite:{}", dir.path().join("source").display())).unwrap();
    let target =
        StoreLocation::parse(&format!("sqlite:{}", dir.path().join("copy").display())).unwrap();
    let error = migrate(&source, &target, Some(ledgers[0]))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("failed verification"),
        "{error:#}"
    );

    // The first chunk was copied, and the copy does not pass for a whole ledger.
    let verdicts = api::cli::verify::verify_location(&target, Some(ledgers[0]))
        .await
        .unwrap();
    assert!(
        verdicts[0].result.is_err(),
        "a cut-short copy must not verify"
    );
}

#[tokio::test]
async fn operators_and_tokens_follow_the_migration() {
    use api::auth::{parse_scopes, TokenStore};
    use api::cli::migrate::migrate_credentials;
    use api::credentials::{CopiedCredentials, CredentialsLocation};
    use api::operators::{NewOperator, OperatorStore};

    let Some(db) = pg::TestDatabase::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let files = CredentialsLocation::Files(dir.path().to_path_buf());
    let tokens = TokenStore::open(&files).await.unwrap();
    let scopes = parse_scopes("payments:read").unwrap();
    let kept = tokens.issue("payroll", &scopes, None, 1).await.unwrap();
    let revoked = tokens.issue("old", &scopes, None, 1).await.unwrap();
    let revoked_id = revoked.split('_').nth(1).unwrap();
    assert!(tokens.revoke(revoked_id, 2).await.unwrap());

    let operators = OperatorStore::open(&files).await.unwrap();
    let ledger = Uuid::now_v7();
    let new = NewOperator {
        ledger_id: ledger,
        username: "ann",
        password_hash: "argon2 hash",
        roles: &[domain::operators::Role::Admin],
        created_recorded: true,
        now_micros: 1,
    };
    let ann = operators.create(&new).await.unwrap().unwrap();
    assert!(operators.set_pending_totp(ann, b"sealed").await.unwrap());
    assert!(operators.accept_step(ann, 42).await.unwrap());
    let codes = [("abcd".to_owned(), "code hash".to_owned())];
    operators.replace_recovery_codes(ann, &codes).await.unwrap();
    assert!(operators.insert_key_check(b"check", 1).await.unwrap());

    let from = StoreLocation::Sqlite(dir.path().join("events.sqlite"));
    let to = StoreLocation::Postgres(db.url().to_owned());
    let copied = migrate_credentials(&from, &to).await.unwrap().unwrap();
    let expected = CopiedCredentials {
        operators: 1,
        tokens: 2,
        skipped: 0,
    };
    assert_eq!(copied, expected);

    // The shared database accepts the kept token, refuses the revoked one, and holds the
    // operator with her sealed secret, last step and recovery code.
    let shared = CredentialsLocation::Postgres(db.url().to_owned());
    let shared_tokens = TokenStore::open(&shared).await.unwrap();
    assert_eq!(
        shared_tokens.authenticate(&kept).await.unwrap().client,
        "payroll"
    );
    assert!(shared_tokens.authenticate(&revoked).await.is_err());
    let shared_operators = OperatorStore::open(&shared).await.unwrap();
    let copy = shared_operators
        .by_name(ledger, "ann")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(copy.id, ann);
    assert_eq!(copy.password_hash, "argon2 hash");
    assert_eq!(copy.totp_sealed.as_deref(), Some(&b"sealed"[..]));
    assert_eq!(copy.last_step, 42);
    assert_eq!(copy.recovery_generation, 1);
    let hash = shared_operators.recovery_hash(ann, "abcd").await.unwrap();
    assert_eq!(hash.as_deref(), Some("code hash"));
    let check = shared_operators.key_check().await.unwrap();
    assert_eq!(check.as_deref(), Some(&b"check"[..]));

    // A second run finds every row there already.
    let again = migrate_credentials(&from, &to).await.unwrap().unwrap();
    assert_eq!((again.operators, again.tokens, again.skipped), (0, 0, 5));

    // Operators sealed under another key are refused, and nothing of them is copied.
    let other_dir = tempfile::tempdir().unwrap();
    let other_files = CredentialsLocation::Files(other_dir.path().to_path_buf());
    let other = OperatorStore::open(&other_files).await.unwrap();
    assert!(other.insert_key_check(b"other check", 1).await.unwrap());
    let bob = NewOperator {
        username: "bob",
        ..new
    };
    other.create(&bob).await.unwrap().unwrap();
    let other_from = StoreLocation::Sqlite(other_dir.path().join("events.sqlite"));
    let error = migrate_credentials(&other_from, &to).await.unwrap_err();
    assert!(
        error.to_string().contains("another MFA secret key"),
        "{error:#}"
    );
    assert!(shared_operators
        .by_name(ledger, "bob")
        .await
        .unwrap()
        .is_none());
}
