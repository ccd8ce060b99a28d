//! Secrets read through a provider, cached with a TTL, and served stale for a bounded
//! time when the provider fails.
//!
//! A secret is named by a reference:
//!
//! | reference | read from |
//! |---|---|
//! | `env:NAME` | the environment variable `NAME` |
//! | `file:/path` | the file's contents, trimmed (Kubernetes and Docker secrets) |
//! | `vault:<mount>/<path>#<field>` | a Vault or OpenBao KV version 2 secret |
//! | `aws-sm:<secret id>` | AWS Secrets Manager, `SecretString` |
//!
//! [`Secrets::get`] returns the cached value while it is younger than `ttl`. After that
//! it reads the provider; if the provider fails, the last good value is served until it
//! is `max_stale` past its TTL, with the `folio_secret_cache_stale_total` counter and a
//! warning (which names the reference, never the value). Past that [`SecretError::Stale`]
//! stops the feature that needs the secret instead of running on an old credential.

//! The consumers: database passwords (`crate::db_password`, refreshed in the background
//! and applied to live pools), the bank client certificate and key (read before each
//! dispatch), and the Vault transit token of the KMS (read before each call).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use serde::Deserialize;
use serde_json::Value;

use crate::kms::aws_sdk::{sdk_config, AwsCredentials};
use crate::secret::SecretString;

/// `[secrets]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsConfig {
    /// Seconds a value is served from the cache before the provider is read again.
    pub ttl_seconds: u64,
    /// Seconds past the TTL that the last good value may be served while the provider
    /// fails; after that the secret is refused.
    pub max_stale_seconds: u64,
    /// Vault or OpenBao address for `vault:` references.
    pub vault_addr: String,
    /// File holding the Vault token for `vault:` references.
    pub vault_token_file: std::path::PathBuf,
    /// Region of AWS Secrets Manager for `aws-sm:` references.
    pub aws_region: String,
    /// Endpoint of AWS Secrets Manager; empty means the region's public one.
    pub aws_endpoint: String,
    /// PEM file of the CA certificates trusted for `https://` providers.
    pub ca_cert: std::path::PathBuf,
}

impl Default for SecretsConfig {
    fn default() -> Self {
        SecretsConfig {
            ttl_seconds: 300,
            max_stale_seconds: 900,
            vault_addr: String::new(),
            vault_token_file: std::path::PathBuf::new(),
            aws_region: String::new(),
            aws_endpoint: String::new(),
            ca_cert: std::path::PathBuf::from("/etc/ssl/certs/ca-certificates.crt"),
        }
    }
}

/// A secret could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The reference is not one of the forms above.
    #[error(
        "secret reference {0:?} is not env:NAME, file:/path, vault:mount/path#field or aws-sm:id"
    )]
    BadReference(String),
    /// The provider failed and no cached value is fresh enough.
    #[error("secret {reference} is unavailable: {reason}")]
    Unavailable {
        /// The reference.
        reference: String,
        /// The failure, without the value.
        reason: String,
    },
    /// The provider has failed for longer than `max_stale_seconds` past the TTL.
    #[error("secret {reference} is stale: the provider has failed for {seconds} s past its TTL; fix the provider, the feature stays stopped until then")]
    Stale {
        /// The reference.
        reference: String,
        /// Seconds since the value's TTL ended.
        seconds: u64,
    },
}

/// Counters of the secret cache, rendered at `/metrics`.
#[derive(Debug, Default)]
pub struct SecretMetrics {
    /// Values served from the cache within their TTL.
    pub hits: AtomicU64,
    /// Reads of the provider.
    pub fetches: AtomicU64,
    /// Failed reads of the provider.
    pub failures: AtomicU64,
    /// Values served past their TTL because the provider failed.
    pub stale: AtomicU64,
    /// Requests refused because the value was too stale.
    pub refused: AtomicU64,
}

/// The process's secret-cache counters.
pub static METRICS: SecretMetrics = SecretMetrics {
    hits: AtomicU64::new(0),
    fetches: AtomicU64::new(0),
    failures: AtomicU64::new(0),
    stale: AtomicU64::new(0),
    refused: AtomicU64::new(0),
};

impl SecretMetrics {
    /// Renders the counters in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        for (name, help, counter) in [
            (
                "folio_secret_cache_hits_total",
                "Secrets served from the cache.",
                &self.hits,
            ),
            (
                "folio_secret_cache_fetches_total",
                "Reads of the secrets provider.",
                &self.fetches,
            ),
            (
                "folio_secret_cache_failures_total",
                "Failed reads of the secrets provider.",
                &self.failures,
            ),
            (
                "folio_secret_cache_stale_total",
                "Secrets served past their TTL because the provider failed.",
                &self.stale,
            ),
            (
                "folio_secret_cache_refused_total",
                "Secrets refused because the provider failed for too long.",
                &self.refused,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", counter.load(Ordering::Relaxed));
        }
    }
}

/// Checks that `reference`, the value of `setting`, is empty or a secret reference.
///
/// # Errors
/// Names the setting, the value and the accepted forms.
pub fn check_reference(setting: &str, reference: &str) -> anyhow::Result<()> {
    if reference.is_empty() {
        return Ok(());
    }
    Source::parse(reference).map_err(|error| anyhow::anyhow!("{setting}: {error}"))?;
    Ok(())
}

/// Returns whether `text` is written as a secret reference (`env:`, `file:`, `vault:` or
/// `aws-sm:`) rather than a plain file path.
pub fn is_reference(text: &str) -> bool {
    ["env:", "file:", "vault:", "aws-sm:"]
        .iter()
        .any(|prefix| text.starts_with(prefix))
}

/// Returns the reference that reads `path`: `path` itself when it is already a reference,
/// otherwise `file:<path>`.
pub fn reference_for_path(path: &std::path::Path) -> String {
    let text = path.to_string_lossy();
    match is_reference(&text) {
        true => text.into_owned(),
        false => format!("file:{text}"),
    }
}

/// The source of a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Env(String),
    File(std::path::PathBuf),
    Vault { path: String, field: String },
    AwsSecretsManager(String),
}

impl Source {
    fn parse(reference: &str) -> Result<Source, SecretError> {
        let bad = || SecretError::BadReference(reference.to_owned());
        let (kind, rest) = reference.split_once(':').ok_or_else(bad)?;
        if rest.is_empty() {
            return Err(bad());
        }
        Ok(match kind {
            "env" => Source::Env(rest.to_owned()),
            "file" => Source::File(rest.into()),
            "vault" => {
                let (path, field) = rest.split_once('#').ok_or_else(bad)?;
                Source::Vault {
                    path: path.trim_matches('/').to_owned(),
                    field: field.to_owned(),
                }
            }
            "aws-sm" => Source::AwsSecretsManager(rest.to_owned()),
            _ => return Err(bad()),
        })
    }
}

struct Cached {
    value: SecretString,
    fetched: Instant,
}

/// The secrets provider with its cache.
pub struct Secrets {
    config: SecretsConfig,
    http: reqwest::Client,
    cache: Mutex<HashMap<String, Cached>>,
}

impl Secrets {
    /// Creates the provider.
    ///
    /// # Errors
    /// An HTTP client that cannot be built.
    pub fn new(config: SecretsConfig) -> anyhow::Result<Secrets> {
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy();
        // Without the CA file only plain-HTTP providers on loopback can be reached. With
        // neither an https:// Vault nor AWS configured, only env: and file: references
        // work, so the CA file is not read.
        for (setting, endpoint) in [
            ("secrets.vault_addr", &config.vault_addr),
            ("secrets.aws_endpoint", &config.aws_endpoint),
        ] {
            check_endpoint(setting, endpoint)?;
        }
        let public_aws = !config.aws_region.is_empty() && config.aws_endpoint.is_empty();
        let https_provider = config.vault_addr.starts_with("https://")
            || public_aws
            || config.aws_endpoint.starts_with("https://");
        anyhow::ensure!(
            !https_provider || config.ca_cert.is_file(),
            "secrets.ca_cert {:?} is not a file, and an https:// secrets provider is configured; \
             set secrets.ca_cert to the CA bundle that signs it, such as \
             /etc/ssl/certs/ca-certificates.crt",
            config.ca_cert.display().to_string()
        );
        if https_provider {
            let roots = crate::tls::load_root_store(&config.ca_cert)?;
            let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
            let tls = rustls::ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13])?
                .with_root_certificates(roots)
                .with_no_client_auth();
            builder = builder.use_preconfigured_tls(tls);
        }
        let http = builder.build()?;
        Ok(Secrets {
            config,
            http,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Returns the secret named by `reference` from the cache, the provider, or (while the
    /// provider fails) the last good value within `max_stale_seconds`.
    ///
    /// # Errors
    /// [`SecretError`]: a bad reference, a provider failure with nothing cached, or a
    /// value too stale to use.
    pub async fn get(&self, reference: &str) -> Result<SecretString, SecretError> {
        let source = Source::parse(reference)?;
        let ttl = Duration::from_secs(self.config.ttl_seconds);
        if let Some(value) = self.fresh(reference, ttl) {
            METRICS.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(value);
        }
        METRICS.fetches.fetch_add(1, Ordering::Relaxed);
        match self.fetch(&source).await {
            Ok(value) => {
                let cached = Cached {
                    value: value.clone(),
                    fetched: Instant::now(),
                };
                self.lock().insert(reference.to_owned(), cached);
                Ok(value)
            }
            Err(reason) => {
                METRICS.failures.fetch_add(1, Ordering::Relaxed);
                self.stale_or_refuse(reference, ttl, reason)
            }
        }
    }

    fn fresh(&self, reference: &str, ttl: Duration) -> Option<SecretString> {
        let cache = self.lock();
        let cached = cache.get(reference)?;
        (cached.fetched.elapsed() < ttl).then(|| cached.value.clone())
    }

    fn stale_or_refuse(
        &self,
        reference: &str,
        ttl: Duration,
        reason: String,
    ) -> Result<SecretString, SecretError> {
        let cache = self.lock();
        let Some(cached) = cache.get(reference) else {
            return Err(SecretError::Unavailable {
                reference: reference.to_owned(),
                reason,
            });
        };
        let past_ttl = cached.fetched.elapsed().saturating_sub(ttl);
        if past_ttl.as_secs() >= self.config.max_stale_seconds {
            METRICS.refused.fetch_add(1, Ordering::Relaxed);
            tracing::error!(reference, %reason, "secret rejected: the provider has failed for longer than max_stale_seconds");
            return Err(SecretError::Stale {
                reference: reference.to_owned(),
                seconds: past_ttl.as_secs(),
            });
        }
        METRICS.stale.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            reference,
            %reason,
            stale_seconds = past_ttl.as_secs(),
            "secrets provider failed; serving the last good value"
        );
        Ok(cached.value.clone())
    }

    async fn fetch(&self, source: &Source) -> Result<SecretString, String> {
        match source {
            Source::Env(name) => std::env::var(name)
                .map(SecretString::new)
                .map_err(|_| format!("environment variable {name} is not set")),
            Source::File(path) => std::fs::read_to_string(path)
                .map(|text| SecretString::new(text.trim().to_owned()))
                .map_err(|error| format!("cannot read {}: {error}", path.display())),
            Source::Vault { path, field } => self.vault(path, field).await,
            Source::AwsSecretsManager(id) => self.aws(id).await,
        }
    }

    async fn vault(&self, path: &str, field: &str) -> Result<SecretString, String> {
        let token = std::fs::read_to_string(&self.config.vault_token_file)
            .map_err(|error| format!("cannot read secrets.vault_token_file: {error}"))?;
        let (mount, rest) = path.split_once('/').unwrap_or((path, ""));
        let url = format!(
            "{}/v1/{mount}/data/{rest}",
            self.config.vault_addr.trim_end_matches('/')
        );
        let response = self
            .http
            .get(url)
            .header("X-Vault-Token", token.trim())
            .send()
            .await
            .map_err(|error| format!("vault unreachable: {}", error.without_url()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("vault answered {status}"));
        }
        let body: Value = response
            .json()
            .await
            .map_err(|_| "vault answer is not JSON")?;
        body["data"]["data"][field]
            .as_str()
            .map(|value| SecretString::new(value.to_owned()))
            .ok_or_else(|| format!("vault secret {path} has no string field {field}"))
    }

    async fn aws(&self, id: &str) -> Result<SecretString, String> {
        let region = &self.config.aws_region;
        if region.is_empty() {
            return Err(format!(
                "secret reference aws-sm:{id} needs secrets.aws_region, such as \"ap-southeast-2\""
            ));
        }
        let credentials = AwsCredentials::from_env();
        if credentials.access_key_id.is_empty() || credentials.secret_access_key.is_empty() {
            return Err(format!(
                "secret reference aws-sm:{id} needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
                 in the environment; the credentials of [kms.aws] are used by the KMS only"
            ));
        }
        let endpoint = (!self.config.aws_endpoint.is_empty()).then_some(&*self.config.aws_endpoint);
        let shared = sdk_config(
            region,
            endpoint,
            credentials,
            self.http.clone(),
            Duration::from_secs(5),
        );
        let client = aws_sdk_secretsmanager::Client::new(&shared);
        let response = client
            .get_secret_value()
            .secret_id(id)
            .send()
            .await
            .map_err(|error| match error {
                SdkError::ServiceError(context) => format!(
                    "secrets manager rejected the request for {id}: {}",
                    context.err().code().unwrap_or("unknown error")
                ),
                other => format!(
                    "secrets manager unreachable: {:#}",
                    anyhow::Error::new(other)
                ),
            })?;
        response
            .secret_string()
            .map(|value| SecretString::new(value.to_owned()))
            .ok_or_else(|| format!("secret {id} has no SecretString"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        // The map stays consistent even if a holder panicked.
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Checks a provider address: `https://`, or plain `http://` on a loopback address only,
/// so a secret never crosses a network in clear text.
fn check_endpoint(setting: &str, endpoint: &str) -> anyhow::Result<()> {
    if endpoint.is_empty() || endpoint.starts_with("https://") {
        return Ok(());
    }
    let url = reqwest::Url::parse(endpoint).map_err(|error| {
        anyhow::anyhow!("{setting} {endpoint:?} is not a URL ({error}); write https://host:port")
    })?;
    anyhow::ensure!(
        url.scheme() == "http" && crate::kms::is_loopback(&url),
        "{setting} {endpoint} must use https:// (plain http:// is allowed on 127.0.0.1 and \
         [::1] only)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_off_loopback_is_rejected() {
        for (vault_addr, aws_endpoint) in [
            ("http://10.20.30.40:8200", ""),
            ("", "http://10.20.30.40:4566"),
        ] {
            let config = SecretsConfig {
                vault_addr: vault_addr.to_owned(),
                aws_endpoint: aws_endpoint.to_owned(),
                ..SecretsConfig::default()
            };
            let error = Secrets::new(config).err().expect("rejected").to_string();
            assert!(error.contains("10.20.30.40"), "{error}");
            assert!(error.contains("must use https://"), "{error}");
        }
        let loopback = SecretsConfig {
            aws_region: "ap-southeast-2".to_owned(),
            aws_endpoint: "http://127.0.0.1:4566".to_owned(),
            ca_cert: std::path::PathBuf::new(),
            ..SecretsConfig::default()
        };
        assert!(Secrets::new(loopback).is_ok());
    }

    #[test]
    fn https_provider_needs_the_ca_file() {
        let config = SecretsConfig {
            aws_region: "ap-southeast-2".to_owned(),
            ca_cert: "/nonexistent/ca.pem".into(),
            ..SecretsConfig::default()
        };
        let error = Secrets::new(config).err().expect("rejected").to_string();
        assert!(error.contains("secrets.ca_cert"), "{error}");
        assert!(error.contains("/nonexistent/ca.pem"), "{error}");
    }

    #[test]
    fn references_parse() {
        assert_eq!(Source::parse("env:DB").unwrap(), Source::Env("DB".into()));
        assert_eq!(
            Source::parse("vault:kv/folio/db#password").unwrap(),
            Source::Vault {
                path: "kv/folio/db".into(),
                field: "password".into()
            }
        );
        for bad in ["db", "env:", "vault:kv/x", "ftp:x"] {
            assert!(Source::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn stale_value_is_served_for_a_bounded_time_then_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let planted = concat!("planted-", "file-secret-7731");
        std::fs::write(&path, planted).unwrap();
        let reference = format!("file:{}", path.display());
        let secrets = Secrets::new(SecretsConfig {
            ttl_seconds: 0,
            max_stale_seconds: 1,
            ..SecretsConfig::default()
        })
        .unwrap();
        assert_eq!(secrets.get(&reference).await.unwrap().expose(), planted);

        // The provider fails: the last good value is served, then refused.
        std::fs::remove_file(&path).unwrap();
        let stale = secrets.get(&reference).await.unwrap();
        assert_eq!(stale.expose(), planted);
        std::thread::sleep(Duration::from_millis(1_100));
        let error = secrets.get(&reference).await.unwrap_err();
        assert!(matches!(error, SecretError::Stale { .. }), "{error}");
        assert!(!error.to_string().contains(planted));
        assert!(!format!("{error:?}").contains(planted));

        // A rotated value takes effect without a restart.
        std::fs::write(&path, "rotated").unwrap();
        assert_eq!(secrets.get(&reference).await.unwrap().expose(), "rotated");
    }
}
