//! Google Cloud KMS as the KMS, over its REST API.
//!
//! Wrapping is `POST /v1/<key>:encrypt` with the context as
//! `additionalAuthenticatedData`; the response's `name` is the key version that was
//! primary. Rotation creates a version (`POST /v1/<key>/cryptoKeyVersions`) and makes it
//! primary (`:updatePrimaryVersion`). Google publishes no emulator of Cloud KMS, so the
//! tests replay responses written from the API reference (see `api/tests/kms_gcp.rs`);
//! they were not captured from the live service.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::config::GcpConfig;
use super::{short, KeyBytes, Kms, KmsError, WrappedKey};
use crate::secret::SecretString;

const PROVIDER: &str = "gcp";

/// A symmetric key in Google Cloud KMS.
pub struct GcpKms {
    client: reqwest::Client,
    endpoint: String,
    key_name: String,
    token: SecretString,
    token_file: Option<PathBuf>,
}

impl GcpKms {
    /// Builds the client. The access token comes from `access_token_file` (read before
    /// each call, so a token refreshed by a sidecar is picked up), else `access_token`.
    ///
    /// # Errors
    /// A bad endpoint or CA file, or no token.
    pub fn new(
        config: &GcpConfig,
        ca_cert: &std::path::Path,
        timeout: Duration,
    ) -> anyhow::Result<GcpKms> {
        let token_file = (!config.access_token_file.as_os_str().is_empty())
            .then(|| config.access_token_file.clone());
        anyhow::ensure!(
            token_file.is_some() || !config.access_token.is_empty(),
            "the gcp KMS needs an access token: set kms.gcp.access_token_file"
        );
        if let Some(path) = &token_file {
            std::fs::metadata(path).with_context(|| {
                format!("cannot read kms.gcp.access_token_file {}", path.display())
            })?;
        }
        let endpoint = config.endpoint.trim_end_matches('/').to_owned();
        Ok(GcpKms {
            client: super::http::client(&endpoint, ca_cert, timeout)?,
            endpoint,
            key_name: config.key_name.clone(),
            token: config.access_token.clone(),
            token_file,
        })
    }

    fn token(&self, operation: &'static str) -> Result<SecretString, KmsError> {
        match &self.token_file {
            Some(path) => std::fs::read_to_string(path)
                .map(|text| SecretString::new(text.trim().to_owned()))
                .map_err(|error| KmsError::Unavailable {
                    provider: PROVIDER,
                    operation,
                    reason: format!(
                        "cannot read the access token file {}: {error}",
                        path.display()
                    ),
                }),
            None => Ok(self.token.clone()),
        }
    }

    async fn call(
        &self,
        operation: &'static str,
        path: &str,
        body: Value,
    ) -> Result<Value, KmsError> {
        let token = self.token(operation)?;
        let response = self
            .client
            .post(format!("{}/v1/{path}", self.endpoint))
            .bearer_auth(token.expose())
            .json(&body)
            .send()
            .await
            .map_err(|error| KmsError::Unavailable {
                provider: PROVIDER,
                operation,
                reason: error.without_url().to_string(),
            })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            let body: Value = serde_json::from_str(&text).unwrap_or_default();
            let message = body["error"]["message"].as_str().unwrap_or(&text);
            if operation == "unwrap" && status == reqwest::StatusCode::BAD_REQUEST {
                return Err(KmsError::Authentication { provider: PROVIDER });
            }
            return Err(KmsError::Refused {
                provider: PROVIDER,
                operation,
                status: status.as_u16(),
                message: short(message),
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

/// The version number at the end of `.../cryptoKeyVersions/<n>`.
fn version_of(name: &str) -> Option<String> {
    let (_, version) = name.rsplit_once("/cryptoKeyVersions/")?;
    version.parse::<u32>().ok().map(|v| v.to_string())
}

#[async_trait::async_trait]
impl Kms for GcpKms {
    fn provider(&self) -> &'static str {
        PROVIDER
    }

    fn kek_id(&self) -> &str {
        &self.key_name
    }

    async fn wrap(&self, key: &KeyBytes, context: &[u8]) -> Result<WrappedKey, KmsError> {
        let body = json!({
            "plaintext": BASE64.encode(key.as_ref()),
            "additionalAuthenticatedData": BASE64.encode(context),
        });
        let response = self
            .call("wrap", &format!("{}:encrypt", self.key_name), body)
            .await?;
        let ciphertext = response["ciphertext"]
            .as_str()
            .and_then(|text| BASE64.decode(text).ok())
            .ok_or_else(|| malformed("wrap", "no base64 ciphertext"))?;
        let kek_version = response["name"]
            .as_str()
            .and_then(version_of)
            .ok_or_else(|| malformed("wrap", "name is not a cryptoKeyVersions path"))?;
        Ok(WrappedKey {
            provider: PROVIDER.to_owned(),
            kek_id: self.key_name.clone(),
            kek_version,
            ciphertext,
        })
    }

    async fn unwrap(&self, wrapped: &WrappedKey, context: &[u8]) -> Result<KeyBytes, KmsError> {
        self.check_owner(wrapped)?;
        let body = json!({
            "ciphertext": BASE64.encode(&wrapped.ciphertext),
            "additionalAuthenticatedData": BASE64.encode(context),
        });
        let response = self
            .call("unwrap", &format!("{}:decrypt", self.key_name), body)
            .await?;
        let plain = response["plaintext"]
            .as_str()
            .and_then(|text| BASE64.decode(text).ok())
            .map(Zeroizing::new)
            .ok_or_else(|| malformed("unwrap", "no base64 plaintext"))?;
        let mut key = Zeroizing::new([0u8; 32]);
        if plain.len() != key.len() {
            return Err(malformed("unwrap", "plaintext is not a 32-byte key"));
        }
        key.copy_from_slice(&plain);
        Ok(key)
    }

    async fn rotate(&self) -> Result<String, KmsError> {
        let path = format!("{}/cryptoKeyVersions", self.key_name);
        let created = self.call("rotate", &path, json!({})).await?;
        let version = created["name"]
            .as_str()
            .and_then(version_of)
            .ok_or_else(|| malformed("rotate", "name is not a cryptoKeyVersions path"))?;
        let path = format!("{}:updatePrimaryVersion", self.key_name);
        self.call("rotate", &path, json!({ "cryptoKeyVersionId": version }))
            .await?;
        Ok(version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_comes_from_the_resource_name() {
        let name = "projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/7";
        assert_eq!(version_of(name).as_deref(), Some("7"));
        assert_eq!(version_of("projects/p"), None);
    }
}
