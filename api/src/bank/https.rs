//! The bank adapter over HTTPS with mutual TLS, using reqwest on a rustls configuration
//! built here. Only the pinned CA is trusted, the client presents its certificate and host
//! names are verified. TLS 1.3 is the only version unless TLS 1.2 is opted into.

use std::error::Error as StdError;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rustls::crypto::ring;
use rustls::version::{TLS12, TLS13};
use rustls::{ClientConfig, SupportedProtocolVersion};
use serde::Deserialize;

use super::identity::ClientIdentity;
use super::{BankAdapter, BankError, BankMetrics, BankPaymentRequest, BankReceipt};
use crate::secrets::{SecretError, Secrets};
use crate::tls::{self, PemError};

/// Largest response body read from the bank; a receipt is a few hundred bytes.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Maximum length of a kept error detail, in characters, so events and logs stay bounded.
const MAX_DETAIL_CHARS: usize = 200;

/// Maximum idempotency key length, in bytes.
const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;

/// Endpoint, certificates and timeouts of the bank link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsBankConfig {
    /// Base URL of the bank API, `https://` only; `v1/payments` is appended.
    pub base_url: String,
    /// PEM file with the CA certificate(s) to pin; no other root is trusted.
    pub ca_cert: PathBuf,
    /// PEM file with the client certificate chain presented for mutual TLS.
    pub client_cert: PathBuf,
    /// PEM file with the client private key.
    pub client_key: PathBuf,
    /// Limit on one whole call, connect and response included.
    pub request_timeout: Duration,
    /// Limit on the TCP connect.
    pub connect_timeout: Duration,
    /// Also offer TLS 1.2; off by default because ATO services require TLS 1.3.
    pub allow_tls12: bool,
}

impl HttpsBankConfig {
    /// Default limit on one whole call.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default limit on the TCP connect.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

    /// Creates a configuration with default timeouts and TLS 1.3 only.
    pub fn new(
        base_url: impl Into<String>,
        ca_cert: impl Into<PathBuf>,
        client_cert: impl Into<PathBuf>,
        client_key: impl Into<PathBuf>,
    ) -> Self {
        HttpsBankConfig {
            base_url: base_url.into(),
            ca_cert: ca_cert.into(),
            client_cert: client_cert.into(),
            client_key: client_key.into(),
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            allow_tls12: false,
        }
    }
}

/// The bank link could not be configured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BankConfigError {
    /// A certificate or key file could not be loaded.
    #[error(transparent)]
    Pem(#[from] PemError),
    /// The base URL is not an absolute `https://` URL.
    #[error("invalid bank base_url {url:?}: {reason}")]
    InvalidUrl {
        /// URL as configured.
        url: String,
        /// Reason the URL is invalid.
        reason: String,
    },
    /// rustls rejected the configuration, such as a key that does not match the certificate.
    #[error("invalid tls configuration for the bank link: {0}")]
    Tls(#[from] rustls::Error),
    /// The client certificate or key could not be read through the secrets provider.
    #[error("cannot read the bank client certificate or key: {0}")]
    Secret(String),
    /// reqwest could not build the client.
    #[error("cannot build the bank http client: {0}")]
    Client(#[source] reqwest::Error),
}

impl From<SecretError> for BankConfigError {
    fn from(error: SecretError) -> Self {
        BankConfigError::Secret(error.to_string())
    }
}

/// Builds the rustls client configuration of the bank link.
///
/// The ring provider, a root store holding only `config.ca_cert`, the default webpki
/// server verifier (so host names are checked), the client certificate for mutual TLS,
/// and TLS 1.3 only unless `config.allow_tls12` is set.
///
/// # Errors
/// Returns [`BankConfigError`] if a PEM file cannot be loaded or rustls rejects the
/// certificate and key.
pub fn client_tls_config(config: &HttpsBankConfig) -> Result<ClientConfig, BankConfigError> {
    let roots = tls::load_root_store(&config.ca_cert)?;
    let certs = tls::load_certs(&config.client_cert)?;
    let key = tls::load_private_key(&config.client_key)?;
    tls_config_with_identity(config, roots, certs, key)
}

/// Builds the configuration of [`client_tls_config`] on roots, a chain and a key already
/// loaded.
pub(super) fn tls_config_with_identity(
    config: &HttpsBankConfig,
    roots: rustls::RootCertStore,
    certs: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> Result<ClientConfig, BankConfigError> {
    let versions: &[&'static SupportedProtocolVersion] = if config.allow_tls12 {
        &[&TLS13, &TLS12]
    } else {
        &[&TLS13]
    };
    let tls = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_protocol_versions(versions)?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)?;
    Ok(tls)
}

/// Builds the reqwest client of the bank link on a rustls configuration.
pub(super) fn build_client(
    config: &HttpsBankConfig,
    tls: ClientConfig,
) -> Result<reqwest::Client, BankConfigError> {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .https_only(true)
        .timeout(config.request_timeout)
        .connect_timeout(config.connect_timeout)
        // A payment POST must never be replayed to another location.
        .redirect(reqwest::redirect::Policy::none())
        // The link is end-to-end mutual TLS to a pinned CA; an environment proxy would
        // only add a hop that cannot see inside it.
        .no_proxy()
        .build()
        .map_err(BankConfigError::Client)
}

/// A [`BankAdapter`] that calls the bank API over HTTPS with mutual TLS.
pub struct HttpsBankAdapter {
    client: reqwest::Client,
    /// The certificate and key read through the secrets provider, when built with
    /// [`HttpsBankAdapter::with_secrets`]; `client` is then unused.
    identity: Option<ClientIdentity>,
    config: HttpsBankConfig,
    payments_url: reqwest::Url,
    metrics: Arc<BankMetrics>,
}

impl std::fmt::Debug for HttpsBankAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsBankAdapter")
            .field("payments_url", &self.payments_url.as_str())
            .field("reloads_identity", &self.identity.is_some())
            .finish_non_exhaustive()
    }
}

impl HttpsBankAdapter {
    /// Creates the adapter, loading certificates and building the TLS configuration now so
    /// a bad file fails at start-up instead of at the first payment. The files are read
    /// once; [`HttpsBankAdapter::with_secrets`] reloads them.
    ///
    /// # Errors
    /// Returns [`BankConfigError`] for a bad URL, certificate, key or TLS setting.
    pub fn new(
        config: &HttpsBankConfig,
        metrics: Arc<BankMetrics>,
    ) -> Result<Self, BankConfigError> {
        let payments_url = payments_url(&config.base_url)?;
        let client = build_client(config, client_tls_config(config)?)?;
        Ok(HttpsBankAdapter {
            client,
            identity: None,
            config: config.clone(),
            payments_url,
            metrics,
        })
    }

    /// Creates the adapter with the client certificate and key read through `secrets`:
    /// `config.client_cert` and `config.client_key` are file paths or secret references.
    /// Both are read again before each call (through the provider's cache), so a rotated
    /// pair is used without a restart.
    ///
    /// # Errors
    /// As [`HttpsBankAdapter::new`], and a secret that cannot be read.
    pub async fn with_secrets(
        config: &HttpsBankConfig,
        metrics: Arc<BankMetrics>,
        secrets: Arc<Secrets>,
    ) -> Result<Self, BankConfigError> {
        let payments_url = payments_url(&config.base_url)?;
        let identity = ClientIdentity::load(config, secrets).await?;
        let client = identity.client(config).await.map_err(|error| {
            // The pair was read a moment ago, so only a provider failing right now ends here.
            BankConfigError::Secret(error.to_string())
        })?;
        Ok(HttpsBankAdapter {
            client,
            identity: Some(identity),
            config: config.clone(),
            payments_url,
            metrics,
        })
    }

    /// Returns the URL payments are posted to.
    pub fn payments_url(&self) -> &str {
        self.payments_url.as_str()
    }

    async fn send(&self, request: &BankPaymentRequest) -> Result<BankReceipt, BankError> {
        if let domain::events::PayeeAccount::Unavailable { why, .. } = &request.account {
            return Err(BankError::Unsendable {
                detail: format!(
                    "the payee's account is {why}; reject the payment or pay the payee again \
                     once it is back on the allow-list"
                ),
            });
        }
        let started = Instant::now();
        let client = match &self.identity {
            Some(identity) => identity.client(&self.config).await?,
            None => self.client.clone(),
        };
        let mut response = client
            .post(self.payments_url.clone())
            .header("Idempotency-Key", &request.idempotency_key)
            .json(request)
            .send()
            .await
            .map_err(|error| classify(&error, started))?;

        let status = response.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| classify(&e, started))? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                let detail = format!("response body exceeds {MAX_RESPONSE_BYTES} bytes");
                return Err(BankError::InvalidResponse { detail });
            }
            body.extend_from_slice(&chunk);
        }
        interpret(status, body)
    }
}

#[async_trait]
impl BankAdapter for HttpsBankAdapter {
    /// Posts the payment and classifies the response, logging one line with the latency and
    /// outcome inside the caller's span.
    ///
    /// # Panics
    /// Panics if the idempotency key is empty, longer than 255 bytes or not visible ASCII:
    /// keys are derived from ledger and payment ids, so such a key is a bug upstream.
    async fn submit(&self, request: &BankPaymentRequest) -> Result<BankReceipt, BankError> {
        let key = &request.idempotency_key;
        assert!(
            !key.is_empty()
                && key.len() <= MAX_IDEMPOTENCY_KEY_BYTES
                && key.bytes().all(|byte| byte.is_ascii_graphic()),
            "bank idempotency key must be 1 to 255 visible ASCII characters"
        );

        let started = Instant::now();
        let result = self.send(request).await;
        let latency = started.elapsed();

        self.metrics.record_call(result.as_ref().err(), latency);
        let latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        match &result {
            Ok(receipt) => {
                tracing::info!(
                    latency_ms,
                    outcome = "ok",
                    status = receipt.status,
                    "bank call"
                );
            }
            Err(error) => {
                tracing::warn!(latency_ms, outcome = error.kind(), %error, "bank call");
            }
        }
        result
    }
}

/// Receipt body of a 200 or 201 response.
#[derive(Deserialize)]
struct AcceptedBody {
    bank_reference: String,
    status: String,
}

/// Problem body (RFC 9457) of an error response. Only the title is kept, because the bank's
/// `detail` may echo request fields such as the account number.
#[derive(Deserialize)]
struct ProblemBody {
    title: Option<String>,
}

/// Maps a status and body to a receipt or a failure class.
fn interpret(status: u16, raw_body: Vec<u8>) -> Result<BankReceipt, BankError> {
    match status {
        200 | 201 => parse_receipt(status, raw_body),
        400..=499 => Err(BankError::Http4xx {
            status,
            detail: problem_title(&raw_body),
        }),
        500..=599 => Err(BankError::Http5xx {
            status,
            detail: problem_title(&raw_body),
        }),
        _ => Err(BankError::InvalidResponse {
            detail: format!("unexpected http status {status}"),
        }),
    }
}

fn parse_receipt(status: u16, raw_body: Vec<u8>) -> Result<BankReceipt, BankError> {
    let invalid = |detail: String| BankError::InvalidResponse { detail };
    let body: AcceptedBody = serde_json::from_slice(&raw_body)
        .map_err(|error| invalid(format!("http {status} body is not a receipt: {error}")))?;
    if body.status != "accepted" {
        return Err(invalid(format!(
            "receipt status is {:?}, expected accepted",
            truncate(&body.status)
        )));
    }
    let reference = &body.bank_reference;
    let printable = reference.chars().all(|c| c.is_ascii_graphic());
    if reference.is_empty() || reference.len() > 128 || !printable {
        return Err(invalid(
            "bank_reference must be 1 to 128 visible ASCII characters".into(),
        ));
    }
    Ok(BankReceipt {
        bank_reference: body.bank_reference,
        status,
        raw_body,
    })
}

fn problem_title(raw_body: &[u8]) -> String {
    serde_json::from_slice::<ProblemBody>(raw_body)
        .ok()
        .and_then(|problem| problem.title)
        .map_or_else(
            || "no problem title in body".to_owned(),
            |title| truncate(&title),
        )
}

/// Classifies a reqwest failure. Transport failures that are neither a timeout nor TLS
/// (refused, reset, closed before a response) all count as `connect`.
fn classify(error: &reqwest::Error, started: Instant) -> BankError {
    if error.is_timeout() {
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        return BankError::Timeout { elapsed_ms };
    }
    if let Some(tls_error) = find_rustls_error(error) {
        return BankError::Tls {
            detail: truncate(&tls_error.to_string()),
        };
    }
    BankError::Connect {
        detail: truncate(&error_chain(error)),
    }
}

/// Finds a rustls error in the source chain. tokio-rustls reports handshake failures as an
/// `io::Error` wrapping the rustls error, sometimes inside another `io::Error`, and
/// `io::Error::source` skips the wrapped error, so the walk steps into `get_ref` instead.
fn find_rustls_error<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(found) = error.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        let wrapped = error
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref);
        current = match wrapped {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => error.source(),
        };
    }
    None
}

fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

fn truncate(text: &str) -> String {
    text.chars().take(MAX_DETAIL_CHARS).collect()
}

fn payments_url(base_url: &str) -> Result<reqwest::Url, BankConfigError> {
    let invalid = |reason: &str| BankConfigError::InvalidUrl {
        url: base_url.to_owned(),
        reason: reason.to_owned(),
    };
    let mut base = reqwest::Url::parse(base_url).map_err(|error| invalid(&error.to_string()))?;
    if base.scheme() != "https" {
        return Err(invalid("the bank link requires https"));
    }
    if base.query().is_some() || base.fragment().is_some() {
        return Err(invalid("remove the query and fragment"));
    }
    // Url::join replaces the last segment unless the path ends with a slash.
    if !base.path().ends_with('/') {
        base.set_path(&format!("{}/", base.path()));
    }
    base.join("v1/payments")
        .map_err(|error| invalid(&error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payments_url_joins_path() {
        let url = |base: &str| payments_url(base).map(|url| url.to_string());
        assert_eq!(
            url("https://bank.test").unwrap(),
            "https://bank.test/v1/payments"
        );
        assert_eq!(
            url("https://bank.test:8443/api").unwrap(),
            "https://bank.test:8443/api/v1/payments"
        );
        assert_eq!(
            url("https://bank.test/api/").unwrap(),
            "https://bank.test/api/v1/payments"
        );
        assert!(url("http://bank.test").is_err());
        assert!(url("bank.test").is_err());
        assert!(url("https://bank.test/?x=1").is_err());
    }

    #[test]
    fn interpret_receipts() {
        let body = br#"{"bank_reference":"SIM-1","status":"accepted"}"#.to_vec();
        let receipt = interpret(201, body.clone()).unwrap();
        assert_eq!(receipt.bank_reference, "SIM-1");
        assert_eq!(receipt.status, 201);
        assert_eq!(receipt.raw_body, body);
        assert_eq!(interpret(200, body).unwrap().status, 200);
    }

    #[test]
    fn interpret_rejects_bad_receipts() {
        let cases: [&[u8]; 4] = [
            b"not json",
            br#"{"bank_reference":"SIM-1","status":"pending"}"#,
            br#"{"bank_reference":"","status":"accepted"}"#,
            br#"{"bank_reference":"has space","status":"accepted"}"#,
        ];
        for body in cases {
            let error = interpret(201, body.to_vec()).unwrap_err();
            assert_eq!(
                error.kind(),
                "invalid_response",
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(
            interpret(302, Vec::new()).unwrap_err().kind(),
            "invalid_response"
        );
        assert_eq!(
            interpret(204, Vec::new()).unwrap_err().kind(),
            "invalid_response"
        );
    }

    #[test]
    fn interpret_error_statuses() {
        let problem = br#"{"title":"invalid bsb","detail":"bsb 123456 is unknown"}"#.to_vec();
        let error = interpret(400, problem).unwrap_err();
        assert_eq!(
            error,
            BankError::Http4xx {
                status: 400,
                detail: "invalid bsb".into()
            }
        );
        assert!(
            !error.to_string().contains("123456"),
            "problem detail must not be kept"
        );

        let error = interpret(503, b"<html>down</html>".to_vec()).unwrap_err();
        assert_eq!(error.kind(), "http_5xx");
        assert_eq!(
            error.to_string(),
            "bank returned http 503: no problem title in body"
        );
    }

    #[test]
    fn missing_certificate_names_file() {
        let config = HttpsBankConfig::new(
            "https://127.0.0.1:1",
            "/nonexistent/ca.pem",
            "/nonexistent/client.pem",
            "/nonexistent/client.key",
        );
        let error = HttpsBankAdapter::new(&config, Arc::new(BankMetrics::new())).unwrap_err();
        assert!(error.to_string().contains("/nonexistent/ca.pem"), "{error}");
    }
}
