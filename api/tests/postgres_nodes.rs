//! Several `folio serve` processes on one PostgreSQL database, driven over real HTTP. Two
//! nodes take payments for one ledger at once while operators add payees, proposed on one
//! node and approved on the other. A node is killed with SIGKILL while clients append. The
//! leases of two ledgers spread over two nodes and move when one of them dies. After each, `folio verify` checks the chain and
//! a count check looks for lost or duplicated events.
//!
//! The tests live in this package because Cargo gives its integration tests the path of the
//! `folio` binary. Each runs in a fresh database and passes as skipped, with a message, when
//! PostgreSQL is unreachable outside CI.

#[path = "../../eventstore-adapter/tests/support/pg.rs"]
mod pg;
mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection, Row};
use support::nodes::{folio_verify, share_keys, two_nodes, Approvals, Node};
use uuid::Uuid;

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
    let (first, second, _) = two_nodes(dir.path(), db.url());
    let ledger = first.create_ledger("two-nodes").await;
    let approvals = Arc::new(Approvals::enrol(db.url(), ledger, &first, &second).await);
    let seed = approvals.add_payee(ledger, 0).await.expect("first payee");
    let nodes = Arc::new([first, second]);

    // Six payment clients per node and two payee clients (each proposing on the first node
    // and approving on the second), all at once.
    let mut tasks = Vec::new();
    for (index, client) in (0..14).enumerate() {
        let nodes = Arc::clone(&nodes);
        let approvals = Arc::clone(&approvals);
        tasks.push(tokio::spawn(async move {
            let node = &nodes[index % 2];
            let mut payments = Vec::new();
            let mut payees = Vec::new();
            for n in 0..8u32 {
                if client >= 12 {
                    let number = 1 + client as u32 * 100 + n;
                    payees.extend(approvals.add_payee(ledger, number).await);
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
    let approvals = Approvals::enrol(db.url(), ledger, &first, &second).await;
    let payee = approvals.add_payee(ledger, 0).await.expect("payee");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_leases_spread_then_move() {
    let Some(db) = pg::TestDatabase::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (first_dir, second_dir) = (dir.path().join("node-a"), dir.path().join("node-b"));
    let lease = [
        ("FOLIO_CLUSTER__LEASE_URL", db.url()),
        ("FOLIO_CLUSTER__LEASE_CHECK_MS", "200"),
        ("FOLIO_CLUSTER__LEASE_RETRY_MS", "200"),
    ];
    let mut first = Node::start_with(&first_dir, db.url(), &lease);
    share_keys(&first_dir, &second_dir);
    let mut second = Node::start_with(&second_dir, db.url(), &lease);
    second.token = first.token.clone();
    let ledgers = HashSet::from([
        first.create_ledger("led-one").await,
        first.create_ledger("led-two").await,
    ]);

    // Each node leads one of the two ledgers.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (led_first, led_second) = loop {
        let (a, b) = (first.leased_ledgers().await, second.leased_ledgers().await);
        if a.len() == 1 && b.len() == 1 {
            break (a[0], b[0]);
        }
        assert!(std::time::Instant::now() < deadline, "a: {a:?}, b: {b:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(HashSet::from([led_first, led_second]), ledgers);

    // When the first node dies, the second leads both.
    first.kill();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let led: HashSet<Uuid> = second.leased_ledgers().await.into_iter().collect();
        if led == ledgers {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "second leads {led:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
