//! Bank dispatch: the bank wire protocol, the mutual-TLS HTTPS adapter, bounded retries
//! with full jitter, the circuit breaker, the dispatch loop that reports every step to a
//! recorder, and the bank simulator that serves the same protocol.
//!
//! Wiring: create one [`BankMetrics`] and share it between the [`HttpsBankAdapter`] and the
//! [`CircuitBreaker`]. Keep one breaker per bank for the life of the process, because its
//! state is what protects the bank. Call [`dispatch_payment`] per payment with a recorder
//! that appends events.
//!
//! ```no_run
//! # async fn wire(config: &api::config::BankConfig) -> anyhow::Result<()> {
//! use std::sync::Arc;
//! use api::bank::{BankMetrics, CircuitBreaker, HttpsBankAdapter, RetryPolicy};
//! use api::secrets::{Secrets, SecretsConfig};
//!
//! let metrics = Arc::new(BankMetrics::new());
//! let secrets = Arc::new(Secrets::new(SecretsConfig::default())?);
//! let adapter = HttpsBankAdapter::from_config(config, Arc::clone(&metrics), secrets).await?;
//! let breaker = CircuitBreaker::from_config(config).with_metrics(Arc::clone(&metrics));
//! let policy = RetryPolicy::from_config(config);
//! # let _ = (adapter, breaker, policy);
//! # Ok(())
//! # }
//! ```

mod adapter;
mod breaker;
mod config;
mod dispatch;
mod https;
mod identity;
mod metrics;
mod retry;
pub mod sim;

pub use adapter::{BankAdapter, BankError, BankPaymentRequest, BankReceipt};
pub use breaker::{
    Admission, BreakerClock, BreakerConfig, BreakerPermit, BreakerState, BreakerTransition,
    CircuitBreaker, MonotonicClock,
};
pub use dispatch::{dispatch_payment, DispatchOutcome, DispatchRecorder};
pub use https::{client_tls_config, BankConfigError, HttpsBankAdapter, HttpsBankConfig};
pub use metrics::BankMetrics;
pub use retry::RetryPolicy;
