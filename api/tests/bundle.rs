//! Evidence bundles through the `folio` binary: byte-identical exports under different time
//! zones and locales, `verify-bundle` on directories and archives, and one tampered copy per
//! kind of change.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use domain::controls::{ControlResult, ControlStatus, ControlsRunRecorded};
use domain::events::{
    DomainEvent, PayeeAccount, PayeeAdded, PaymentDeadLettered, PaymentSource, PaymentSubmitted,
};
use domain::record::{Actor, EventDraft};
use eventstore_adapter::{AppendRequest, ExpectedVersion, StreamWrite};
use uuid::Uuid;

fn folio() -> Command {
    Command::new(env!("CARGO_BIN_EXE_folio"))
}

fn run(command: &mut Command) -> Output {
    command.output().expect("folio runs")
}

fn draft(event: (&'static str, u16, Vec<u8>)) -> EventDraft {
    EventDraft {
        event_id: Uuid::now_v7(),
        event_type: event.0.to_owned(),
        schema_version: event.1,
        actor: Actor::system("bundle-test"),
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        payload: event.2,
    }
}

fn append(stream: &str, events: Vec<EventDraft>) -> AppendRequest {
    AppendRequest {
        writes: vec![StreamWrite {
            stream_id: stream.to_owned(),
            expected: ExpectedVersion::Any,
            events,
        }],
        idempotency: None,
    }
}

/// Builds a data directory with a ledger of payees, payments (one with a formula in its
/// reference) and a dead letter, with checkpoints every four events. Returns the ledger and
/// the id of the dead-lettered payment.
async fn build_ledger(data_dir: &Path) -> (Uuid, Uuid) {
    let mut config = api::config::Config {
        data_dir: data_dir.to_owned(),
        ..api::config::Config::default()
    };
    config.checkpoints.every_events = 4;
    let state = api::state::AppState::open(config).await.unwrap();
    let ledger = Uuid::now_v7();
    let store = &state.store;
    store
        .create_ledger(ledger, "acme", Actor::system("setup"), Uuid::now_v7())
        .await
        .unwrap();
    let payee = Uuid::from_u128(77);
    let account = PayeeAccount::Bsb {
        bsb: "062000".into(),
        account: "12345678".into(),
    };
    let added = PayeeAdded {
        payee_id: payee,
        name: "Jane, \"JC\" Citizen".into(),
        normalized_name: "jane jc citizen".into(),
        account: account.clone(),
        lookalike_of: Vec::new(),
    };
    store
        .append(
            ledger,
            append("allowlist", vec![draft(DomainEvent::encode(&added))]),
        )
        .await
        .unwrap();
    let mut last_payment = Uuid::nil();
    for n in 0..6u64 {
        last_payment = Uuid::from_u128(1000 + u128::from(n));
        let submitted = PaymentSubmitted {
            payment_id: last_payment,
            payee_id: payee,
            amount_minor: 1_000 + n,
            currency: "AUD".into(),
            account: account.clone(),
            payee_name: "Jane Citizen".into(),
            reference: if n == 2 {
                "=HYPERLINK(\"http://x\")".into()
            } else {
                format!("inv-{n}")
            },
            bank_idempotency_key: format!("k{n}"),
            source: PaymentSource::Api,
        };
        let stream = format!("payment-{last_payment}");
        store
            .append(
                ledger,
                append(&stream, vec![draft(DomainEvent::encode(&submitted))]),
            )
            .await
            .unwrap();
    }
    let dead = PaymentDeadLettered {
        payment_id: last_payment,
        attempts: 3,
        last_error_kind: "timeout".into(),
        last_error: "-bank did not answer".into(),
    };
    let stream = format!("payment-{last_payment}");
    store
        .append(
            ledger,
            append(&stream, vec![draft(DomainEvent::encode(&dead))]),
        )
        .await
        .unwrap();
    let run = ControlsRunRecorded {
        last_position: 9,
        last_hash: [3; 32],
        results: vec![ControlResult {
            control: "dual_approval".into(),
            status: ControlStatus::Fail,
            examined: 9,
            detail: "=payee change at position 2 has no approval".into(),
        }],
    };
    store
        .append(
            ledger,
            append("controls", vec![draft(DomainEvent::encode(&run))]),
        )
        .await
        .unwrap();
    // Pad the ledger so a checkpoint follows the dead letter and the controls run.
    for _ in 0..4 {
        let noted = draft(("test.noted", 1, vec![1]));
        store
            .append(ledger, append("notes", vec![noted]))
            .await
            .unwrap();
    }
    state.shutdown().await;
    (ledger, last_payment)
}

fn export(data_dir: &Path, ledger: Uuid, out: &Path, extra: &[&str], tz: &str, lang: &str) {
    let output = run(folio()
        .arg("export-bundle")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--ledger")
        .arg(ledger.to_string())
        .arg("--out")
        .arg(out)
        .args(extra)
        .env("TZ", tz)
        .env("LC_ALL", lang)
        .env("LANG", lang));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn verify(bundle: &Path) -> (bool, String) {
    let output = run(folio().arg("verify-bundle").arg(bundle));
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.code().is_some_and(|c| c <= 1),
        "{text} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Runs the independent Python verifier and returns whether it accepts the bundle.
fn python_accepts(bundle: &Path) -> bool {
    let python = std::env::var_os("FOLIO_PYTHON").unwrap_or_else(|| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/verifier/verify_bundle.py");
    let output = run(Command::new(python).arg(script).arg(bundle));
    let text = String::from_utf8_lossy(&output.stdout);
    let code = output.status.code();
    assert!(
        matches!(code, Some(0 | 1)),
        "verify_bundle.py failed to run ({code:?}); run .ci/test or set FOLIO_PYTHON: {text} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    code == Some(0)
}

fn files_of(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = api::bundle::bundle_files()
        .into_iter()
        .map(|name| {
            let bytes = std::fs::read(dir.join(&name)).unwrap();
            (name, bytes)
        })
        .collect();
    files.sort();
    files
}

fn copy_dir(from: &Path, to: &Path) {
    for name in api::bundle::bundle_files() {
        let target = to.join(&name);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(from.join(&name), target).unwrap();
    }
}

/// Recomputes every manifest and signs the Folio manifest again, as someone holding the
/// ledger key could, so that only the deeper checks can find a change.
fn reseal(dir: &Path, key: &domain::crypto::LedgerKey) {
    let (mut sha, mut blake) = (String::new(), String::new());
    for name in api::bundle::DATA_FILES {
        let (s, b, _) = api::bundle::file_digests(&dir.join(name)).unwrap();
        sha.push_str(&format!("{s}  {name}\n"));
        blake.push_str(&format!("{b}  {name}\n"));
    }
    std::fs::write(dir.join("manifest-sha256.txt"), &sha).unwrap();
    std::fs::write(dir.join("folio-manifest.txt"), &blake).unwrap();
    let signature = key.sign(&api::bundle::manifest_message(blake.as_bytes()));
    let sig = format!(
        "key_id {}\nsignature {}\n",
        key.key_id().to_hex(),
        hex::encode(signature)
    );
    std::fs::write(dir.join("folio-manifest.sig"), sig).unwrap();
    fix_tag_manifest(dir);
}

fn fix_tag_manifest(dir: &Path) {
    let mut tags = String::new();
    for name in api::bundle::TAG_FILES {
        let (s, _, _) = api::bundle::file_digests(&dir.join(name)).unwrap();
        tags.push_str(&format!("{s}  {name}\n"));
    }
    std::fs::write(dir.join("tagmanifest-sha256.txt"), tags).unwrap();
}

fn edit(path: PathBuf, change: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(&path).unwrap();
    change(&mut bytes);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn bundles_are_reproducible_verified_and_tamper_evident() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (ledger, payment) = runtime.block_on(build_ledger(&data_dir));

    // The same scope gives the same bytes under other time zones and locales.
    let (first, second) = (dir.path().join("first"), dir.path().join("second"));
    export(&data_dir, ledger, &first, &[], "UTC", "C");
    export(
        &data_dir,
        ledger,
        &second,
        &[],
        "Australia/Sydney",
        "de_DE.UTF-8",
    );
    assert_eq!(files_of(&first), files_of(&second));
    let (tar_a, tar_b) = (dir.path().join("a.tar"), dir.path().join("b.tar"));
    export(
        &data_dir,
        ledger,
        &tar_a,
        &["--tar"],
        "America/New_York",
        "C.UTF-8",
    );
    export(&data_dir, ledger, &tar_b, &["--tar"], "UTC", "fr_FR.UTF-8");
    assert_eq!(
        std::fs::read(&tar_a).unwrap(),
        std::fs::read(&tar_b).unwrap()
    );

    // CSV cells that a spreadsheet would run are neutralised.
    let payments = std::fs::read_to_string(first.join("data/payments.csv")).unwrap();
    assert!(
        payments.contains("\"'=HYPERLINK(\"\"http://x\"\")\""),
        "{payments}"
    );
    let dlq = std::fs::read_to_string(first.join("data/dlq_actions.csv")).unwrap();
    assert!(dlq.contains(",'-bank did not answer"), "{dlq}");
    let controls = std::fs::read_to_string(first.join("data/controls.csv")).unwrap();
    let row = ",9,dual_approval,fail,9,'=payee change at position 2 has no approval\n";
    assert!(
        controls.starts_with(api::bundle::content::CONTROLS_HEADER),
        "{controls}"
    );
    assert!(controls.ends_with(row), "{controls}");
    assert_eq!(
        std::fs::read_to_string(first.join("data/anomaly_decisions.csv")).unwrap(),
        api::bundle::content::ANOMALY_HEADER
    );

    // Intact bundles verify, as a directory, as an archive and for a payment scope.
    assert!(verify(&first).0, "{}", verify(&first).1);
    assert!(verify(&tar_a).0, "{}", verify(&tar_a).1);
    assert!(
        python_accepts(&first),
        "Python rejects the intact directory"
    );
    assert!(python_accepts(&tar_a), "Python rejects the intact archive");
    let scoped = dir.path().join("payment");
    export(
        &data_dir,
        ledger,
        &scoped,
        &["--payment", &payment.to_string()],
        "UTC",
        "C",
    );
    let (ok, text) = verify(&scoped);
    assert!(ok, "{text}");
    assert!(text.contains("2 inclusion proof(s)"), "{text}");
    assert!(python_accepts(&scoped), "Python rejects the payment bundle");

    let local_kms = api::kms::local::LocalKms::open(&data_dir.join("keys/kms-local.kek")).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let key = runtime
        .block_on(api::keys::KeyRing::open(&data_dir, &local_kms))
        .unwrap()
        .current();
    type Tamper = Box<dyn Fn(&Path)>;
    let audit = |d: &Path| d.join("data/audit.csv");
    let cases: Vec<(&str, Tamper, &str)> = vec![
        (
            "file edited",
            Box::new(move |d| edit(audit(d), |b| b[200] ^= 1)),
            "file_hash",
        ),
        (
            "file added",
            Box::new(|d| std::fs::write(d.join("data/extra.txt"), b"x").unwrap()),
            "file_set",
        ),
        (
            "file removed",
            Box::new(|d| std::fs::remove_file(d.join("data/report.html")).unwrap()),
            "file_set",
        ),
        (
            "manifest edited",
            Box::new(|d| {
                edit(d.join("folio-manifest.txt"), |b| {
                    b[0] = if b[0] == b'0' { b'1' } else { b'0' }
                });
                fix_tag_manifest(d);
            }),
            "manifest",
        ),
        (
            "signature",
            Box::new(|d| {
                edit(d.join("folio-manifest.sig"), |b| {
                    let at = b.len() - 3;
                    b[at] = if b[at] == b'0' { b'1' } else { b'0' };
                });
                fix_tag_manifest(d);
            }),
            "manifest_signature",
        ),
    ];
    let key_for = |k: &std::sync::Arc<domain::crypto::LedgerKey>| std::sync::Arc::clone(k);
    let resealed: Vec<(&str, Tamper, &str)> = vec![
        (
            "event bytes",
            Box::new(|d| edit(d.join("data/events.folio"), |b| b[200] ^= 1)),
            "chain",
        ),
        (
            "CSV disagrees",
            Box::new(|d| {
                edit(d.join("data/audit.csv"), |b| {
                    let text = String::from_utf8(b.clone()).unwrap();
                    *b = text
                        .replacen("payment.submitted", "payment.rejected", 1)
                        .into_bytes();
                })
            }),
            "content",
        ),
        (
            "proof",
            Box::new(|d| {
                edit(d.join("data/proofs.json"), |b| {
                    let mut doc: serde_json::Value = serde_json::from_slice(b).unwrap();
                    doc["items"][0]["position"] = serde_json::json!(1);
                    *b = serde_json::to_vec_pretty(&doc).unwrap();
                })
            }),
            "proof",
        ),
        (
            "checkpoint",
            Box::new(|d| {
                edit(d.join("data/checkpoints.json"), |b| {
                    let mut doc: serde_json::Value = serde_json::from_slice(b).unwrap();
                    doc["items"].as_array_mut().unwrap().remove(0);
                    *b = serde_json::to_vec_pretty(&doc).unwrap();
                })
            }),
            "content",
        ),
    ];
    let all = cases
        .into_iter()
        .map(|c| (c, false))
        .chain(resealed.into_iter().map(|c| (c, true)));
    for (index, ((name, tamper, code), reseal_after)) in all.enumerate() {
        let copy = dir.path().join(format!("tampered-{index}"));
        let source = if name == "proof" { &scoped } else { &first };
        copy_dir(source, &copy);
        tamper(&copy);
        if reseal_after {
            reseal(&copy, &key_for(&key));
        }
        let (ok, text) = verify(&copy);
        assert!(!ok, "{name}: {text}");
        assert!(
            text.contains(&format!("INVALID: {code}:")),
            "{name}: {text}"
        );
        assert!(
            !python_accepts(&copy),
            "Python accepts the bundle with {name}"
        );
    }
}
