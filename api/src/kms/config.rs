//! `[kms]`: which KMS holds the key-encryption key, and the data-key limits.

use std::path::{Path, PathBuf};

use anyhow::bail;
use domain::envelope::{DataKeyLimits, MAX_MESSAGES_PER_DATA_KEY};
use serde::Deserialize;

use crate::secret::SecretString;

/// Deployment profile (top-level `profile`). Production refuses development shortcuts
/// such as the local KMS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// A developer's machine or a test (the default).
    #[default]
    Development,
    /// A deployed server.
    Production,
}

/// The KMS provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KmsProvider {
    /// A key file in the data directory; development and tests only.
    #[default]
    Local,
    /// HashiCorp Vault or OpenBao, transit secrets engine.
    Vault,
    /// AWS KMS.
    Aws,
    /// Google Cloud KMS.
    Gcp,
}

/// `[kms]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KmsConfig {
    /// `local` (the default), `vault`, `aws` or `gcp`.
    pub provider: KmsProvider,
    /// Key file of the local provider; empty means `keys/kms-local.kek` in the data dir.
    pub local_key_file: PathBuf,
    /// Messages one data key encrypts before a new one is made (at most 2^24).
    pub data_key_max_messages: u64,
    /// Seconds a data key encrypts before a new one is made.
    pub data_key_max_age_seconds: u64,
    /// Unwrapped data keys kept in memory at most.
    pub cache_max_entries: usize,
    /// Seconds an unwrapped data key stays in memory.
    pub cache_ttl_seconds: u64,
    /// Timeout of one KMS request, in milliseconds.
    pub request_timeout_ms: u64,
    /// PEM file of the CA certificates trusted for an `https://` KMS endpoint.
    pub ca_cert: PathBuf,
    /// Seal the name and account of new payees (`payee.added` schema version 2).
    pub seal_payee_fields: bool,
    /// Seconds between passes of the background rewrap job, which moves data keys off
    /// older KEK versions. A KEK rotation through the API starts a pass at once.
    pub rewrap_interval_seconds: u64,
    /// Data keys the rewrap job moves per batch (1 to 1,000).
    pub rewrap_batch: u32,
    /// Pause between two rewrap batches, in milliseconds, so the job leaves the KMS
    /// quota to live traffic.
    pub rewrap_pause_ms: u64,
    /// `vault` provider settings.
    pub vault: VaultConfig,
    /// `aws` provider settings.
    pub aws: AwsConfig,
    /// `gcp` provider settings.
    pub gcp: GcpConfig,
}

impl Default for KmsConfig {
    fn default() -> Self {
        KmsConfig {
            provider: KmsProvider::Local,
            local_key_file: PathBuf::new(),
            data_key_max_messages: 1 << 20,
            data_key_max_age_seconds: 7 * 24 * 3600,
            cache_max_entries: 10_000,
            cache_ttl_seconds: 300,
            request_timeout_ms: 5_000,
            ca_cert: PathBuf::from("/etc/ssl/certs/ca-certificates.crt"),
            seal_payee_fields: true,
            rewrap_interval_seconds: 300,
            rewrap_batch: 100,
            rewrap_pause_ms: 100,
            vault: VaultConfig::default(),
            aws: AwsConfig::default(),
            gcp: GcpConfig::default(),
        }
    }
}

/// `[kms.vault]`: a transit key in HashiCorp Vault or OpenBao.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VaultConfig {
    /// Server address, such as `https://vault.internal:8200`.
    pub addr: String,
    /// Mount path of the transit engine.
    pub mount: String,
    /// Transit key name.
    pub key: String,
    /// Token; prefer `token_file` or `FOLIO_KMS__VAULT__TOKEN` over the config file.
    pub token: SecretString,
    /// File holding the token, or a secret reference (`file:`, `env:`, `vault:`,
    /// `aws-sm:`); read through the secrets provider before each call, so a rotated token
    /// is used without a restart.
    pub token_file: PathBuf,
    /// Enterprise namespace (`X-Vault-Namespace`), empty for none.
    pub namespace: String,
}

impl Default for VaultConfig {
    fn default() -> Self {
        VaultConfig {
            addr: String::new(),
            mount: "transit".to_owned(),
            key: "folio".to_owned(),
            token: SecretString::default(),
            token_file: PathBuf::new(),
            namespace: String::new(),
        }
    }
}

/// `[kms.aws]`: a symmetric key in AWS KMS.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsConfig {
    /// Region, such as `ap-southeast-2`.
    pub region: String,
    /// Key id, ARN or alias (`alias/folio`) that new data keys are wrapped with.
    pub key_id: String,
    /// Endpoint; empty means `https://kms.<region>.amazonaws.com`.
    pub endpoint: String,
    /// Access key id; empty means `AWS_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// Secret access key; empty means `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: SecretString,
    /// Session token of temporary credentials; empty means `AWS_SESSION_TOKEN` if set.
    pub session_token: SecretString,
}

/// `[kms.gcp]`: a symmetric key in Google Cloud KMS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GcpConfig {
    /// Key resource: `projects/P/locations/L/keyRings/R/cryptoKeys/K`.
    pub key_name: String,
    /// Endpoint of the REST API.
    pub endpoint: String,
    /// OAuth access token; prefer `access_token_file`.
    pub access_token: SecretString,
    /// File holding the access token, read before each call so a refreshed token is used.
    pub access_token_file: PathBuf,
}

impl Default for GcpConfig {
    fn default() -> Self {
        GcpConfig {
            key_name: String::new(),
            endpoint: "https://cloudkms.googleapis.com".to_owned(),
            access_token: SecretString::default(),
            access_token_file: PathBuf::new(),
        }
    }
}

impl KmsConfig {
    /// The local provider's key file.
    pub fn local_key_path(&self, data_dir: &Path) -> PathBuf {
        if self.local_key_file.as_os_str().is_empty() {
            data_dir.join("keys").join("kms-local.kek")
        } else {
            self.local_key_file.clone()
        }
    }

    /// The data-key limits.
    pub fn limits(&self) -> DataKeyLimits {
        DataKeyLimits {
            max_messages: self.data_key_max_messages,
            max_age_micros: i64::try_from(self.data_key_max_age_seconds)
                .unwrap_or(i64::MAX / 1_000_000)
                .saturating_mul(1_000_000),
        }
    }

    /// Checks the settings of the chosen provider.
    ///
    /// # Errors
    /// Names the setting and how to fix it.
    pub fn validate(&self, profile: Profile) -> anyhow::Result<()> {
        if let Err(reason) = self.limits().validated() {
            bail!(
                "kms.data_key_max_messages / data_key_max_age_seconds: {reason}; keep the \
                 messages between 1 and {MAX_MESSAGES_PER_DATA_KEY} and the age above 0"
            );
        }
        if self.cache_max_entries == 0 || self.request_timeout_ms == 0 {
            bail!("kms.cache_max_entries and kms.request_timeout_ms must be above 0");
        }
        if !(1..=crate::key_rotation::MAX_REWRAP_BATCH).contains(&self.rewrap_batch) {
            bail!(
                "kms.rewrap_batch is {}; set it between 1 and {}",
                self.rewrap_batch,
                crate::key_rotation::MAX_REWRAP_BATCH
            );
        }
        if self.rewrap_interval_seconds == 0 {
            bail!("kms.rewrap_interval_seconds is 0; set it to 1 or more (300 is the default)");
        }
        if profile == Profile::Production {
            let endpoints = [
                ("kms.vault.addr", &self.vault.addr),
                ("kms.aws.endpoint", &self.aws.endpoint),
                ("kms.gcp.endpoint", &self.gcp.endpoint),
            ];
            for (setting, url) in endpoints {
                if url.starts_with("http://") {
                    bail!(
                        "{setting} is {url:?}, plain HTTP, but profile is \"production\": the KMS \
                         token and the wrapped keys would cross the network in the clear; use \
                         an https:// address"
                    );
                }
            }
        }
        match self.provider {
            KmsProvider::Local if profile == Profile::Production => bail!(
                "kms.provider is \"local\" but profile is \"production\": a key file beside the \
                 data is for development only; set kms.provider to \"vault\", \"aws\" or \"gcp\""
            ),
            KmsProvider::Local => Ok(()),
            KmsProvider::Vault => require(&[
                ("kms.vault.addr", &self.vault.addr),
                ("kms.vault.mount", &self.vault.mount),
                ("kms.vault.key", &self.vault.key),
            ]),
            KmsProvider::Aws => require(&[
                ("kms.aws.region", &self.aws.region),
                ("kms.aws.key_id", &self.aws.key_id),
            ]),
            KmsProvider::Gcp => require(&[("kms.gcp.key_name", &self.gcp.key_name)]),
        }
    }
}

fn require(settings: &[(&str, &String)]) -> anyhow::Result<()> {
    for (name, value) in settings {
        if value.trim().is_empty() {
            bail!("{name} is empty; the chosen kms.provider needs it");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_provider_refuses_production() {
        let config = KmsConfig::default();
        assert!(config.validate(Profile::Development).is_ok());
        let error = config.validate(Profile::Production).unwrap_err();
        assert!(error.to_string().contains("development only"), "{error}");
    }

    #[test]
    fn provider_settings_are_required() {
        let config = KmsConfig {
            provider: KmsProvider::Vault,
            ..KmsConfig::default()
        };
        let error = config.validate(Profile::Production).unwrap_err();
        assert!(error.to_string().contains("kms.vault.addr"), "{error}");
    }

    #[test]
    fn production_refuses_a_plain_http_kms() {
        let mut config = KmsConfig {
            provider: KmsProvider::Vault,
            ..KmsConfig::default()
        };
        config.vault.addr = "http://127.0.0.1:8200".to_owned();
        config.vault.token_file = "/run/secrets/vault-token".into();
        assert!(config.validate(Profile::Development).is_ok());
        let error = config.validate(Profile::Production).unwrap_err();
        assert!(error.to_string().contains("https://"), "{error}");
        config.vault.addr = "https://vault.internal:8200".to_owned();
        assert!(config.validate(Profile::Production).is_ok());
    }

    #[test]
    fn rewrap_batch_is_bounded() {
        let config = KmsConfig {
            rewrap_batch: 0,
            ..KmsConfig::default()
        };
        let error = config.validate(Profile::Development).unwrap_err();
        assert!(error.to_string().contains("kms.rewrap_batch"), "{error}");
    }

    #[test]
    fn message_limit_is_bounded() {
        let config = KmsConfig {
            data_key_max_messages: MAX_MESSAGES_PER_DATA_KEY + 1,
            ..KmsConfig::default()
        };
        assert!(config.validate(Profile::Development).is_err());
    }
}
