//! Key-encryption keys in a KMS, and the data keys they wrap.
//!
//! A [`Kms`] wraps and unwraps 32-byte data keys under a key-encryption key (KEK) it
//! holds; the data keys encrypt fields and secrets locally (`domain::envelope`). The
//! provider is chosen by `[kms] provider`, so moving from a development machine to a
//! cloud changes configuration only:
//!
//! | provider | KEK lives in | module |
//! |---|---|---|
//! | `local` | a key file in the data directory (development and tests only) | [`local`] |
//! | `vault` | HashiCorp Vault or OpenBao, transit engine | [`transit`] |
//! | `aws` | AWS KMS, through the official AWS SDK | [`aws`] |
//! | `gcp` | Google Cloud KMS, REST API | [`gcp`] |

pub mod aws;
pub(crate) mod aws_sdk;
pub mod cache;
mod config;
pub mod data_keys;
pub mod gcp;
mod http;
pub(crate) use http::is_loopback;
pub mod local;
pub mod transit;
pub mod wrapped_file;

use std::path::Path;
use std::sync::Arc;

use domain::envelope::DATA_KEY_LEN;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub use config::{AwsConfig, GcpConfig, KmsConfig, KmsProvider, Profile, VaultConfig};

/// A data key wrapped by a KEK, as a key store keeps it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedKey {
    /// Provider that wrapped it (`local`, `vault`, `aws`, `gcp`).
    pub provider: String,
    /// KEK name at the provider (key file, transit key, key ARN, key resource).
    pub kek_id: String,
    /// KEK version that wrapped it, as the provider reports it.
    pub kek_version: String,
    /// The provider's ciphertext.
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WrappedKey")
            .field("provider", &self.provider)
            .field("kek_id", &self.kek_id)
            .field("kek_version", &self.kek_version)
            .finish_non_exhaustive()
    }
}

/// Plaintext data-key bytes, wiped on drop.
pub type KeyBytes = Zeroizing<[u8; DATA_KEY_LEN]>;

/// A KMS call failed. Messages name the provider and the operation, never key bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KmsError {
    /// The KMS could not be reached, or the request timed out.
    #[error("{provider} KMS is unreachable during {operation}: {reason}")]
    Unavailable {
        /// Provider name.
        provider: &'static str,
        /// `wrap`, `unwrap`, `rotate`, ...
        operation: &'static str,
        /// Transport error text.
        reason: String,
    },
    /// The KMS returned an error status.
    #[error("{provider} KMS refused {operation} with status {status}: {message}")]
    Refused {
        /// Provider name.
        provider: &'static str,
        /// Operation.
        operation: &'static str,
        /// HTTP status.
        status: u16,
        /// The provider's error text, cut to 300 characters.
        message: String,
    },
    /// The KMS returned a response this client cannot parse.
    #[error("{provider} KMS returned an unreadable response to {operation}: {reason}")]
    Malformed {
        /// Provider name.
        provider: &'static str,
        /// Operation.
        operation: &'static str,
        /// Description of the problem.
        reason: String,
    },
    /// The wrapped key was not made by this provider and KEK.
    #[error("wrapped key belongs to {found}, but this KMS is {expected}; set [kms] to the provider that wrapped it")]
    WrongKek {
        /// This KMS.
        expected: String,
        /// The wrapped key's provider and KEK.
        found: String,
    },
    /// Unwrapping failed authentication (wrong context, altered or foreign ciphertext).
    #[error("{provider} KMS could not unwrap the data key: wrong context, altered or foreign ciphertext")]
    Authentication {
        /// Provider name.
        provider: &'static str,
    },
    /// A local file or random-source failure.
    #[error("{0}")]
    Local(String),
    /// The provider cannot do this operation.
    #[error("{provider} KMS cannot {operation}: {hint}")]
    Unsupported {
        /// Provider name.
        provider: &'static str,
        /// Operation.
        operation: &'static str,
        /// Suggested fix.
        hint: &'static str,
    },
}

/// A key-encryption key in a KMS.
#[async_trait::async_trait]
pub trait Kms: Send + Sync {
    /// Provider name, as in `[kms] provider`.
    fn provider(&self) -> &'static str;

    /// The KEK's name at the provider.
    fn kek_id(&self) -> &str;

    /// Wraps `key` under the current KEK version, bound to `context` (the KMS refuses to
    /// unwrap it with another context).
    ///
    /// # Errors
    /// [`KmsError`] when the KMS fails or refuses.
    async fn wrap(&self, key: &KeyBytes, context: &[u8]) -> Result<WrappedKey, KmsError>;

    /// Unwraps a key wrapped by this KEK (any version still enabled) with the same context.
    ///
    /// # Errors
    /// [`KmsError::Authentication`] for a wrong context or altered ciphertext, or another
    /// [`KmsError`] when the KMS fails.
    async fn unwrap(&self, wrapped: &WrappedKey, context: &[u8]) -> Result<KeyBytes, KmsError>;

    /// Creates a new KEK version and makes it current; returns its version.
    ///
    /// # Errors
    /// [`KmsError`] when the KMS fails, or [`KmsError::Unsupported`].
    async fn rotate(&self) -> Result<String, KmsError>;

    /// Wraps `wrapped` again under the current KEK version.
    ///
    /// # Errors
    /// As [`Kms::unwrap`] and [`Kms::wrap`].
    async fn rewrap(&self, wrapped: &WrappedKey, context: &[u8]) -> Result<WrappedKey, KmsError> {
        let key = self.unwrap(wrapped, context).await?;
        self.wrap(&key, context).await
    }

    /// Checks that `wrapped` was made by this provider and KEK.
    ///
    /// # Errors
    /// [`KmsError::WrongKek`].
    fn check_owner(&self, wrapped: &WrappedKey) -> Result<(), KmsError> {
        if wrapped.provider == self.provider() && wrapped.kek_id == self.kek_id() {
            return Ok(());
        }
        Err(KmsError::WrongKek {
            expected: format!("{} {}", self.provider(), self.kek_id()),
            found: format!("{} {}", wrapped.provider, wrapped.kek_id),
        })
    }
}

/// Draws a fresh data key from the system random source.
///
/// # Errors
/// [`KmsError::Local`] if the random source fails.
pub fn random_key() -> Result<KeyBytes, KmsError> {
    let mut key = Zeroizing::new([0u8; DATA_KEY_LEN]);
    getrandom::getrandom(key.as_mut())
        .map_err(|error| KmsError::Local(format!("the system random source failed: {error}")))?;
    Ok(key)
}

/// Opens the KMS that `[kms]` names; `secrets` reads the Vault token file before each call.
///
/// # Errors
/// A bad setting (named with its fix), the local provider under the production profile,
/// or a key file that cannot be read.
pub fn open(
    config: &KmsConfig,
    profile: Profile,
    data_dir: &Path,
    secrets: &Arc<crate::secrets::Secrets>,
) -> anyhow::Result<Arc<dyn Kms>> {
    config.validate(profile)?;
    let ca = &config.ca_cert;
    let timeout = std::time::Duration::from_millis(config.request_timeout_ms);
    Ok(match config.provider {
        KmsProvider::Local => Arc::new(local::LocalKms::open(&config.local_key_path(data_dir))?),
        KmsProvider::Vault => Arc::new({
            let secrets = Arc::clone(secrets);
            transit::TransitKms::new(&config.vault, ca, timeout, secrets)?
        }),
        KmsProvider::Aws => Arc::new(aws::AwsKms::new(&config.aws, ca, timeout)?),
        KmsProvider::Gcp => Arc::new(gcp::GcpKms::new(&config.gcp, ca, timeout)?),
    })
}

/// Cuts a provider's error text so a long body does not flood a log line.
pub(crate) fn short(text: &str) -> String {
    text.chars().take(300).collect()
}
