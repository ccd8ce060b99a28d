//! Construction of the bank link from the `[bank]` section of Folio's configuration.

use std::sync::Arc;
use std::time::Duration;

use super::{
    BankConfigError, BankMetrics, BreakerConfig, CircuitBreaker, HttpsBankAdapter, HttpsBankConfig,
    RetryPolicy,
};
use crate::config::BankConfig;

impl HttpsBankConfig {
    /// Takes the endpoint, certificate paths, timeouts and TLS versions from `[bank]`.
    pub fn from_config(config: &BankConfig) -> Self {
        HttpsBankConfig {
            base_url: config.url.clone(),
            ca_cert: config.ca_cert.clone(),
            client_cert: config.client_cert.clone(),
            client_key: config.client_key.clone(),
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            connect_timeout: Duration::from_millis(config.connect_timeout_ms),
            allow_tls12: config.allow_tls12,
        }
    }
}

impl HttpsBankAdapter {
    /// Creates the adapter from `[bank]`, reading the client certificate and key through
    /// `secrets`; see [`HttpsBankAdapter::with_secrets`].
    ///
    /// # Errors
    /// As [`HttpsBankAdapter::with_secrets`].
    pub async fn from_config(
        config: &BankConfig,
        metrics: Arc<BankMetrics>,
        secrets: Arc<crate::secrets::Secrets>,
    ) -> Result<Self, BankConfigError> {
        HttpsBankAdapter::with_secrets(&HttpsBankConfig::from_config(config), metrics, secrets)
            .await
    }
}

impl RetryPolicy {
    /// Takes `max_attempts`, `backoff_base_ms` and `backoff_max_ms` from `[bank]`.
    pub fn from_config(config: &BankConfig) -> Self {
        RetryPolicy {
            max_attempts: config.max_attempts,
            base_delay: Duration::from_millis(config.backoff_base_ms),
            max_delay: Duration::from_millis(config.backoff_max_ms),
        }
    }
}

impl BreakerConfig {
    /// Takes `breaker_failure_threshold` and `breaker_open_ms` from `[bank]`.
    pub fn from_config(config: &BankConfig) -> Self {
        BreakerConfig {
            failure_threshold: config.breaker_failure_threshold,
            cool_down: Duration::from_millis(config.breaker_open_ms),
        }
    }
}

impl CircuitBreaker {
    /// Creates a closed breaker from `[bank]` with metrics of its own; call
    /// [`CircuitBreaker::with_metrics`] to report to the shared [`BankMetrics`].
    ///
    /// # Panics
    /// Panics if `breaker_failure_threshold` is 0.
    pub fn from_config(config: &BankConfig) -> Self {
        CircuitBreaker::new(
            BreakerConfig::from_config(config),
            Arc::new(BankMetrics::new()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_agree_with_config_defaults() {
        let config = BankConfig::default();
        assert_eq!(RetryPolicy::from_config(&config), RetryPolicy::default());
        assert_eq!(
            BreakerConfig::from_config(&config),
            BreakerConfig::default()
        );
        let https = HttpsBankConfig::from_config(&config);
        assert_eq!(
            https.request_timeout,
            HttpsBankConfig::DEFAULT_REQUEST_TIMEOUT
        );
        assert_eq!(
            https.connect_timeout,
            HttpsBankConfig::DEFAULT_CONNECT_TIMEOUT
        );
        assert!(!https.allow_tls12);
    }
}
