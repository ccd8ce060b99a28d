//! The server's use of the KMS across restarts: the local KEK file and the wrapped TOTP
//! key are created on the first start and read back on the next.

use api::config::Config;
use api::kms::Profile;
use api::state::AppState;

fn config(data_dir: &std::path::Path) -> Config {
    Config {
        data_dir: data_dir.to_owned(),
        ..Config::default()
    }
}

/// Regression: the signing key ring reads every `keys/*.key` file as an Ed25519 seed, so
/// the local KEK file must not end in `.key` or the second start fails.
#[tokio::test]
async fn restart_reads_the_kek_and_the_wrapped_totp_key() {
    let dir = tempfile::tempdir().unwrap();
    let first = AppState::open(config(dir.path())).await.unwrap();
    let sealed = first.mfa.secrets.seal(b"totp secret", b"op-1").unwrap();
    first.shutdown().await;
    drop(first);

    let keys = dir.path().join("keys");
    assert!(keys.join("kms-local.kek").exists());
    let wrapped = std::fs::read_to_string(keys.join("mfa-secret.wrapped")).unwrap();
    assert!(wrapped.contains("\"provider\": \"local\""), "{wrapped}");
    assert!(!keys.join("mfa-secret.key").exists());

    let second = AppState::open(config(dir.path())).await.unwrap();
    let opened = second.mfa.secrets.open(&sealed, b"op-1").unwrap();
    assert_eq!(opened.as_slice(), b"totp secret");
    second.shutdown().await;
}

#[test]
fn production_profile_refuses_the_local_kms() {
    let config = Config {
        profile: Profile::Production,
        ..Config::default()
    };
    let secrets = api::secrets::Secrets::new(config.secrets.clone()).unwrap();
    let secrets = std::sync::Arc::new(secrets);
    let data_dir = std::path::Path::new("x");
    let error = api::kms::open(&config.kms, config.profile, data_dir, &secrets).err();
    let error = error.expect("refused").to_string();
    assert!(error.contains("development only"), "{error}");
    let loaded = Config::load(
        None,
        [("FOLIO_PROFILE".to_owned(), "production".to_owned())],
    );
    assert!(
        loaded.is_err(),
        "a production config without a KMS must not load"
    );
}

/// The signing key is kept wrapped by the KMS: its file contains no seed, another KEK
/// cannot open it, and the next start signs with the same key.
#[tokio::test]
async fn signing_key_is_wrapped_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let first = AppState::open(config(dir.path())).await.unwrap();
    let key = current_key(&first).await;
    first.shutdown().await;
    drop(first);

    let keys = dir.path().join("keys");
    let name = format!("ledger-{}.wrapped", key.key_id().to_hex());
    let wrapped = std::fs::read_to_string(keys.join(&name)).unwrap();
    assert!(
        !wrapped.contains(&hex::encode(key.seed_bytes())),
        "{wrapped}"
    );
    assert!(api::keys::plain_key_files(dir.path()).unwrap().is_empty());

    let second = AppState::open(config(dir.path())).await.unwrap();
    assert_eq!(current_key(&second).await.key_id(), key.key_id());
    second.shutdown().await;
    drop(second);

    // A copy of the data directory with another KEK file signs nothing.
    std::fs::remove_file(keys.join("kms-local.kek")).unwrap();
    let stranger = AppState::open(config(dir.path())).await.err();
    let error = format!("{:#}", stranger.expect("another KEK cannot unwrap the key"));
    assert!(error.contains("cannot unwrap"), "{error}");
}

/// A data directory from before the KMS keeps a plain signing key file: it still opens,
/// and `wrap_plain_keys` wraps it and points `keys/current` at the wrapped copy.
#[tokio::test]
async fn plain_signing_key_opens_then_wraps() {
    let dir = tempfile::tempdir().unwrap();
    let plain = api::keys::KeyRing::load_or_create(dir.path())
        .unwrap()
        .current();
    assert_eq!(api::keys::plain_key_files(dir.path()).unwrap().len(), 1);

    let state = AppState::open(config(dir.path())).await.unwrap();
    assert_eq!(current_key(&state).await.key_id(), plain.key_id());
    let wrapped = api::keys::wrap_plain_keys(dir.path(), state.kms.as_ref())
        .await
        .unwrap();
    assert_eq!(wrapped, vec![plain.key_id().to_hex()]);
    state.shutdown().await;
    drop(state);

    assert!(api::keys::plain_key_files(dir.path()).unwrap().is_empty());
    let current = std::fs::read_to_string(dir.path().join("keys/current")).unwrap();
    assert!(current.trim().ends_with(".wrapped"), "{current}");
    let reopened = AppState::open(config(dir.path())).await.unwrap();
    assert_eq!(current_key(&reopened).await.key_id(), plain.key_id());
    reopened.shutdown().await;
}

/// Opens the key that signs new ledgers with the state's KMS.
async fn current_key(state: &AppState) -> std::sync::Arc<domain::crypto::LedgerKey> {
    let ring = api::keys::KeyRing::open(&state.config.data_dir, state.kms.as_ref());
    ring.await.unwrap().current()
}
