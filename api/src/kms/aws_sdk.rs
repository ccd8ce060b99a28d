//! Shared set-up of the official AWS SDK clients (KMS and Secrets Manager).
//!
//! The SDK signs requests with SigV4, retries and parses responses. Its requests are sent
//! through Folio's own HTTP client rather than the SDK's default one. That keeps the TLS
//! stack on rustls with `ring` and TLS 1.3 only, like every other outbound link, and
//! honours the CA file of `kms.ca_cert`. It also limits plain HTTP to loopback, where the
//! tests run moto.

use std::time::Duration;

use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use aws_smithy_async::rt::sleep::{SharedAsyncSleep, TokioSleep};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use aws_types::region::Region;
use aws_types::sdk_config::SdkConfig;

use crate::secret::SecretString;

/// Access key, secret key and optional session token for the SDK.
pub(crate) struct AwsCredentials {
    /// `AKIA...` or `ASIA...`.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: SecretString,
    /// Session token of temporary credentials, or empty.
    pub session_token: SecretString,
}

impl AwsCredentials {
    /// Reads `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`.
    pub(crate) fn from_env() -> AwsCredentials {
        let read = |name: &str| std::env::var(name).unwrap_or_default();
        AwsCredentials {
            access_key_id: read("AWS_ACCESS_KEY_ID"),
            secret_access_key: SecretString::new(read("AWS_SECRET_ACCESS_KEY")),
            session_token: SecretString::new(read("AWS_SESSION_TOKEN")),
        }
    }

    fn into_sdk(self) -> Credentials {
        let token =
            (!self.session_token.is_empty()).then(|| self.session_token.expose().to_owned());
        Credentials::new(
            self.access_key_id,
            self.secret_access_key.expose().to_owned(),
            token,
            None,
            "folio-config",
        )
    }
}

/// Builds the SDK configuration shared by the service clients.
///
/// `endpoint` overrides the regional endpoint, for moto in the tests or a VPC endpoint in
/// production. The SDK retries once after a throttle or a transient error, and the caller
/// decides what happens after that.
pub(crate) fn sdk_config(
    region: &str,
    endpoint: Option<&str>,
    credentials: AwsCredentials,
    http: reqwest::Client,
    timeout: Duration,
) -> SdkConfig {
    let mut builder = SdkConfig::builder()
        .behavior_version(
            aws_smithy_runtime_api::client::behavior_version::BehaviorVersion::latest(),
        )
        .region(Region::new(region.to_owned()))
        .credentials_provider(SharedCredentialsProvider::new(credentials.into_sdk()))
        .http_client(SharedHttpClient::new(ReqwestClient { client: http }))
        .sleep_impl(SharedAsyncSleep::new(TokioSleep::new()))
        .retry_config(RetryConfig::standard().with_max_attempts(2))
        .timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(timeout)
                .operation_timeout(timeout * 3)
                .build(),
        );
    if let Some(endpoint) = endpoint {
        builder = builder.endpoint_url(endpoint.trim_end_matches('/'));
    }
    builder.build()
}

/// The SDK's HTTP client: one `reqwest` client, already configured for TLS and timeouts.
#[derive(Debug, Clone)]
struct ReqwestClient {
    client: reqwest::Client,
}

impl HttpClient for ReqwestClient {
    fn http_connector(
        &self,
        _settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

impl HttpConnector for ReqwestClient {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let client = self.client.clone();
        HttpConnectorFuture::new(async move { send(&client, request).await })
    }
}

async fn send(
    client: &reqwest::Client,
    request: HttpRequest,
) -> Result<HttpResponse, ConnectorError> {
    let method = reqwest::Method::from_bytes(request.method().as_bytes())
        .map_err(|error| ConnectorError::other(error.into(), None))?;

    // KMS and Secrets Manager requests are small JSON documents held in memory.
    let body = request
        .body()
        .bytes()
        .ok_or_else(|| {
            ConnectorError::other("streaming request bodies are not supported".into(), None)
        })?
        .to_vec();

    let mut outgoing = client.request(method, request.uri()).body(body);
    for (name, value) in request.headers() {
        outgoing = outgoing.header(name, value);
    }
    let response = outgoing.send().await.map_err(|error| {
        let error = error.without_url();
        if error.is_timeout() {
            ConnectorError::timeout(error.into())
        } else {
            ConnectorError::io(error.into())
        }
    })?;

    let status = StatusCode::try_from(response.status().as_u16())
        .map_err(|error| ConnectorError::other(error.into(), None))?;
    let headers = response.headers().clone();
    let bytes = response
        .bytes()
        .await
        .map_err(|error| ConnectorError::io(error.without_url().into()))?;

    let mut reply = HttpResponse::new(status, SdkBody::from(bytes));
    for (name, value) in &headers {
        // The SDK reads only ASCII headers (request id, error type), so a header that is
        // not visible ASCII is left out rather than failing the call.
        if let Ok(value) = value.to_str() {
            let appended =
                (reply.headers_mut()).try_append(name.as_str().to_owned(), value.to_owned());
            if appended.is_err() {
                tracing::debug!(header = %name, "AWS response header not passed to the SDK");
            }
        }
    }
    Ok(reply)
}
