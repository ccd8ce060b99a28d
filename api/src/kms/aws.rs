//! AWS KMS as the KMS, through the official AWS SDK for Rust (`aws-sdk-kms`).
//!
//! The context is sent as the encryption context `{"folio": <hex of context>}`, which
//! AWS KMS binds to the ciphertext as associated data. The ciphertext blob names the KMS
//! key that made it, so a data key wrapped before `kms.aws.key_id` moved to a new key
//! still unwraps. AWS KMS rotates key material itself (yearly, or on demand with
//! `RotateKeyOnDemand`) and keeps every version for decryption; Folio reports the key ARN
//! that wrapped each data key as its version.

use std::time::Duration;

use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use zeroize::Zeroizing;

use super::aws_sdk::{sdk_config, AwsCredentials};
use super::config::AwsConfig;
use super::{short, KeyBytes, Kms, KmsError, WrappedKey};
use crate::secret::SecretString;

const PROVIDER: &str = "aws";

/// A symmetric key in AWS KMS.
pub struct AwsKms {
    client: aws_sdk_kms::Client,
    key_id: String,
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
        anyhow::ensure!(
            !config.region.is_empty(),
            "the aws KMS needs kms.aws.region, such as \"ap-southeast-2\""
        );
        let endpoint = if config.endpoint.is_empty() {
            format!("https://kms.{}.amazonaws.com", config.region)
        } else {
            config.endpoint.trim_end_matches('/').to_owned()
        };
        let http = super::http::client(&endpoint, ca_cert, timeout)?;
        let shared = sdk_config(
            &config.region,
            Some(&endpoint),
            credentials(config)?,
            http,
            timeout,
        );
        Ok(AwsKms {
            client: aws_sdk_kms::Client::new(&shared),
            key_id: config.key_id.clone(),
        })
    }
}

fn credentials(config: &AwsConfig) -> anyhow::Result<AwsCredentials> {
    let from_env = AwsCredentials::from_env();
    let or_env = |configured: &SecretString, env: SecretString| {
        if configured.is_empty() {
            env
        } else {
            configured.clone()
        }
    };
    let credentials = AwsCredentials {
        access_key_id: if config.access_key_id.is_empty() {
            from_env.access_key_id
        } else {
            config.access_key_id.clone()
        },
        secret_access_key: or_env(&config.secret_access_key, from_env.secret_access_key),
        session_token: or_env(&config.session_token, from_env.session_token),
    };
    anyhow::ensure!(
        !credentials.access_key_id.is_empty() && !credentials.secret_access_key.is_empty(),
        "the aws KMS needs credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or \
         kms.aws.access_key_id and kms.aws.secret_access_key"
    );
    Ok(credentials)
}

/// Maps an SDK failure. No response is `Unavailable`, and an error response is `Refused`
/// with its status and AWS error code.
fn kms_error<E>(operation: &'static str, error: SdkError<E, HttpResponse>) -> KmsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match error {
        SdkError::ServiceError(context) => {
            let status = context.raw().status().as_u16();
            let error = context.into_err();
            let message = format!(
                "{}: {}",
                error.code().unwrap_or("unknown error"),
                error.message().unwrap_or_default()
            );
            KmsError::Refused {
                provider: PROVIDER,
                operation,
                status,
                message: short(&message),
            }
        }
        SdkError::ResponseError(_) => malformed(operation, "the response could not be parsed"),
        other => KmsError::Unavailable {
            provider: PROVIDER,
            operation,
            // `{:#}` prints the error and its sources, without the SDK's `Debug` dump.
            reason: short(&format!("{:#}", anyhow::Error::new(other))),
        },
    }
}

fn malformed(operation: &'static str, reason: &str) -> KmsError {
    KmsError::Malformed {
        provider: PROVIDER,
        operation,
        reason: reason.to_owned(),
    }
}

const CONTEXT_KEY: &str = "folio";

#[async_trait::async_trait]
impl Kms for AwsKms {
    fn provider(&self) -> &'static str {
        PROVIDER
    }

    fn kek_id(&self) -> &str {
        &self.key_id
    }

    async fn wrap(&self, key: &KeyBytes, context: &[u8]) -> Result<WrappedKey, KmsError> {
        let response = self
            .client
            .encrypt()
            .key_id(&self.key_id)
            .plaintext(Blob::new(key.to_vec()))
            .encryption_context(CONTEXT_KEY, hex::encode(context))
            .send()
            .await
            .map_err(|error| kms_error("wrap", error))?;
        let ciphertext = response
            .ciphertext_blob()
            .ok_or_else(|| malformed("wrap", "no CiphertextBlob"))?
            .as_ref()
            .to_vec();
        let kek_version = response
            .key_id()
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
        let response = self
            .client
            .decrypt()
            .ciphertext_blob(Blob::new(wrapped.ciphertext.clone()))
            .encryption_context(CONTEXT_KEY, hex::encode(context))
            .send()
            .await
            .map_err(|error| {
                // A wrong context or an altered ciphertext fails authentication at AWS, as it
                // does with the other providers.
                let service = error.as_service_error();
                if service.is_some_and(|service| {
                    service.is_invalid_ciphertext_exception()
                        || service.is_incorrect_key_exception()
                }) {
                    return KmsError::Authentication { provider: PROVIDER };
                }
                kms_error("unwrap", error)
            })?;
        let plain = response
            .plaintext()
            .map(|blob| Zeroizing::new(blob.as_ref().to_vec()))
            .ok_or_else(|| malformed("unwrap", "no Plaintext"))?;
        let mut key = Zeroizing::new([0u8; 32]);
        if plain.len() != key.len() {
            return Err(malformed("unwrap", "plaintext is not a 32-byte key"));
        }
        key.copy_from_slice(&plain);
        Ok(key)
    }

    /// Rotates the key material of `kms.aws.key_id` on demand. `RotateKeyOnDemand` takes
    /// a key id or ARN but no alias, so the key is resolved first, and the version returned
    /// is the key ARN that `Encrypt` reports: AWS keeps the ARN across rotations.
    async fn rotate(&self) -> Result<String, KmsError> {
        let described = self
            .client
            .describe_key()
            .key_id(&self.key_id)
            .send()
            .await
            .map_err(|error| kms_error("rotate", error))?;
        let arn = described
            .key_metadata()
            .and_then(|metadata| metadata.arn())
            .ok_or_else(|| malformed("rotate", "DescribeKey returned no key ARN"))?
            .to_owned();
        self.client
            .rotate_key_on_demand()
            .key_id(&arn)
            .send()
            .await
            .map_err(|error| kms_error("rotate", error))?;
        Ok(arn)
    }
}
