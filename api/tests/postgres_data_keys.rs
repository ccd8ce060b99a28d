//! Payee data keys in the shared PostgreSQL database: a payee sealed through one
//! `folio serve` node opens through the other, the stored event contains ciphertext, an
//! erasure approved on one node reads as erased on the other as soon as the approval
//! returns, the message limit of a key holds across two pools, `folio keys` rotates and
//! retires over the shared table, and `folio migrate` carries the keys across.
//!
//! Each test runs in a fresh database and passes as skipped, with a message, when
//! PostgreSQL is unreachable outside CI.

#[path = "../../eventstore-adapter/tests/support/pg.rs"]
mod pg;
mod support;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::config::{Config, StoreBackend};
use api::kms::cache::DataKeyCache;
use api::kms::data_keys::{DataKeys, KeyStore};
use api::kms::local::LocalKms;
use api::kms::Kms;
use api::state::{AppState, ALLOW_LIST_STREAM};
use domain::envelope::{DataKeyLimits, FieldContext};
use domain::events::{DomainEvent, PayeeAccount, PayeeAdded, PayeeRemoved};
use domain::personal::{payee_subject, SubjectErased};
use domain::record::Actor;
use eventstore_adapter::{AppendRequest, ExpectedVersion, StreamWrite};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection, Row};
use support::nodes::{two_nodes, Approvals, Node};
use uuid::Uuid;

/// GETs `path` from `node` with its token and returns the JSON body.
async fn get(node: &Node, path: &str) -> Value {
    let response = reqwest::Client::new()
        .get(format!("{}{path}", node.base))
        .bearer_auth(&node.token)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("the node answers");
    assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    response.json().await.expect("a JSON body")
}

/// Returns the position and stored record of the ledger's `payee.added` event of `payee`.
async fn stored_payee(url: &str, ledger: Uuid, payee: Uuid) -> (i64, Vec<u8>) {
    let mut connection = PgConnection::connect(url).await.unwrap();
    let rows = sqlx::query(
        "SELECT position, record FROM events WHERE ledger_id = $1::uuid \
         AND event_type = 'payee.added' ORDER BY position",
    )
    .bind(ledger.to_string())
    .fetch_all(&mut connection)
    .await
    .unwrap();
    let _ = connection.close().await;
    // The record is searched for the payee id both as text and as its 16 bytes.
    let forms = [payee.to_string().into_bytes(), payee.as_bytes().to_vec()];
    let names = |record: &[u8]| {
        (forms.iter()).any(|id| record.windows(id.len()).any(|w| w == id.as_slice()))
    };
    rows.iter()
        .map(|row| (row.get::<i64, _>(0), row.get::<Vec<u8>, _>(1)))
        .find(|(_, record)| names(record))
        .expect("the payee's payee.added event is stored")
}

/// Returns the data-key rows of `subject`: (KEK version, destroyed, has wrapped bytes).
async fn key_rows(url: &str, subject: &str) -> Vec<(String, bool, bool)> {
    let mut connection = PgConnection::connect(url).await.unwrap();
    let rows = sqlx::query(
        "SELECT kek_version, destroyed_at_micros IS NOT NULL, wrapped IS NOT NULL \
         FROM data_keys WHERE subject = $1 ORDER BY id",
    )
    .bind(subject)
    .fetch_all(&mut connection)
    .await
    .unwrap();
    let _ = connection.close().await;
    rows.iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

/// Polls the payee list of `node` until it names `text`, for at most ten seconds.
async fn wait_listed(node: &Node, ledger: Uuid, text: &str) -> Value {
    let path = format!("/v1/ledgers/{ledger}/payees?include_removed=true");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = get(node, &path).await;
        if body.to_string().contains(text) || Instant::now() > deadline {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_payee_across_two_nodes() {
    let Some(db) = pg::TestDatabase::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (first, second, first_dir) = two_nodes(dir.path(), db.url());
    let ledger = first.create_ledger("sealed-nodes").await;
    let approvals = Approvals::enrol(db.url(), ledger, &first, &second).await;

    // The approval on the second node seals the payee; the first opens it.
    let payee = approvals.add_payee(ledger, 4).await.expect("payee added");
    let name = "Payee Eremophila";
    let listed = wait_listed(&first, ledger, name).await;
    assert!(listed.to_string().contains(name), "{listed}");

    // PostgreSQL stores ciphertext, and the wrapped key in `data_keys`.
    let (position, record) = stored_payee(db.url(), ledger, payee).await;
    assert!(!contains(&record, "Eremophila"), "the name is sealed");
    assert!(!contains(&record, "30000004"), "the account is sealed");
    let subject = format!("payee:{payee}");
    let rows = key_rows(db.url(), &subject).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0], ("1".to_owned(), false, true));

    // Reading the past through the first node caches the key there.
    let as_of = format!("/v1/ledgers/{ledger}/payees?include_removed=true&as_of={position}");
    let before = get(&first, &as_of).await;
    assert!(before.to_string().contains(name), "{before}");

    // Removal, then erasure: proposed on the first node, approved on the second, which
    // destroys the keys.
    let removal = format!("/v1/ledgers/{ledger}/payees/{payee}/removal");
    let proposal = (approvals.proposer)
        .propose(&removal, &json!({"reason": "account closed"}))
        .await
        .unwrap();
    approvals.approver.approve(ledger, &proposal).await.unwrap();
    let erasure = format!("/v1/ledgers/{ledger}/payees/{payee}/erasure");
    let reason = json!({"reason": "subject asked to be forgotten"});
    let proposal = approvals.proposer.propose(&erasure, &reason).await.unwrap();
    approvals.approver.approve(ledger, &proposal).await.unwrap();

    // Right after the approval returns, the first node's cached key no longer opens.
    let after = get(&first, &as_of).await.to_string();
    assert!(!after.contains("Eremophila"), "{after}");
    assert!(after.contains("[erased]"), "{after}");
    let (status, proposals) = (approvals.proposer)
        .get(&format!("/v1/ledgers/{ledger}/proposals"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{proposals}");
    assert!(!proposals.to_string().contains("Eremophila"), "{proposals}");
    let rows = key_rows(db.url(), &subject).await;
    assert_eq!(rows, vec![("1".to_owned(), true, false)]);

    // `folio keys` on the stopped first node acts on the shared table.
    let kept = approvals.add_payee(ledger, 5).await.expect("payee added");
    drop(first);
    let keys = |args: &[&str]| folio_keys(&first_dir, db.url(), args);
    assert!(keys(&["rotate-kek"]).0);
    let (retired, output) = keys(&["retire-kek", "--version", "1"]);
    assert!(
        !retired,
        "retirement is rejected while version 1 wraps a key"
    );
    assert!(output.contains("still wraps"), "{output}");
    let (moved, output) = keys(&["rewrap", "--from-version", "1", "--batch", "1"]);
    assert!(moved, "{output}");
    assert!(output.contains("1 data key(s) moved"), "{output}");
    let rows = key_rows(db.url(), &format!("payee:{kept}")).await;
    assert_eq!(rows, vec![("2".to_owned(), false, true)]);
    let (retired, output) = keys(&["retire-kek", "--version", "1"]);
    assert!(retired, "{output}");

    // The restarted first node opens the rewrapped key with version 2 alone.
    let mut restarted = Node::start(&first_dir, db.url());
    restarted.token = second.token.clone();
    let (position, _) = stored_payee(db.url(), ledger, kept).await;
    let path = format!("/v1/ledgers/{ledger}/payees?include_removed=true&as_of={position}");
    let listed = get(&restarted, &path).await.to_string();
    assert!(listed.contains("Payee Ficus"), "{listed}");
    assert!(!listed.contains("Eremophila"), "{listed}");
}

/// Runs `folio keys ARGS` on a node's data directory and the shared store; returns
/// whether it succeeded and its output.
fn folio_keys(data_dir: &Path, url: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_folio"))
        .arg("keys")
        .args(args)
        .env("FOLIO_DATA_DIR", data_dir)
        .env("FOLIO_STORE__BACKEND", "postgres")
        .env("FOLIO_STORE__URL", url)
        .output()
        .expect("run folio keys");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn place(field: &str) -> FieldContext<'_> {
    FieldContext {
        ledger_id: Uuid::from_u128(7),
        stream: "allowlist",
        event_id: Uuid::from_u128(8),
        field,
    }
}

async fn pool_keys(url: &str, kms: &Arc<LocalKms>, max_messages: u64) -> Arc<DataKeys> {
    let limits = DataKeyLimits {
        max_messages,
        max_age_micros: 3_600_000_000,
    };
    let cache = DataKeyCache::new(Duration::from_secs(60), 64);
    let store = KeyStore::Postgres(url.to_owned());
    let kms = Arc::clone(kms) as Arc<dyn api::kms::Kms>;
    Arc::new(DataKeys::open_at(&store, kms, cache, limits).await.unwrap())
}

/// Two pools on one table seal for one subject at once; no key seals more than its limit,
/// and the stored count of each key equals the fields it sealed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_limit_holds_across_two_pools() {
    let Some(db) = pg::TestDatabase::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let kms = Arc::new(LocalKms::open(&dir.path().join("kek")).unwrap());
    let max = 3;
    let nodes = [
        pool_keys(db.url(), &kms, max).await,
        pool_keys(db.url(), &kms, max).await,
    ];
    let mut tasks = Vec::new();
    for task in 0..8 {
        let keys = Arc::clone(&nodes[task % 2]);
        tasks.push(tokio::spawn(async move {
            let mut used = Vec::new();
            for n in 0..12 {
                let text = format!("{task}-{n}");
                let context = place("name");
                let sealed = keys.seal_field("payee:shared", &context, text.as_bytes(), 0);
                used.push(sealed.await.unwrap().data_key_id);
            }
            used
        }));
    }
    let mut per_key: HashMap<Uuid, u64> = HashMap::new();
    for task in tasks {
        for id in task.await.unwrap() {
            *per_key.entry(id).or_default() += 1;
        }
    }
    assert_eq!(per_key.values().sum::<u64>(), 96);
    for (id, count) in &per_key {
        assert!(*count <= max, "key {id} sealed {count} fields, over {max}");
    }

    let mut connection = PgConnection::connect(db.url()).await.unwrap();
    let stored = sqlx::query("SELECT id, messages FROM data_keys")
        .fetch_all(&mut connection)
        .await
        .unwrap();
    let _ = connection.close().await;
    for row in &stored {
        let id: Uuid = row.get::<String, _>(0).parse().unwrap();
        let messages: i64 = row.get(1);
        let sealed = per_key.get(&id).copied().unwrap_or(0);
        assert_eq!(messages as u64, sealed, "stored count of key {id}");
    }
}

/// A field sealed through one pool opens through the other, a rewrap batch run on the
/// second moves keys the first made, and an erasure on one reads as erased on the other
/// although the other has the key in its cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_and_erasure_over_two_pools() {
    let Some(db) = pg::TestDatabase::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let kms = Arc::new(LocalKms::open(&dir.path().join("kek")).unwrap());
    let (a, b) = (
        pool_keys(db.url(), &kms, 100).await,
        pool_keys(db.url(), &kms, 100).await,
    );
    let mut sealed = Vec::new();
    for subject in ["payee:1", "payee:2", "payee:3"] {
        let context = place("name");
        let field = a.seal_field(subject, &context, subject.as_bytes(), 0);
        sealed.push(field.await.unwrap());
    }
    for field in &sealed {
        let opened = b.open_field(&place("name"), field).await.unwrap();
        assert!(matches!(opened, api::kms::data_keys::Opened::Plain(_)));
    }

    kms.rotate().await.unwrap();
    let versions = b.versions_in_use().await.unwrap();
    assert_eq!(versions.get("1"), Some(&3));
    let first = b.rewrap_batch("1", 2).await.unwrap();
    assert_eq!((first.rewrapped, first.remaining), (2, 1));
    let second = a.rewrap_batch("1", 2).await.unwrap();
    assert_eq!((second.rewrapped, second.remaining), (1, 0));
    let versions = a.versions_in_use().await.unwrap();
    assert_eq!(versions.keys().collect::<Vec<_>>(), ["2"]);

    // B has payee:1's key in its cache, and A destroys it.
    let destroyed = a.destroy_subject(Uuid::from_u128(7), "payee:1", 9).await;
    assert_eq!(destroyed.unwrap(), vec![sealed[0].data_key_id]);
    let opened = b.open_field(&place("name"), &sealed[0]).await.unwrap();
    assert_eq!(opened, api::kms::data_keys::Opened::Erased);
    let other = b.open_field(&place("name"), &sealed[1]).await.unwrap();
    assert!(matches!(other, api::kms::data_keys::Opened::Plain(_)));
}

/// Appends two sealed payees to a new ledger of `state`, then removes and erases the
/// second; returns the ledger and the two payee ids.
async fn sealed_and_erased(state: &AppState) -> (Uuid, Uuid, Uuid) {
    let actor = Actor::system("test");
    let ledger = Uuid::now_v7();
    let created = state
        .store
        .create_ledger(ledger, "migrated", actor.clone(), Uuid::now_v7())
        .await;
    created.unwrap();
    let (kept, erased) = (Uuid::now_v7(), Uuid::now_v7());
    let now = state.clock.now_micros();
    let mut events = Vec::new();
    for (payee_id, name, account) in [
        (kept, "Kept Waratah", "11112222"),
        (erased, "Gone Boronia", "33334444"),
    ] {
        let added = DomainEvent::PayeeAdded(PayeeAdded {
            payee_id,
            name: name.to_owned(),
            normalized_name: name.to_lowercase(),
            account: PayeeAccount::Bsb {
                bsb: "062000".to_owned(),
                account: account.to_owned(),
            },
            lookalike_of: Vec::new(),
        });
        let draft = (state.personal).draft(ledger, ALLOW_LIST_STREAM, &added, &actor, now);
        events.push(draft.await.unwrap());
    }
    let removed = PayeeRemoved {
        payee_id: erased,
        reason: "account closed".to_owned(),
    };
    events.push(api::commands::draft(&removed, &actor, Uuid::now_v7()));
    let subject = payee_subject(erased);
    let keys = state.personal.keys();
    let erasure = SubjectErased {
        subject: subject.clone(),
        data_key_ids: keys.live_keys(ledger, &subject).await.unwrap(),
        policy: "subject asked to be forgotten".to_owned(),
        auth: None,
    };
    events.push(api::commands::draft(&erasure, &actor, Uuid::now_v7()));
    let request = AppendRequest {
        writes: vec![StreamWrite {
            stream_id: ALLOW_LIST_STREAM.to_owned(),
            expected: ExpectedVersion::Any,
            events,
        }],
        idempotency: None,
    };
    state.store.append(ledger, request).await.unwrap();

    // Reading the allow-list applies the erasure, which destroys the keys.
    state.allow_list(ledger).await.unwrap();
    assert!(keys.live_keys(ledger, &subject).await.unwrap().is_empty());
    (ledger, kept, erased)
}

/// Returns the names of the `payee.added` events of `ledger`, opened through `state`.
async fn opened_names(state: &AppState, ledger: Uuid) -> Vec<String> {
    let events = state.store.read_stream(ledger, ALLOW_LIST_STREAM, 0, 100);
    let mut names = Vec::new();
    for event in events.await.unwrap() {
        let decoded =
            DomainEvent::decode(&event.event_type, event.schema_version, &event.payload).unwrap();
        let opened = state
            .personal
            .open(ledger, &event.stream_id, event.event_id, decoded)
            .await
            .unwrap();
        if let DomainEvent::PayeeAdded(added) = opened {
            names.push(added.name);
        }
    }
    names
}

/// `folio migrate` from an SQLite data directory copies the data keys: the sealed payee
/// opens on a node of the PostgreSQL store, and the erased one stays erased.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_carries_the_data_keys() {
    let Some(db) = pg::TestDatabase::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let source_dir = dir.path().join("source");
    let mut config = Config {
        data_dir: source_dir.clone(),
        ..Config::default()
    };
    let state = AppState::open(config.clone()).await.unwrap();
    let (ledger, kept, erased) = sealed_and_erased(&state).await;
    state.shutdown().await;
    drop(state);

    let from = format!("sqlite:{}", source_dir.display());
    let stdout = folio_migrate(&from, db.url());
    assert!(stdout.contains("2 data key(s) copied"), "{stdout}");
    assert!(stdout.contains("1 of them destroyed"), "{stdout}");
    let rows = key_rows(db.url(), &payee_subject(erased)).await;
    assert_eq!(rows, vec![("1".to_owned(), true, false)]);

    // A node of the PostgreSQL store, with the source's keys, opens the copy.
    let target_dir = dir.path().join("target");
    support::nodes::share_keys(&source_dir, &target_dir);
    config.data_dir = target_dir;
    config.store.backend = StoreBackend::Postgres;
    config.store.url = db.url().to_owned();
    let state = AppState::open(config).await.unwrap();
    let names = opened_names(&state, ledger).await;
    assert_eq!(names, ["Kept Waratah", "[erased]"]);
    let (list, _) = state.allow_list(ledger).await.unwrap();
    let payee = list.get(kept).expect("the kept payee is active");
    assert_eq!(payee.name, "Kept Waratah");
    state.shutdown().await;
    drop(state);

    // And back to a new data directory: the keys come out of PostgreSQL with the events.
    let back_dir = dir.path().join("back");
    let stdout = folio_migrate(db.url(), &format!("sqlite:{}", back_dir.display()));
    assert!(stdout.contains("2 data key(s) copied"), "{stdout}");
    support::nodes::share_keys(&source_dir, &back_dir);
    let config = Config {
        data_dir: back_dir,
        ..Config::default()
    };
    let state = AppState::open(config).await.unwrap();
    let names = opened_names(&state, ledger).await;
    assert_eq!(names, ["Kept Waratah", "[erased]"]);
    state.shutdown().await;
}

/// Runs `folio migrate --from FROM --to TO` and returns its standard output.
fn folio_migrate(from: &str, to: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_folio"))
        .args(["migrate", "--from", from, "--to", to])
        .output()
        .expect("run folio migrate");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout} {stderr}");
    stdout
}
