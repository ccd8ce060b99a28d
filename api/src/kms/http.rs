//! The HTTP client shared by the remote providers.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use rustls::crypto::ring;
use rustls::ClientConfig;

/// Builds a client for `endpoint`: TLS 1.3 with the CAs of `ca_cert` for `https://`, plain
/// HTTP only to a loopback address (tests and a local agent), no redirects, no proxy.
///
/// # Errors
/// Names the endpoint or CA file that cannot be used.
pub(crate) fn client(
    endpoint: &str,
    ca_cert: &Path,
    timeout: Duration,
) -> anyhow::Result<reqwest::Client> {
    let url = reqwest::Url::parse(endpoint).with_context(|| {
        format!("KMS endpoint {endpoint:?} is not a URL; write https://host:port")
    })?;
    let builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy();
    let builder = match url.scheme() {
        "https" => {
            let roots = crate::tls::load_root_store(ca_cert)
                .with_context(|| format!("cannot load kms.ca_cert {}", ca_cert.display()))?;
            let tls = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS13])?
                .with_root_certificates(roots)
                .with_no_client_auth();
            builder.use_preconfigured_tls(tls).https_only(true)
        }
        "http" if is_loopback(&url) => builder,
        _ => bail!(
            "KMS endpoint {endpoint} must use https:// (plain http:// is allowed on 127.0.0.1 \
             and [::1] only)"
        ),
    };
    builder.build().context("cannot build the KMS HTTP client")
}

/// Returns whether `url` names a loopback address or `localhost`.
pub(crate) fn is_loopback(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host == "localhost",
    }
}
