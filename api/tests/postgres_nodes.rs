//! Several `folio serve` processes on one PostgreSQL database, driven over real HTTP: two
//! nodes taking payments for one ledger at once while a third writer adds payees, and a node
//! killed with SIGKILL while clients append. After each, `folio verify` checks the chain and
//! a count check looks for lost or duplicated events.
//!
//! The tests live in this package because Cargo gives its integration tests the path of the
//! `folio` binary. Each runs in a fresh database and passes as skipped, with a message, when
//! PostgreSQL is unreachable outside CI.

#[path = "../../eventstore-adapter/tests/support/pg.rs"]
mod pg;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use api::state::ALLOW_LIST_STREAM;
use domain::clock::SystemClock;
use domain::events::{DomainEvent, PayeeAccount};
use domain::payments::AllowList;
use domain::record::Actor;
use eventstore_adapter::postgres::PostgresBackend;
use eventstore_adapter::{AppendRequest, EventStore, ExpectedVersion, StoreError, StreamWrite};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection, Row};
use uuid::Uuid;

/// A `folio serve` child process on the test database.
struct Node {
    child: Child,
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Node {
    /// Starts `folio serve` with its own data directory on the PostgreSQL store at `url`, and
    /// waits until it listens.
    fn start(data_dir: &Path, url: &str) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_folio"))
            .arg("serve")
            .env("FOLIO_DATA_DIR", data_dir)
            .env("FOLIO_STORE__BACKEND", "postgres")
            .env("FOLIO_STORE__URL", url)
            .env("FOLIO_SERVER__LISTEN_ADDR", "127.0.0.1:0")
            .env("FOLIO_LOG_FORMAT", "json")
            .env("FOLIO_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start folio serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let (found, addr) = std::sync::mpsc::channel();
        // The thread keeps draining the log after the address is found, so the child never
        // blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let Ok(entry) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if entry["fields"]["message"] == "folio serving" {
                    let _ = found.send(entry["fields"]["addr"].as_str().map(str::to_owned));
                }
            }
        });
        let addr = addr
            .recv_timeout(Duration::from_secs(60))
            .expect("folio serve logs its address")
            .expect("the address is a string");
        let token = std::fs::read_to_string(data_dir.join("bootstrap-token"))
            .expect("bootstrap token")
            .trim()
            .to_owned();
        Node {
            child,
            base: format!("http://{addr}"),
            token,
            http: reqwest::Client::new(),
        }
    }

    /// POSTs JSON with an idempotency key; a connection failure is `None`.
    async fn post(&self, path: &str, key: &str, body: &Value) -> Option<(StatusCode, Value)> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("Idempotency-Key", key)
            .json(body)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .ok()?;
        let status = response.status();
        Some((status, response.json().await.unwrap_or(Value::Null)))
    }

    async fn create_ledger(&self, tenant: &str) -> Uuid {
        let body = json!({"tenant": tenant});
        let (status, body) = self.post("/v1/ledgers", "ledger", &body).await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
        serde_json::from_value(body["ledger_id"].clone()).unwrap()
    }

    /// Submits a payment; returns its id when acknowledged, `None` on a conflict or when the
    /// node is gone.
    async fn pay(&self, ledger: Uuid, payee: Uuid, key: &str) -> Option<Uuid> {
        let body = json!({
            "payee_id": payee, "amount_minor": 1234, "currency": "AUD", "reference": "NODES",
        });
        let (status, body) = self
            .post(&format!("/v1/ledgers/{ledger}/payments"), key, &body)
            .await?;
        match status {
            StatusCode::CREATED => {
                Some(serde_json::from_value(body["payment_id"].clone()).unwrap())
            }
            StatusCode::CONFLICT => None,
            other => panic!("payment: {other} {body}"),
        }
    }

    fn kill(&mut self) {
        // `Child::kill` sends SIGKILL: the node gets no chance to finish anything.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A third writer on the shared store. Payee changes need two enrolled operators over HTTP,
/// so the test appends them through the library instead, signed with the nodes' key as an
/// approval on a node would be, while the nodes take payments.
struct PayeeWriter {
    store: EventStore,
}

impl PayeeWriter {
    async fn open(url: &str, data_dir: &Path) -> PayeeWriter {
        let ring = api::keys::KeyRing::load_or_create(data_dir).unwrap();
        let backend = PostgresBackend::connect(url).await.unwrap();
        let store = EventStore::open_with_ring(
            Arc::new(backend),
            ring.current(),
            ring.keys[1..].to_vec(),
            Arc::new(SystemClock),
        );
        PayeeWriter { store }
    }

    /// Adds a payee on top of the stored allow-list and returns its id. Returns `None` when
    /// the name looks like another payee's or when every retry lost a race.
    async fn add_payee(&self, ledger: Uuid, n: u32) -> Option<Uuid> {
        let account = PayeeAccount::Bsb {
            bsb: "062000".to_owned(),
            account: format!("{}", 30_000_000 + n),
        };
        for _ in 0..20 {
            let events = self
                .store
                .read_stream(ledger, ALLOW_LIST_STREAM, 0, 10_000)
                .await
                .unwrap();
            let mut list = AllowList::new();
            for event in &events {
                let decoded =
                    DomainEvent::decode(&event.event_type, event.schema_version, &event.payload)
                        .unwrap();
                list.apply(&decoded).unwrap();
            }
            let payee_id = Uuid::now_v7();
            let added = list
                .propose_add(payee_id, &format!("Payee {}", name_for(n)), &account)
                .ok()?;
            let expected = match events.last() {
                Some(last) => ExpectedVersion::Exact(last.stream_version),
                None => ExpectedVersion::NoStream,
            };
            let request = AppendRequest {
                writes: vec![StreamWrite {
                    stream_id: ALLOW_LIST_STREAM.to_owned(),
                    expected,
                    events: vec![api::commands::draft(
                        &added,
                        &Actor::system("payee-writer"),
                        Uuid::now_v7(),
                    )],
                }],
                idempotency: None,
            };
            match self.store.append(ledger, request).await {
                Ok(_) => return Some(payee_id),
                Err(StoreError::WrongExpectedVersion { .. }) => continue,
                Err(error) => panic!("add payee: {error}"),
            }
        }
        None
    }
}

/// Spells a number as words, so payee names do not look alike to the allow-list's checks.
fn name_for(n: u32) -> String {
    const WORDS: [&str; 10] = [
        "Acacia",
        "Banksia",
        "Casuarina",
        "Dianella",
        "Eremophila",
        "Ficus",
        "Grevillea",
        "Hakea",
        "Isopogon",
        "Jacksonia",
    ];
    let mut name = String::new();
    let mut rest = n;
    loop {
        name.push_str(WORDS[(rest % 10) as usize]);
        rest /= 10;
        if rest == 0 {
            return name;
        }
        name.push(' ');
    }
}

/// Copies the signing keys of one node to another's data directory: the nodes of a cluster
/// share them.
fn share_keys(from: &Path, to: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let keys = to.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o700)).unwrap();
    for entry in std::fs::read_dir(from.join("keys")).unwrap() {
        let path = entry.unwrap().path();
        let copy = keys.join(path.file_name().unwrap());
        std::fs::copy(&path, &copy).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

/// Starts two nodes on the test database with shared keys.
fn two_nodes(dir: &Path, url: &str) -> (Node, Node, PathBuf) {
    let first_dir = dir.join("node-a");
    let second_dir = dir.join("node-b");
    let first = Node::start(&first_dir, url);
    share_keys(&first_dir, &second_dir);
    let second = Node::start(&second_dir, url);
    (first, second, first_dir)
}

/// Runs `folio verify` on the PostgreSQL store for one ledger and returns its JSON verdict.
fn folio_verify(url: &str, ledger: Uuid) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_folio"))
        .args(["verify", "--json", "--ledger", &ledger.to_string()])
        .args(["--store-url", url])
        .output()
        .expect("run folio verify");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "folio verify: {stdout} {stderr}");
    serde_json::from_str(stdout.trim()).expect("one JSON verdict")
}

/// Checks that the stored ledger has no gap and no repeated event, and returns the payment
/// ids and the number of payees it holds.
async fn stored_counts(url: &str, ledger: Uuid) -> (HashSet<Uuid>, usize) {
    let mut connection = PgConnection::connect(url).await.unwrap();
    let row = sqlx::query(
        "SELECT count(*), count(DISTINCT event_id), max(position) FROM events \
         WHERE ledger_id = $1::uuid",
    )
    .bind(ledger.to_string())
    .fetch_one(&mut connection)
    .await
    .unwrap();
    let (count, distinct, max): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(count, max + 1, "positions 0..={max} without a gap");
    assert_eq!(distinct, count, "no event stored twice");
    let streams: Vec<String> = sqlx::query_scalar(
        "SELECT stream_id FROM events WHERE ledger_id = $1::uuid \
         AND event_type = 'payment.submitted'",
    )
    .bind(ledger.to_string())
    .fetch_all(&mut connection)
    .await
    .unwrap();
    let payments: HashSet<Uuid> = streams
        .iter()
        .map(|stream| stream.trim_start_matches("payment-").parse().unwrap())
        .collect();
    assert_eq!(payments.len(), streams.len(), "one submission per payment");
    let payees: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE ledger_id = $1::uuid AND event_type = 'payee.added'",
    )
    .bind(ledger.to_string())
    .fetch_one(&mut connection)
    .await
    .unwrap();
    let _ = connection.close().await;
    (payments, payees as usize)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_append_to_one_ledger_without_loss() {
    let Some(db) = pg::TestDatabase::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (first, second, first_dir) = two_nodes(dir.path(), db.url());
    let ledger = first.create_ledger("two-nodes").await;
    let writer = Arc::new(PayeeWriter::open(db.url(), &first_dir).await);
    let seed = writer.add_payee(ledger, 0).await.expect("first payee");
    let nodes = Arc::new([first, second]);

    // Six payment clients per node and two payee clients on the library writer, all at once.
    let mut tasks = Vec::new();
    for (index, client) in (0..14).enumerate() {
        let nodes = Arc::clone(&nodes);
        let writer = Arc::clone(&writer);
        tasks.push(tokio::spawn(async move {
            let node = &nodes[index % 2];
            let mut payments = Vec::new();
            let mut payees = Vec::new();
            for n in 0..8u32 {
                if client >= 12 {
                    let number = 1 + client as u32 * 100 + n;
                    payees.extend(writer.add_payee(ledger, number).await);
                } else {
                    let key = format!("pay-{client}-{n}");
                    payments.extend(node.pay(ledger, seed, &key).await);
                }
            }
            (payments, payees)
        }));
    }
    let mut payments = HashSet::new();
    let mut payees = 1;
    for task in tasks {
        let (paid, added) = task.await.unwrap();
        payments.extend(paid);
        payees += added.len();
    }
    assert!(
        payments.len() >= 48,
        "most payments are acknowledged: {}",
        payments.len()
    );
    eprintln!(
        "{} payments and {payees} payees acknowledged",
        payments.len()
    );

    // A retry on the other node with the same key replays the first answer.
    let original = nodes[0].pay(ledger, seed, "replayed").await;
    assert!(original.is_some());
    payments.extend(original);
    let replayed = nodes[1].pay(ledger, seed, "replayed").await;
    assert_eq!(replayed, original);

    let verdict = folio_verify(db.url(), ledger);
    assert_eq!(verdict["intact"], true, "{verdict}");
    let (stored, stored_payees) = stored_counts(db.url(), ledger).await;
    assert_eq!(
        stored, payments,
        "every acknowledged payment, and nothing else"
    );
    assert_eq!(stored_payees, payees);
    assert_eq!(
        verdict["event_count"],
        verdict["head_position"].as_u64().unwrap() + 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_node_loses_no_acknowledged_event() {
    let Some(db) = pg::TestDatabase::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (first, second, first_dir) = two_nodes(dir.path(), db.url());
    let ledger = first.create_ledger("killed-node").await;
    let payee = PayeeWriter::open(db.url(), &first_dir)
        .await
        .add_payee(ledger, 0)
        .await
        .expect("payee");
    let nodes = Arc::new(tokio::sync::Mutex::new([first, second]));
    let bases: Vec<(String, String)> = {
        let nodes = nodes.lock().await;
        nodes
            .iter()
            .map(|n| (n.base.clone(), n.token.clone()))
            .collect()
    };

    // Clients append until told to stop; those of the first node stop when it is gone.
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for client in 0..6 {
        let (base, token) = bases[client % 2].clone();
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            let node = Node::client(base, token);
            let mut acknowledged = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let key = format!("kill-{client}-{n}");
                match node.pay_or_gone(ledger, payee, &key).await {
                    Some(Some(id)) => acknowledged.push(id),
                    Some(None) => {}
                    None => break,
                }
            }
            acknowledged
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    nodes.lock().await[0].kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let mut acknowledged = HashSet::new();
    for task in tasks {
        acknowledged.extend(task.await.unwrap());
    }
    assert!(!acknowledged.is_empty());
    eprintln!(
        "{} payments acknowledged around the kill",
        acknowledged.len()
    );

    // The killed node restarts on its data directory and extends the same chain.
    let restarted = Node::start(&first_dir, db.url());
    let after = restarted.pay(ledger, payee, "after-restart").await;
    acknowledged.extend(after);
    drop(restarted);
    drop(nodes);

    let verdict = folio_verify(db.url(), ledger);
    assert_eq!(verdict["intact"], true, "{verdict}");
    let (stored, _) = stored_counts(db.url(), ledger).await;
    let lost: Vec<&Uuid> = acknowledged.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
}

impl Node {
    /// A client of a node that this test does not own.
    fn client(base: String, token: String) -> ClientOnly {
        ClientOnly {
            base,
            token,
            http: reqwest::Client::new(),
        }
    }
}

/// An HTTP client of a node, without the process.
struct ClientOnly {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl ClientOnly {
    /// Submits a payment: `Some(Some(id))` when acknowledged, `Some(None)` on any answer
    /// that is not an acknowledgement, `None` once the node is unreachable.
    async fn pay_or_gone(&self, ledger: Uuid, payee: Uuid, key: &str) -> Option<Option<Uuid>> {
        let body = json!({
            "payee_id": payee, "amount_minor": 1234, "currency": "AUD", "reference": "KILL",
        });
        let response = self
            .http
            .post(format!("{}/v1/ledgers/{ledger}/payments", self.base))
            .bearer_auth(&self.token)
            .header("Idempotency-Key", key)
            .json(&body)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .ok()?;
        if response.status() != StatusCode::CREATED {
            return Some(None);
        }
        // A node killed after answering may cut the body; only a whole answer counts.
        let body: Value = response.json().await.ok()?;
        Some(serde_json::from_value(body["payment_id"].clone()).ok())
    }
}
