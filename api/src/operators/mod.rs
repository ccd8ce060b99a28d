//! Operators: accounts, sessions, second factors (TOTP and recovery codes), step-up,
//! and the records of each decision in the ledger.
//!
//! Rules that need no I/O (TOTP, password and recovery-code formats, limits, roles,
//! approvals) live in `domain::mfa` and `domain::operators`; this module stores state in
//! `operators.sqlite` or the database the nodes share, hashes with Argon2id, encrypts TOTP
//! secrets through a [`SecretBox`], and appends the events.

pub mod client;
mod config;
pub mod factors;
pub mod hashing;
pub mod record;
pub mod secret_box;
pub mod session;
pub mod store;
pub mod unknown_names;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use anyhow::Context;
use domain::mfa::check_password;
use domain::operators::Role;
use uuid::Uuid;

pub use config::{
    AllowListConfig, MfaConfig, OperatorsConfig, MAX_SESSION_ABSOLUTE_SECONDS,
    MAX_SESSION_IDLE_SECONDS, MAX_STEP_UP_AGE_SECONDS,
};
pub use hashing::SecretHasher;
pub use secret_box::{AesGcmBox, SecretBox, SecretBoxError};
pub use session::{FullSession, OperatorSession, PendingSession, StepUp};
pub use store::{NewOperator, OperatorRecord, OperatorStore, SessionRecord};

/// Everything operator sign-in needs, shared by the handlers.
pub struct Mfa {
    /// Operator, session and factor state.
    pub store: OperatorStore,
    /// Encryption of TOTP secrets at rest.
    pub secrets: Arc<dyn SecretBox>,
    /// Argon2id for passwords and recovery codes.
    pub hasher: SecretHasher,
    /// `[mfa]` settings.
    pub config: MfaConfig,
    /// `[allow_list]` settings.
    pub allow_list: AllowListConfig,
    /// Recovery codes used since start, exported as a metric that alerting watches.
    pub recovery_codes_used: AtomicU64,
    /// Failed sign-ins under names no operator has, limited like an operator's.
    pub unknown_names: unknown_names::UnknownNames,
}

impl Mfa {
    /// Opens the operator store at `location` and the secret key that `config` names (or
    /// the one under `data_dir`), and checks that the key opens the store's records.
    ///
    /// # Errors
    /// Names the store or key file that cannot be opened, and refuses a key other than
    /// the one the store's records were sealed with.
    pub async fn open(
        location: &crate::credentials::CredentialsLocation,
        data_dir: &Path,
        config: &MfaConfig,
        allow_list: &AllowListConfig,
        now_micros: i64,
        kms: &dyn crate::kms::Kms,
    ) -> anyhow::Result<Mfa> {
        let store = OperatorStore::open(location)
            .await
            .with_context(|| format!("cannot open operator store {}", location.describe()))?;
        let (secrets, key_path) = open_secret_box(data_dir, config, kms).await?;
        check_secret_key(&store, secrets.as_ref(), now_micros)
            .await
            .map_err(|problem| problem.refusal(&key_path, location))?;
        Ok(Mfa {
            store,
            secrets,
            hasher: SecretHasher::new(config.test_hash_cost)?,
            config: config.clone(),
            allow_list: allow_list.clone(),
            recovery_codes_used: AtomicU64::new(0),
            unknown_names: unknown_names::UnknownNames::default(),
        })
    }
}

/// Associated data of the wrapped TOTP data key at the KMS.
pub const MFA_KEY_CONTEXT: &[u8] = b"folio/mfa-secret-key/v1";

/// Opens the AES-256-GCM key of the TOTP secrets: the file `mfa.secret_key_file` names,
/// else a data key wrapped by the KMS in `keys/mfa-secret.wrapped` (created on the first
/// start). A data directory from before the KMS keeps its plain `keys/mfa-secret.key`.
/// Returns the key with the path of its file.
async fn open_secret_box(
    data_dir: &Path,
    config: &MfaConfig,
    kms: &dyn crate::kms::Kms,
) -> anyhow::Result<(Arc<dyn SecretBox>, PathBuf)> {
    if !config.secret_key_file.as_os_str().is_empty() {
        let key = AesGcmBox::load_or_create(&config.secret_key_file, false)?;
        return Ok((Arc::new(key), config.secret_key_file.clone()));
    }
    let keys = data_dir.join("keys");
    crate::files::create_private_dir(&keys)?;
    let legacy = keys.join("mfa-secret.key");
    if legacy.exists() {
        tracing::warn!(
            path = %legacy.display(),
            "the TOTP secret key is a plain file, not wrapped by the KMS; \
             run `folio keys wrap-mfa-key` with the server stopped"
        );
        let key = AesGcmBox::load_or_create(&legacy, false)?;
        return Ok((Arc::new(key), legacy));
    }
    let path = keys.join("mfa-secret.wrapped");
    let key = crate::kms::wrapped_file::load_or_create(kms, &path, MFA_KEY_CONTEXT).await?;
    Ok((Arc::new(AesGcmBox::new(&key)), path))
}

/// Plaintext of the key check value.
const KEY_CHECK_PLAINTEXT: &[u8] = b"folio operator secret key check v1";

/// Associated data of the key check value; no operator id can produce it.
const KEY_CHECK_ASSOCIATED_DATA: &[u8] = b"folio operator secret key check|store";

/// Reason the secret key does not fit the operator store.
#[derive(Debug)]
enum KeyCheckProblem {
    /// The store's key check value does not open with this key.
    WrongKey,
    /// Reading or writing the check value failed.
    Failed(anyhow::Error),
}

impl KeyCheckProblem {
    /// Turns the problem into the start-up error, naming the key file and the fix.
    fn refusal(
        self,
        key_path: &Path,
        location: &crate::credentials::CredentialsLocation,
    ) -> anyhow::Error {
        match self {
            KeyCheckProblem::WrongKey => anyhow::anyhow!(
                "the MFA secret key {} does not open the operator records in {}: they were \
                 sealed with another key. Every node that shares operators must use the same \
                 key: copy the key file of the node that started first and point \
                 mfa.secret_key_file at it (see docs/operations/postgres.md)",
                key_path.display(),
                location.describe()
            ),
            KeyCheckProblem::Failed(error) => error.context(format!(
                "cannot check the MFA secret key {} against {}",
                key_path.display(),
                location.describe()
            )),
        }
    }
}

/// Checks that `secrets` opens the key check value of the store, storing one sealed with
/// `secrets` when the store has none yet. Of two nodes that start at once on an empty
/// store with different keys, the one whose value is not stored is refused.
async fn check_secret_key(
    store: &OperatorStore,
    secrets: &dyn SecretBox,
    now_micros: i64,
) -> Result<(), KeyCheckProblem> {
    let failed = |error: anyhow::Error| KeyCheckProblem::Failed(error);
    if store
        .key_check()
        .await
        .map_err(|e| failed(e.into()))?
        .is_none()
    {
        let sealed = secrets
            .seal(KEY_CHECK_PLAINTEXT, KEY_CHECK_ASSOCIATED_DATA)
            .map_err(|e| failed(e.into()))?;
        let stored = store.insert_key_check(&sealed, now_micros).await;
        stored.map_err(|e| failed(e.into()))?;
    }
    let sealed = store.key_check().await.map_err(|e| failed(e.into()))?;
    let sealed = sealed.ok_or_else(|| failed(anyhow::anyhow!("the key check row vanished")))?;
    match secrets.open(&sealed, KEY_CHECK_ASSOCIATED_DATA) {
        Ok(plaintext) if plaintext.as_slice() == KEY_CHECK_PLAINTEXT => Ok(()),
        Ok(_) | Err(SecretBoxError::Authentication) => Err(KeyCheckProblem::WrongKey),
        Err(error) => Err(failed(error.into())),
    }
}

/// Associated data binding a sealed TOTP secret to its operator.
pub(crate) fn totp_associated_data(operator_id: Uuid) -> Vec<u8> {
    format!("folio totp secret v1|{operator_id}").into_bytes()
}

/// A request to create an operator.
pub struct OperatorRequest<'a> {
    /// Ledger the operator works on.
    pub ledger_id: Uuid,
    /// User name.
    pub username: &'a str,
    /// Password in the clear, checked against the rules and then hashed.
    pub password: &'a str,
    /// Roles.
    pub roles: &'a [Role],
    /// Whether the caller records `operator.created` itself.
    pub created_recorded: bool,
    /// Creation time.
    pub now_micros: i64,
}

/// Creates an operator after checking the name and password rules. The outer error is
/// an operating failure; the inner one names the broken rule for the requester.
///
/// # Errors
/// A store or hashing failure.
pub async fn create_operator(
    store: &OperatorStore,
    hasher: &SecretHasher,
    request: &OperatorRequest<'_>,
) -> anyhow::Result<Result<Uuid, String>> {
    let OperatorRequest {
        ledger_id,
        username,
        password,
        roles,
        created_recorded,
        now_micros,
    } = *request;
    if let Err(problem) = check_username(username) {
        return Ok(Err(problem));
    }
    if let Err(error) = check_password(password, username) {
        return Ok(Err(error.to_string()));
    }
    if roles.is_empty() {
        return Ok(Err("give the operator at least one role".to_owned()));
    }
    let hash = hasher.hash(password)?;
    let new = NewOperator {
        ledger_id,
        username,
        password_hash: &hash,
        roles,
        created_recorded,
        now_micros,
    };
    Ok(store
        .create(&new)
        .await?
        .ok_or_else(|| format!("user name {username:?} is already taken on ledger {ledger_id}")))
}

/// Checks a user name: 3 to 64 characters of letters, digits, `.`, `_`, `-` or `@`.
///
/// # Errors
/// A message naming the rule.
pub fn check_username(username: &str) -> Result<(), String> {
    let length_ok = (3..=64).contains(&username.chars().count());
    let chars_ok = username
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c));
    if length_ok && chars_ok {
        Ok(())
    } else {
        Err(format!(
            "user name {username:?} must have 3 to 64 characters among letters, digits, \
             '.', '_', '-' and '@'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::CredentialsLocation;

    async fn open(dir: &Path, config: &MfaConfig) -> anyhow::Result<Mfa> {
        let location = CredentialsLocation::Files(dir.to_path_buf());
        let kms = crate::kms::local::LocalKms::open(&dir.join("keys/kms-local.kek"))?;
        Mfa::open(&location, dir, config, &AllowListConfig::default(), 0, &kms).await
    }

    #[tokio::test]
    async fn another_secret_key_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let config = MfaConfig {
            test_hash_cost: true,
            ..MfaConfig::default()
        };
        open(dir.path(), &config)
            .await
            .expect("first open stores the check");
        open(dir.path(), &config)
            .await
            .expect("the same key opens again");

        let other = dir.path().join("other.key");
        std::fs::write(&other, hex::encode([9_u8; 32])).unwrap();
        let config = MfaConfig {
            secret_key_file: other.clone(),
            ..config
        };
        let error = open(dir.path(), &config).await.err().expect("refused");
        let message = format!("{error:#}");
        assert!(
            message.contains("does not open the operator records"),
            "{message}"
        );
        assert!(message.contains(&other.display().to_string()), "{message}");
    }
}
