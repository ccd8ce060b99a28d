//! AWS KMS as the KMS: the JSON API (`TrentService.Encrypt`, `Decrypt`) signed with SigV4.
//!
//! The context is sent as the encryption context `{"folio": <hex of context>}`, which
//! AWS KMS binds to the ciphertext as associated data. The ciphertext blob names the KMS
//! key that made it, so a data key wrapped before `kms.aws.key_id` moved to a new key
//! still unwraps. AWS KMS rotates key material itself (yearly, or on demand with
//! `RotateKeyOnDemand`) and keeps every version for decryption; Folio reports the key ARN
//! that wrapped each data key as its version.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::config::AwsConfig;
use super::sigv4::{self, Credentials};
use super::{short, KeyBytes, Kms, KmsError, WrappedKey};
use crate::secret::SecretString;

const PROVIDER: &str = "aws";

/// A symmetric key in AWS KMS.
pub struct AwsKms {
    client: reqwest::Client,
    endpoint: String,
    host: String,
    region: String,
    key_id: String,
    credentials: Credentials,
}

impl AwsKms {
    /// Builds the client. Credentials come from `[kms.aws]`, else from the standard
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN` variables.
    ///
    /// # Errors
    /// A bad endpoint or CA file, or no credentials.
    pub fn new(
        config: &AwsConfig,
        ca_cert: &std::path::Path,
        timeout: Duration,
    ) -> anyhow::Result<AwsKms> {
        let endpoint = if config.endpoint.is_empty() {
            format!("https://kms.{}.amazonaws.com", config.region)
        } else {
            config.endpoint.trim_end_matches('/').to_owned()
        };
        let host = reqwest::Url::parse(&endpoint)?
            .host_str()
            .map(str::to_owned)
            .unwrap_or_default();
        let port = reqwest::Url::parse(&endpoint)?.port();
        let host = port.map_or(host.clone(), |port| format!("{host}:{port}"));
        let credentials = credentials(config)?;
        Ok(AwsKms {
            client: super::http::client(&endpoint, ca_cert, timeout)?,
            endpoint,
            host,
            region: config.region.clone(),
            key_id: config.key_id.clone(),
            credentials,
        })
    }

    async fn call(
        &self,
        operation: &'static str,
        target: &str,
        body: Value,
    ) -> Result<Value, KmsError> {
        let body = body.to_string();
        let target = format!("TrentService.{target}");
        let headers = [
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", target.as_str()),
        ];
        let request = sigv4::Request {
            method: "POST",
            host: &self.host,
            path: "/",
            headers: &headers,
            body: body.as_bytes(),
        };
        let signed = sigv4::sign(
            &self.credentials,
            &self.region,
            "kms",
            &sigv4::amz_date_now(),
            &request,
        );
        let mut builder = self.client.post(format!("{}/", self.endpoint)).body(body);
        for (name, value) in headers.iter().map(|(n, v)| (*n, *v)) {
            builder = builder.header(name, value);
        }
        for (name, value) in &signed {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let response = builder
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
            if text.contains("InvalidCiphertextException") {
                return Err(KmsError::Authentication { provider: PROVIDER });
            }
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

fn credentials(config: &AwsConfig) -> anyhow::Result<Credentials> {
    let from_env = |name: &str| std::env::var(name).unwrap_or_default();
    let access_key_id = if config.access_key_id.is_empty() {
        from_env("AWS_ACCESS_KEY_ID")
    } else {
        config.access_key_id.clone()
    };
    let secret_access_key = if config.secret_access_key.is_empty() {
        SecretString::new(from_env("AWS_SECRET_ACCESS_KEY"))
    } else {
        config.secret_access_key.clone()
    };
    let session_token = if config.session_token.is_empty() {
        SecretString::new(from_env("AWS_SESSION_TOKEN"))
    } else {
        config.session_token.clone()
    };
    anyhow::ensure!(
        !access_key_id.is_empty() && !secret_access_key.is_empty(),
        "the aws KMS needs credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or \
         kms.aws.access_key_id and kms.aws.secret_access_key"
    );
    Ok(Credentials {
        access_key_id,
        secret_access_key,
        session_token,
    })
}

fn malformed(operation: &'static str, reason: &str) -> KmsError {
    KmsError::Malformed {
        provider: PROVIDER,
        operation,
        reason: reason.to_owned(),
    }
}

fn encryption_context(context: &[u8]) -> Value {
    json!({ "folio": hex::encode(context) })
}

#[async_trait::async_trait]
impl Kms for AwsKms {
    fn provider(&self) -> &'static str {
        PROVIDER
    }

    fn kek_id(&self) -> &str {
        &self.key_id
    }

    async fn wrap(&self, key: &KeyBytes, context: &[u8]) -> Result<WrappedKey, KmsError> {
        let body = json!({
            "KeyId": self.key_id,
            "Plaintext": BASE64.encode(key.as_ref()),
            "EncryptionContext": encryption_context(context),
        });
        let response = self.call("wrap", "Encrypt", body).await?;
        let ciphertext = response["CiphertextBlob"]
            .as_str()
            .and_then(|text| BASE64.decode(text).ok())
            .ok_or_else(|| malformed("wrap", "no base64 CiphertextBlob"))?;
        let kek_version = response["KeyId"]
            .as_str()
            .ok_or_else(|| malformed("wrap", "no KeyId"))?
            .to_owned();
        Ok(WrappedKey {
            provider: PROVIDER.to_owned(),
            kek_id: self.key_id.clone(),
            kek_version,
            ciphertext,
        })
    }

    async fn unwrap(&self, wrapped: &WrappedKey, context: &[u8]) -> Result<KeyBytes, KmsError> {
        if wrapped.provider != PROVIDER {
            self.check_owner(wrapped)?;
        }
        let body = json!({
            "CiphertextBlob": BASE64.encode(&wrapped.ciphertext),
            "EncryptionContext": encryption_context(context),
        });
        let response = self.call("unwrap", "Decrypt", body).await?;
        let plain = response["Plaintext"]
            .as_str()
            .and_then(|text| BASE64.decode(text).ok())
            .map(Zeroizing::new)
            .ok_or_else(|| malformed("unwrap", "no base64 Plaintext"))?;
        let mut key = Zeroizing::new([0u8; 32]);
        if plain.len() != key.len() {
            return Err(malformed("unwrap", "plaintext is not a 32-byte key"));
        }
        key.copy_from_slice(&plain);
        Ok(key)
    }

    async fn rotate(&self) -> Result<String, KmsError> {
        self.call(
            "rotate",
            "RotateKeyOnDemand",
            json!({ "KeyId": self.key_id }),
        )
        .await?;
        Ok(self.key_id.clone())
    }
}
