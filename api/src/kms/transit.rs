//! HashiCorp Vault or OpenBao transit engine as the KMS.
//!
//! The KEK is a transit key (`aes256-gcm96`). Wrapping is `POST /v1/<mount>/encrypt/<key>`
//! with the data key and the context as `associated_data`; the response `vault:v<N>:...`
//! names the KEK version. Rotation is `POST /v1/<mount>/keys/<key>/rotate`. Transit's own
//! `rewrap` endpoint does not take associated data, so a rewrap here unwraps and wraps
//! again; the data key is in Folio's memory for that moment only.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use reqwest::StatusCode;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::config::VaultConfig;
use super::{short, KeyBytes, Kms, KmsError, WrappedKey};
use crate::secret::SecretString;
use crate::secrets::{check_reference, reference_for_path, Secrets};

const PROVIDER: &str = "vault";

/// Source of the Vault token.
enum Token {
    /// `kms.vault.token`, fixed for the life of the process.
    Fixed(SecretString),
    /// `kms.vault.token_file`, read through the secrets provider before each call.
    Secret {
        secrets: Arc<Secrets>,
        reference: String,
    },
}

/// A transit key in Vault or OpenBao.
pub struct TransitKms {
    client: reqwest::Client,
    base: String,
    key: String,
    kek_id: String,
    token: Token,
    namespace: String,
}

impl TransitKms {
    /// Builds the client. The token comes from `token`, else from `token_file` (a path or
    /// a secret reference), which is read through `secrets` before each call, so a
    /// rotated token is used without a restart.
    ///
    /// # Errors
    /// A bad address, CA file or token reference, or no token.
    pub fn new(
        config: &VaultConfig,
        ca_cert: &std::path::Path,
        timeout: Duration,
        secrets: Arc<Secrets>,
    ) -> anyhow::Result<TransitKms> {
        let token = if config.token.is_empty() && !config.token_file.as_os_str().is_empty() {
            let reference = reference_for_path(&config.token_file);
            check_reference("kms.vault.token_file", &reference)?;
            Token::Secret { secrets, reference }
        } else {
            anyhow::ensure!(
                !config.token.is_empty(),
                "the vault KMS needs a token: set kms.vault.token_file or FOLIO_KMS__VAULT__TOKEN"
            );
            Token::Fixed(config.token.clone())
        };
        let addr = config.addr.trim_end_matches('/');
        Ok(TransitKms {
            client: super::http::client(addr, ca_cert, timeout)?,
            base: format!("{addr}/v1/{}", config.mount.trim_matches('/')),
            key: config.key.clone(),
            kek_id: format!("{addr}/{}/{}", config.mount.trim_matches('/'), config.key),
            token,
            namespace: config.namespace.clone(),
        })
    }

    /// Returns the token for the next call.
    async fn token(&self, operation: &'static str) -> Result<SecretString, KmsError> {
        match &self.token {
            Token::Fixed(token) => Ok(token.clone()),
            Token::Secret { secrets, reference } => {
                secrets
                    .get(reference)
                    .await
                    .map_err(|error| KmsError::Unavailable {
                        provider: PROVIDER,
                        operation,
                        reason: format!("kms.vault.token_file: {error}"),
                    })
            }
        }
    }

    async fn call(
        &self,
        operation: &'static str,
        path: &str,
        body: Value,
    ) -> Result<Value, KmsError> {
        let token = self.token(operation).await?;
        let mut request = self
            .client
            .post(format!("{}/{path}", self.base))
            .header("X-Vault-Token", token.expose())
            .json(&body);
        if !self.namespace.is_empty() {
            request = request.header("X-Vault-Namespace", &self.namespace);
        }
        let response = request
            .send()
            .await
            .map_err(|error| KmsError::Unavailable {
                provider: PROVIDER,
                operation,
                reason: error.without_url().to_string(),
            })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if status == StatusCode::BAD_REQUEST && text.contains("message authentication failed") {
            return Err(KmsError::Authentication { provider: PROVIDER });
        }
        if !status.is_success() {
            return Err(KmsError::Refused {
                provider: PROVIDER,
                operation,
                status: status.as_u16(),
                message: short(&text),
            });
        }
        serde_json::from_str(&text).map_err(|error| malformed(operation, &error.to_string()))
    }
}

fn malformed(operation: &'static str, reason: &str) -> KmsError {
    KmsError::Malformed {
        provider: PROVIDER,
        operation,
        reason: reason.to_owned(),
    }
}

/// Reads the version out of `vault:v<N>:...`.
fn version_of(ciphertext: &str) -> Option<String> {
    let rest = ciphertext.strip_prefix("vault:v")?;
    let (version, _) = rest.split_once(':')?;
    version.parse::<u32>().ok().map(|v| v.to_string())
}

#[async_trait::async_trait]
impl Kms for TransitKms {
    fn provider(&self) -> &'static str {
        PROVIDER
    }

    fn kek_id(&self) -> &str {
        &self.kek_id
    }

    async fn wrap(&self, key: &KeyBytes, context: &[u8]) -> Result<WrappedKey, KmsError> {
        let body = json!({
            "plaintext": BASE64.encode(key.as_ref()),
            "associated_data": BASE64.encode(context),
        });
        let response = self
            .call("wrap", &format!("encrypt/{}", self.key), body)
            .await?;
        let ciphertext = response["data"]["ciphertext"]
            .as_str()
            .ok_or_else(|| malformed("wrap", "no data.ciphertext"))?;
        let kek_version = version_of(ciphertext)
            .ok_or_else(|| malformed("wrap", "ciphertext is not vault:v<N>:"))?;
        Ok(WrappedKey {
            provider: PROVIDER.to_owned(),
            kek_id: self.kek_id.clone(),
            kek_version,
            ciphertext: ciphertext.as_bytes().to_vec(),
        })
    }

    async fn unwrap(&self, wrapped: &WrappedKey, context: &[u8]) -> Result<KeyBytes, KmsError> {
        self.check_owner(wrapped)?;
        let ciphertext = std::str::from_utf8(&wrapped.ciphertext)
            .map_err(|_| KmsError::Authentication { provider: PROVIDER })?;
        let body = json!({
            "ciphertext": ciphertext,
            "associated_data": BASE64.encode(context),
        });
        let response = self
            .call("unwrap", &format!("decrypt/{}", self.key), body)
            .await?;
        let plain = response["data"]["plaintext"]
            .as_str()
            .and_then(|text| BASE64.decode(text).ok())
            .map(Zeroizing::new)
            .ok_or_else(|| malformed("unwrap", "no base64 data.plaintext"))?;
        let mut key = Zeroizing::new([0u8; 32]);
        if plain.len() != key.len() {
            return Err(malformed("unwrap", "plaintext is not a 32-byte key"));
        }
        key.copy_from_slice(&plain);
        Ok(key)
    }

    async fn rotate(&self) -> Result<String, KmsError> {
        let response = self
            .call("rotate", &format!("keys/{}/rotate", self.key), json!({}))
            .await?;
        response["data"]["latest_version"]
            .as_u64()
            .map(|version| version.to_string())
            .ok_or_else(|| malformed("rotate", "no data.latest_version"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_read_from_the_ciphertext_prefix() {
        assert_eq!(version_of("vault:v12:abc").as_deref(), Some("12"));
        assert_eq!(version_of("vault:vx:abc"), None);
        assert_eq!(version_of("other"), None);
    }
}
