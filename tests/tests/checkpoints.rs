//! Signed checkpoints end to end: the Merkle tree against an independent Python
//! implementation, a real loopback HTTP witness and a witness file, proofs served by the API
//! and checked like `folio verify-proof`, and kept checkpoints that expose a rewritten or cut
//! ledger.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use domain::checkpoint::SignedCheckpoint;
use domain::events::{EventPayload, LedgerCreated};
use domain::merkle::{self, Hash};
use folio_e2e::harness::Stack;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn python() -> Command {
    Command::new(std::env::var_os("FOLIO_PYTHON").unwrap_or_else(|| "python3".into()))
}

fn merkle_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/verifier/folio_merkle.py")
}

fn sample_hashes(count: u64) -> Vec<Hash> {
    // Event hashes of made-up bodies: any 32-byte values serve as leaves.
    (0..count)
        .map(|i| domain::record::hash_canonical_body(&i.to_be_bytes()))
        .collect()
}

fn hex_list(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(hex::encode).collect()
}

#[test]
fn merkle_tree_matches_python() {
    let hashes = sample_hashes(37);
    let mut inclusion = Vec::new();
    let mut consistency = Vec::new();
    for size in 1..=37u64 {
        for index in (0..size).step_by(3) {
            inclusion.push((index, size));
        }
        for old in (1..=size).step_by(2) {
            consistency.push((old, size));
        }
    }
    let size = 37u64;
    let root = merkle::root(&hashes);
    let good = merkle::inclusion_proof(&hashes, 5, size).unwrap();
    let mut bad = good.clone();
    bad[1][0] ^= 1;
    let old_root = merkle::root(&hashes[..13]);
    let good_consistency = merkle::consistency_proof(&hashes, 13, size).unwrap();
    let job = json!({
        "hashes": hex_list(&hashes),
        "inclusion": inclusion,
        "consistency": consistency,
        "verify_inclusion": [
            {"event_hash": hex::encode(hashes[5]), "index": 5, "size": size, "proof": hex_list(&good), "root": hex::encode(root)},
            {"event_hash": hex::encode(hashes[5]), "index": 5, "size": size, "proof": hex_list(&bad), "root": hex::encode(root)},
        ],
        "verify_consistency": [
            {"old_size": 13, "new_size": size, "old_root": hex::encode(old_root), "new_root": hex::encode(root), "proof": hex_list(&good_consistency)},
            {"old_size": 12, "new_size": size, "old_root": hex::encode(old_root), "new_root": hex::encode(root), "proof": hex_list(&good_consistency)},
        ],
    });
    let dir = tempfile::tempdir().unwrap();
    let job_path = dir.path().join("job.json");
    std::fs::write(&job_path, job.to_string()).unwrap();
    let output = python()
        .arg(merkle_script())
        .arg("compare")
        .arg(&job_path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();

    for n in 0..=37usize {
        assert_eq!(
            result["roots"][n],
            json!(hex::encode(merkle::root(&hashes[..n]))),
            "root of size {n}"
        );
    }
    for (item, (index, size)) in inclusion.iter().enumerate() {
        let proof = merkle::inclusion_proof(&hashes, *index, *size).unwrap();
        assert_eq!(
            result["inclusion"][item],
            json!(hex_list(&proof)),
            "inclusion {index} in {size}"
        );
    }
    for (item, (old, new)) in consistency.iter().enumerate() {
        let proof = merkle::consistency_proof(&hashes, *old, *new).unwrap();
        assert_eq!(
            result["consistency"][item],
            json!(hex_list(&proof)),
            "consistency {old} to {new}"
        );
    }
    assert_eq!(result["verify_inclusion"], json!([true, false]));
    assert_eq!(result["verify_consistency"], json!([true, false]));
}

/// A loopback HTTP witness that returns 503 to its first request and keeps every other body.
struct Witness {
    url: String,
    received: Arc<Mutex<Vec<Value>>>,
    server: actix_web::dev::ServerHandle,
}

async fn start_witness() -> Witness {
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let requests = Arc::new(Mutex::new(0u32));
    let kept = Arc::clone(&received);
    let server = HttpServer::new(move || {
        let kept = Arc::clone(&kept);
        let requests = Arc::clone(&requests);
        App::new().route(
            "/checkpoints",
            web::post().to(move |body: web::Json<Value>| {
                let kept = Arc::clone(&kept);
                let requests = Arc::clone(&requests);
                async move {
                    let mut count = requests.lock().unwrap();
                    *count += 1;
                    if *count == 1 {
                        return HttpResponse::ServiceUnavailable().finish();
                    }
                    kept.lock().unwrap().push(body.into_inner());
                    HttpResponse::Ok().finish()
                }
            }),
        )
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);
    Witness {
        url: format!("http://{addr}/checkpoints"),
        received,
        server: handle,
    }
}

async fn get_ok(stack: &Stack, path: &str) -> Value {
    let (status, body) = stack.get(path).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn witnesses_proofs_and_kept_checkpoints() {
    let witness = start_witness().await;
    let witness_dir = tempfile::tempdir().unwrap();
    let witness_file = witness_dir.path().join("checkpoints.jsonl");
    let (url, file) = (witness.url.clone(), witness_file.clone());
    let stack = Stack::start_with(move |config| {
        config.checkpoints.every_events = 3;
        config.checkpoints.witness_url = url;
        config.checkpoints.witness_file = file;
    })
    .await
    .unwrap();
    let ledger = stack.create_ledger("witnessed").await.unwrap();
    for n in 0..4 {
        let name = format!("Payee {n}");
        stack
            .add_payee(ledger, &name, "062000", &format!("1234567{n}"))
            .await
            .unwrap();
    }

    // Both witnesses get every checkpoint, the HTTP one after a retry.
    let listed = get_ok(&stack, &format!("/v1/ledgers/{ledger}/checkpoints")).await;
    let listed = listed["items"].as_array().unwrap().clone();
    assert!(listed.len() >= 2, "{listed:?}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while witness.received.lock().unwrap().len() < listed.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(*witness.received.lock().unwrap(), listed);
    let file_lines: Vec<Value> = std::fs::read_to_string(&witness_file)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(file_lines, listed);

    // Proofs served by the API verify under the ledger's key, and fail under another.
    let genesis = stack.state.store.read_ledger(ledger, 0, 1).await.unwrap();
    let public_key = LedgerCreated::decode(&genesis[0].payload)
        .unwrap()
        .public_key;
    let inclusion = get_ok(
        &stack,
        &format!("/v1/ledgers/{ledger}/proofs/inclusion?position=1"),
    )
    .await;
    api::proofs::verify_document(&inclusion, &public_key).unwrap();
    assert!(api::proofs::verify_document(&inclusion, &[9; 32]).is_err());
    let (old, new) = (
        &listed[0]["tree_size"],
        &listed[listed.len() - 1]["tree_size"],
    );
    let path = format!("/v1/ledgers/{ledger}/proofs/consistency?from={old}&to={new}");
    let consistency = get_ok(&stack, &path).await;
    api::proofs::verify_document(&consistency, &public_key).unwrap();
    let (status, _) = stack
        .get(&format!(
            "/v1/ledgers/{ledger}/proofs/consistency?from=2&to={new}"
        ))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND, "size 2 is no checkpoint");

    // A bundle over HTTP verifies, and its export is recorded with its manifest digest under
    // the compliance operator who asked for it. An API token cannot export.
    let path = format!("/v1/ledgers/{ledger}/bundles");
    let request = json!({"scope": "ledger"});
    let response = stack
        .http
        .post(format!("{}{path}", stack.base))
        .bearer_auth(&stack.token)
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let operators = stack.operators(ledger).await.unwrap();
    let compliance = stack
        .enrolled_operator(
            &operators.proposer,
            ledger,
            "compliance.staff",
            &["compliance"],
        )
        .await
        .unwrap();
    let response = compliance
        .request(reqwest::Method::POST, &path)
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let digest = response.headers()["Folio-Manifest-Blake3"]
        .to_str()
        .unwrap()
        .to_owned();
    let archive = witness_dir.path().join("bundle.tar");
    std::fs::write(&archive, response.bytes().await.unwrap()).unwrap();
    let verdict = api::bundle::verify::verify_path(&archive).unwrap();
    assert!(verdict.is_ok(), "{verdict:?}");
    let recorded = stack
        .state
        .store
        .read_stream(ledger, "evidence", 0, 10)
        .await
        .unwrap();
    let payload = domain::evidence::BundleExported::decode(&recorded[0].payload).unwrap();
    assert_eq!(hex::encode(payload.manifest_blake3), digest);
    assert_eq!(payload.scope, "ledger");

    // Scopes that cannot give evidence are refused, and nothing more is recorded.
    let unknown_payment = format!("payment {}", uuid::Uuid::now_v7());
    for (scope, status) in [
        ("positions 10 5", StatusCode::BAD_REQUEST),
        ("time 5 1", StatusCode::BAD_REQUEST),
        ("positions 0 99999", StatusCode::BAD_REQUEST),
        (unknown_payment.as_str(), StatusCode::NOT_FOUND),
    ] {
        let response = compliance
            .request(reqwest::Method::POST, &path)
            .json(&json!({ "scope": scope }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{scope}");
    }
    let recorded_after = stack
        .state
        .store
        .read_stream(ledger, "evidence", 0, 10)
        .await
        .unwrap();
    assert_eq!(recorded_after.len(), 1);
    assert_eq!(recorded[0].actor.id, compliance.operator_id.to_string());

    let dir = stack.stop().await.unwrap();
    witness.server.stop(true).await;
    check_kept_file(&dir.path().join("data"), ledger, &witness_file).await;
}

/// `folio verify --checkpoints`: the kept file holds; a re-signed checkpoint with another root
/// (a rewritten ledger) and one past the end (a cut ledger) are reported.
async fn check_kept_file(data_dir: &std::path::Path, ledger: uuid::Uuid, kept: &std::path::Path) {
    let verdicts = api::cli::verify::verify_store(data_dir, Some(ledger))
        .await
        .unwrap();
    let summary = verdicts[0].result.as_ref().expect("intact ledger");
    let source_path = data_dir.join("events.sqlite");
    let backend = eventstore_adapter::sqlite::SqliteBackend::open_read_only(&source_path)
        .await
        .unwrap();
    let source = || api::cli::checkpoints::HashSource::Store(&backend);
    let (lines, all_hold) = api::cli::checkpoints::check_verdict(kept, summary, source())
        .await
        .unwrap();
    assert!(all_hold, "{lines:?}");
    assert!(
        lines.iter().all(|line| line.ends_with("HOLDS")),
        "{lines:?}"
    );

    let local_kms = api::kms::local::LocalKms::open(&data_dir.join("keys/kms-local.kek")).unwrap();
    let key = api::keys::KeyRing::open(data_dir, &local_kms)
        .await
        .unwrap()
        .current();
    let forged = |size: u64, root: Hash| {
        let head = [7; 32];
        let message = SignedCheckpoint::signature_message(ledger, size, &head, &root);
        let checkpoint = SignedCheckpoint {
            ledger_id: ledger,
            tree_size: size,
            head_hash: head,
            merkle_root: root,
            key_id: key.key_id(),
            signature: key.sign(&message),
        };
        api::proofs::checkpoint_json(&checkpoint).to_string()
    };
    let first = &summary.checkpoints[0];
    let cases = [
        (forged(first.tree_size, [1; 32]), "rewritten"),
        (forged(summary.event_count + 4, [1; 32]), "cut off"),
    ];
    for (line, expected) in cases {
        let path = kept.with_extension("forged");
        std::fs::write(&path, format!("{line}\n")).unwrap();
        let (lines, all_hold) = api::cli::checkpoints::check_verdict(&path, summary, source())
            .await
            .unwrap();
        assert!(!all_hold, "{lines:?}");
        assert!(lines[0].contains(expected), "{lines:?}");
    }
}

/// How a checkpoint event of a test chain is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Forgery {
    None,
    WrongRoot,
    WrongTreeSize,
    FlippedSignature,
    OtherKey,
    WrongStream,
}

/// Builds an export of genesis, six events, a checkpoint made as `forgery` requests, three more
/// events, an honest checkpoint and a signed head. Returns the file and the checkpoint's
/// position.
fn chain_with_checkpoint(forgery: Forgery) -> (Vec<u8>, u64) {
    use domain::checkpoint::{seal_checkpoint, LedgerCheckpoint, CHECKPOINT_STREAM};
    use domain::clock::SteppingClock;
    use domain::crypto::LedgerKey;
    use domain::merkle::Frontier;
    use domain::record::{Actor, EventDraft};
    use domain::seal::{Sealer, Unsealed};

    let key = Arc::new(LedgerKey::from_seed([5; 32]));
    let sealer = Sealer::new(key, Arc::new(SteppingClock::new(1_700_000_000_000_000, 10)));
    let ledger = uuid::Uuid::from_u128(0x0194_1a2b_0000_7000_8000_0000_0000_0042);
    let (genesis, mut tip) = sealer.genesis(ledger, "t", Actor::system("test"), ledger);
    let mut events = vec![genesis];
    let draft = |n: u32, event_type: &str, payload: Vec<u8>| EventDraft {
        event_id: uuid::Uuid::from_u128(u128::from(n) + 1000),
        event_type: event_type.into(),
        schema_version: 1,
        actor: Actor::system("test"),
        correlation_id: ledger,
        causation_id: None,
        payload,
    };
    let note = |n: u32| Unsealed {
        stream_id: "s".into(),
        stream_version: u64::from(n),
        draft: draft(n, "test.noted", n.to_be_bytes().to_vec()),
    };
    events.extend(sealer.seal_batch(&mut tip, (0..6).map(note).collect()));

    let mut frontier = Frontier::new();
    events.iter().for_each(|e| frontier.push(&e.hash));
    let position = tip.next_position;
    if forgery == Forgery::None {
        events.push(seal_checkpoint(&sealer, &mut tip, &frontier, 0));
    } else {
        let (mut size, mut root) = (position, frontier.root());
        match forgery {
            Forgery::WrongRoot => root[0] ^= 1,
            Forgery::WrongTreeSize => size -= 1,
            _ => {}
        }
        let other = Sealer::new(
            Arc::new(LedgerKey::from_seed([6; 32])),
            Arc::new(SystemClockStub),
        );
        let signer = if forgery == Forgery::OtherKey {
            &other
        } else {
            &sealer
        };
        let mut signed = signer.sign_checkpoint(ledger, size, tip.prev_hash, root);
        if forgery == Forgery::FlippedSignature {
            signed.signature[10] ^= 1;
        }
        let payload = LedgerCheckpoint {
            signed_checkpoint: signed.to_bytes(),
        }
        .encode();
        let stream = if forgery == Forgery::WrongStream {
            "s2"
        } else {
            CHECKPOINT_STREAM
        };
        let item = Unsealed {
            stream_id: stream.into(),
            stream_version: 0,
            draft: draft(99, LedgerCheckpoint::EVENT_TYPE, payload),
        };
        events.extend(sealer.seal_batch(&mut tip, vec![item]));
    }
    events.extend(sealer.seal_batch(&mut tip, (6..9).map(note).collect()));
    let mut frontier = Frontier::new();
    events.iter().for_each(|e| frontier.push(&e.hash));
    events.push(seal_checkpoint(&sealer, &mut tip, &frontier, 1));

    let last = events.last().unwrap();
    let head = sealer.sign_head(ledger, last.position, last.hash);
    let records: Vec<Vec<u8>> = events.iter().map(|e| e.to_bytes()).collect();
    (
        domain::export::encode(records.iter().map(Vec::as_slice), &head),
        position,
    )
}

/// A clock for the sealer of the foreign key, which seals nothing.
#[derive(Debug)]
struct SystemClockStub;

impl domain::clock::Clock for SystemClockStub {
    fn now_micros(&self) -> i64 {
        0
    }
}

#[test]
fn both_verifiers_check_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (Forgery::None, "ok"),
        (Forgery::WrongRoot, "bad_checkpoint"),
        (Forgery::WrongTreeSize, "bad_checkpoint"),
        (Forgery::FlippedSignature, "bad_checkpoint"),
        (Forgery::OtherKey, "bad_checkpoint"),
        (Forgery::WrongStream, "bad_checkpoint"),
    ];
    for (forgery, code) in cases {
        let (file, position) = chain_with_checkpoint(forgery);
        let rust = match domain::verify::verify_export(&file) {
            Ok(summary) => {
                assert_eq!(summary.checkpoints.len(), 2, "{forgery:?}");
                json!({"code": "ok", "position": null})
            }
            Err(failure) => json!({"code": failure.kind.code(), "position": failure.position}),
        };
        let expected_position = if code == "ok" {
            json!(null)
        } else {
            json!(position)
        };
        assert_eq!(
            rust,
            json!({"code": code, "position": expected_position}),
            "{forgery:?}"
        );

        let path = dir.path().join(format!("{forgery:?}.folio"));
        std::fs::write(&path, &file).unwrap();
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/verifier/folio_verify.py");
        let output = python()
            .arg(script)
            .arg("--json")
            .arg(&path)
            .output()
            .unwrap();
        let verdict: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stderr)));
        assert_eq!(
            verdict["code"],
            json!(code),
            "Python on {forgery:?}: {verdict}"
        );
        assert_eq!(
            verdict["position"], expected_position,
            "Python on {forgery:?}"
        );
    }
}

#[test]
fn python_verifier_unit_tests_pass() {
    let folder = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/verifier");
    let output = python()
        .args(["-m", "unittest", "discover", "-s"])
        .arg(&folder)
        .args(["-p", "test_*.py"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
