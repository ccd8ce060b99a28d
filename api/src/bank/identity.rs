//! The bank client certificate and key, read through the secrets provider before each
//! dispatch, so a rotated pair is used by the next call without a restart.
//!
//! `bank.client_cert` and `bank.client_key` are file paths or secret references
//! (`file:`, `env:`, `vault:`, `aws-sm:`) of PEM text. The provider's cache decides how
//! often they are read again (`secrets.ttl_seconds`), and its stale limit decides how long
//! the last good pair is used while the provider fails. Past that, dispatch fails with a
//! `tls` error naming the reference, and the payment is retried later.

use std::path::Path;
use std::sync::{Arc, Mutex};

use super::https::{build_client, tls_config_with_identity};
use super::{BankConfigError, BankError, HttpsBankConfig};
use crate::secret::SecretString;
use crate::secrets::{reference_for_path, SecretError, Secrets};
use crate::tls;

/// The pair in use and the client built on it.
struct Loaded {
    cert: SecretString,
    key: SecretString,
    client: reqwest::Client,
}

/// The client certificate and key of the bank link, reloaded when their secrets change.
pub(crate) struct ClientIdentity {
    secrets: Arc<Secrets>,
    cert_reference: String,
    key_reference: String,
    loaded: Mutex<Loaded>,
}

impl ClientIdentity {
    /// Reads the pair named by `config` and builds the first client.
    ///
    /// # Errors
    /// A secret that cannot be read, or a pair rustls rejects.
    pub(crate) async fn load(
        config: &HttpsBankConfig,
        secrets: Arc<Secrets>,
    ) -> Result<ClientIdentity, BankConfigError> {
        let cert_reference = reference_for_path(&config.client_cert);
        let key_reference = reference_for_path(&config.client_key);
        let cert = secrets.get(&cert_reference).await?;
        let key = secrets.get(&key_reference).await?;
        let client = client_for(config, &cert_reference, &cert, &key_reference, &key)?;
        Ok(ClientIdentity {
            secrets,
            cert_reference,
            key_reference,
            loaded: Mutex::new(Loaded { cert, key, client }),
        })
    }

    /// Returns the client on the current pair, rebuilding it when a secret has changed.
    /// A changed pair that does not load (say the certificate is written but not yet the
    /// key) is logged and the previous pair stays in use.
    ///
    /// # Errors
    /// [`BankError::Tls`] when a secret is unavailable or too stale to use.
    pub(crate) async fn client(
        &self,
        config: &HttpsBankConfig,
    ) -> Result<reqwest::Client, BankError> {
        let cert = self.read(&self.cert_reference).await?;
        let key = self.read(&self.key_reference).await?;

        let mut loaded = self.lock();
        if loaded.cert == cert && loaded.key == key {
            return Ok(loaded.client.clone());
        }
        let cert_ref = &self.cert_reference;
        match client_for(config, cert_ref, &cert, &self.key_reference, &key) {
            Ok(client) => {
                *loaded = Loaded { cert, key, client };
                tracing::info!(
                    cert = %cert_ref,
                    key = %self.key_reference,
                    "bank client certificate reloaded"
                );
            }
            Err(error) => tracing::warn!(
                %error,
                "new bank client certificate or key not loaded; the previous pair stays in use"
            ),
        }
        Ok(loaded.client.clone())
    }

    async fn read(&self, reference: &str) -> Result<SecretString, BankError> {
        self.secrets
            .get(reference)
            .await
            .map_err(|error: SecretError| BankError::Tls {
                detail: format!("bank client certificate or key unavailable: {error}"),
            })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Loaded> {
        // The pair and its client are replaced together, so a panicked holder left them
        // consistent.
        self.loaded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Builds the bank client on a certificate chain and key given as PEM text.
fn client_for(
    config: &HttpsBankConfig,
    cert_reference: &str,
    cert: &SecretString,
    key_reference: &str,
    key: &SecretString,
) -> Result<reqwest::Client, BankConfigError> {
    let roots = tls::load_root_store(&config.ca_cert)?;
    let certs = tls::parse_certs(cert.expose().as_bytes(), Path::new(cert_reference))?;
    let key = tls::parse_private_key(key.expose().as_bytes(), Path::new(key_reference))?;
    build_client(config, tls_config_with_identity(config, roots, certs, key)?)
}
