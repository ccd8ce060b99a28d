//! `folio keys` and `folio retention` as an operator runs them, on a stopped data
//! directory: KEK rotation, a refused then allowed retirement, rewrap, signing key
//! rotation and revocation seen by `folio verify`, and a retention run.

use std::path::Path;
use std::process::{Command, Output};

use api::config::Config;
use api::state::AppState;
use domain::envelope::FieldContext;
use domain::record::Actor;
use uuid::Uuid;

fn folio(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_folio"))
        .args(args)
        .env("FOLIO_DATA_DIR", data_dir)
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Builds a data directory with one ledger and one sealed field, then stops. The KEK
/// rotation, the rewrap and the retirement below each record an event, so the signing
/// rotation that follows is at position 4.
async fn prepared(data_dir: &Path) -> Uuid {
    let config = Config {
        data_dir: data_dir.to_owned(),
        ..Config::default()
    };
    let state = AppState::open(config).await.unwrap();
    let ledger = Uuid::now_v7();
    state
        .store
        .create_ledger(ledger, "cli", Actor::system("test"), Uuid::now_v7())
        .await
        .unwrap();
    let place = FieldContext {
        ledger_id: ledger,
        stream: "allowlist",
        event_id: Uuid::now_v7(),
        field: "name",
    };
    let keys = state.personal.keys();
    keys.seal_field("payee:1", &place, b"Ada", 0).await.unwrap();
    state.shutdown().await;
    ledger
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_commands_rotate_rewrap_retire_and_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ledger = prepared(&data).await.to_string();

    let rotated = folio(&data, &["keys", "rotate-kek"]);
    assert!(rotated.status.success(), "{}", text(&rotated));
    assert!(
        text(&rotated).contains("KEK version 2 is current"),
        "{}",
        text(&rotated)
    );

    // Version 1 wraps the payee's data key, the TOTP key and the signing key.
    let refused = folio(&data, &["keys", "retire-kek", "--version", "1"]);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("still wraps 3 key(s)"),
        "{}",
        text(&refused)
    );

    let moved = folio(
        &data,
        &["keys", "rewrap", "--from-version", "1", "--batch", "1"],
    );
    assert!(moved.status.success(), "{}", text(&moved));
    assert!(
        text(&moved).contains("1 data key(s) moved"),
        "{}",
        text(&moved)
    );
    let retired = folio(&data, &["keys", "retire-kek", "--version", "1"]);
    assert!(retired.status.success(), "{}", text(&retired));
    let keys = std::fs::read_to_string(data.join("keys/kms-local.kek")).unwrap();
    assert!(
        !keys.contains("\nv1 "),
        "version 1 is gone from the key file"
    );

    let current = std::fs::read_to_string(data.join("keys/current")).unwrap();
    let old_key = current
        .trim()
        .trim_start_matches("ledger-")
        .trim_end_matches(".wrapped");
    let args = [
        "keys",
        "rotate-signing",
        "--ledger",
        &ledger,
        "--reason",
        "scheduled",
    ];
    let signing = folio(&data, &args);
    assert!(signing.status.success(), "{}", text(&signing));
    let verified = folio(&data, &["verify", "--data-dir", data.to_str().unwrap()]);
    assert!(verified.status.success(), "{}", text(&verified));
    assert!(
        text(&verified).contains("2 key(s), 1 rotation(s)"),
        "{}",
        text(&verified)
    );

    let args = [
        "keys",
        "revoke-signing",
        "--ledger",
        &ledger,
        "--key-id",
        old_key,
        "--from-position",
        "0",
        "--reason",
        "drill",
    ];
    let revoked = folio(&data, &args);
    assert!(revoked.status.success(), "{}", text(&revoked));
    let verified = folio(&data, &["verify", "--data-dir", data.to_str().unwrap()]);
    assert!(
        !verified.status.success(),
        "untrusted events fail the check"
    );
    assert!(
        text(&verified).contains("UNTRUSTED: positions 0 to 4"),
        "{}",
        text(&verified)
    );

    let retention = folio(&data, &["retention", "apply"]);
    assert!(retention.status.success(), "{}", text(&retention));
    assert!(
        text(&retention).contains("0 payee(s) erased"),
        "{}",
        text(&retention)
    );
}
