//! Operators: accounts, sessions, second factors (TOTP and recovery codes), step-up,
//! and the records of each decision in the ledger.
//!
//! Rules that need no I/O (TOTP, password and recovery-code formats, limits, roles,
//! approvals) live in `domain::mfa` and `domain::operators`; this module stores state in
//! `operators.sqlite`, hashes with Argon2id, encrypts TOTP secrets through a
//! [`SecretBox`], and appends the events.

pub mod client;
mod config;
pub mod factors;
pub mod hashing;
pub mod record;
pub mod secret_box;
pub mod session;
pub mod store;

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use anyhow::Context;
use domain::mfa::check_password;
use domain::operators::Role;
use uuid::Uuid;

pub use config::{
    AllowListConfig, MfaConfig, MAX_SESSION_ABSOLUTE_SECONDS, MAX_SESSION_IDLE_SECONDS,
    MAX_STEP_UP_AGE_SECONDS,
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
}

impl Mfa {
    /// Opens `operators.sqlite` and the secret key under `data_dir`.
    ///
    /// # Errors
    /// Names the file that cannot be opened or created.
    pub async fn open(
        data_dir: &Path,
        config: &MfaConfig,
        allow_list: &AllowListConfig,
        kms: &dyn crate::kms::Kms,
    ) -> anyhow::Result<Mfa> {
        let path = data_dir.join("operators.sqlite");
        crate::files::create_private_file(&path)?;
        let store = OperatorStore::open(&path)
            .await
            .with_context(|| format!("cannot open operator store {}", path.display()))?;
        let secrets = open_secret_box(data_dir, config, kms).await?;
        Ok(Mfa {
            store,
            secrets,
            hasher: SecretHasher::new(config.test_hash_cost)?,
            config: config.clone(),
            allow_list: allow_list.clone(),
            recovery_codes_used: AtomicU64::new(0),
        })
    }
}

/// Associated data of the wrapped TOTP data key at the KMS.
pub const MFA_KEY_CONTEXT: &[u8] = b"folio/mfa-secret-key/v1";

/// Opens the AES-256-GCM key of the TOTP secrets: the file `mfa.secret_key_file` names,
/// else a data key wrapped by the KMS in `keys/mfa-secret.wrapped` (created on the first
/// start). A data directory from before the KMS keeps its plain `keys/mfa-secret.key`.
async fn open_secret_box(
    data_dir: &Path,
    config: &MfaConfig,
    kms: &dyn crate::kms::Kms,
) -> anyhow::Result<Arc<dyn SecretBox>> {
    if !config.secret_key_file.as_os_str().is_empty() {
        let key = AesGcmBox::load_or_create(&config.secret_key_file, false)?;
        return Ok(Arc::new(key));
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
        return Ok(Arc::new(AesGcmBox::load_or_create(&legacy, false)?));
    }
    let path = keys.join("mfa-secret.wrapped");
    let key = crate::kms::wrapped_file::load_or_create(kms, &path, MFA_KEY_CONTEXT).await?;
    Ok(Arc::new(AesGcmBox::new(&key)))
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
