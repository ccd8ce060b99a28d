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
