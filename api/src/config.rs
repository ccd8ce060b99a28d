//! Configuration: a TOML file overlaid with `FOLIO_` environment variables.
//!
//! An environment variable `FOLIO_SECTION__KEY` sets `key` in `[section]`;
//! a single underscore stays part of the name (`FOLIO_SERVER__LISTEN_ADDR`
//! sets `server.listen_addr`). Values are parsed as TOML scalars when they
//! parse, otherwise taken as strings.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory of the embedded store, read models and keys.
    pub data_dir: PathBuf,
    /// `development` (the default) or `production`, which refuses development shortcuts.
    pub profile: crate::kms::Profile,
    /// HTTP server settings.
    pub server: ServerConfig,
    /// Payment rules.
    pub payments: PaymentsConfig,
    /// Bank connection and dispatch settings.
    pub bank: BankConfig,
    /// Continuous chain verification inside `folio serve`.
    pub verification: VerificationConfig,
    /// Continuous control monitoring inside `folio serve`.
    pub controls: ControlsConfig,
    /// Operator sign-in, second factors and step-up.
    pub mfa: crate::operators::MfaConfig,
    /// Allow-list proposals and the cooling-off period of new payees.
    pub allow_list: crate::operators::AllowListConfig,
    /// Where operators, sessions and API tokens are stored.
    pub operators: crate::operators::OperatorsConfig,
    /// Location of the read models.
    pub read_models: crate::read_store::ReadModelsConfig,
    /// Lease that picks the one node running the dispatcher and shared projections.
    pub cluster: crate::lease::ClusterConfig,
    /// Event store settings.
    pub store: StoreConfig,
    /// Signed checkpoints and the witnesses they are published to.
    pub checkpoints: CheckpointsConfig,
    /// Dead-letter queue decisions and the pace of approved retries.
    pub dlq: DlqConfig,
    /// Anomaly rules that hold payments for review.
    pub anomalies: crate::anomalies::AnomaliesConfig,
    /// The KMS that holds the key-encryption key.
    pub kms: crate::kms::KmsConfig,
    /// Retention rules of audit records and personal fields.
    pub retention: crate::retention::RetentionConfig,
    /// The secrets provider's cache.
    pub secrets: crate::secrets::SecretsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("folio-data"),
            profile: crate::kms::Profile::default(),
            server: ServerConfig::default(),
            payments: PaymentsConfig::default(),
            bank: BankConfig::default(),
            verification: VerificationConfig::default(),
            controls: ControlsConfig::default(),
            mfa: crate::operators::MfaConfig::default(),
            allow_list: crate::operators::AllowListConfig::default(),
            operators: crate::operators::OperatorsConfig::default(),
            read_models: Default::default(),
            cluster: Default::default(),
            store: StoreConfig::default(),
            checkpoints: CheckpointsConfig::default(),
            dlq: DlqConfig::default(),
            anomalies: Default::default(),
            kms: crate::kms::KmsConfig::default(),
            retention: crate::retention::RetentionConfig::default(),
            secrets: crate::secrets::SecretsConfig::default(),
        }
    }
}

/// Dead-letter queue decisions and the pace at which approved retries reach the bank.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DlqConfig {
    /// Most payments one retry or ignore decision may name; a larger list or filter is
    /// refused with the count and this limit. At most 500.
    pub max_bulk: u32,
    /// Payments of an approved retry released to the dispatcher at each tick.
    pub release_batch_size: u32,
    /// Pause between two release batches, in milliseconds.
    pub release_interval_ms: u64,
    /// Time a proposed decision waits for its approver before it expires, in seconds.
    pub decision_ttl_seconds: u64,
}

impl Default for DlqConfig {
    fn default() -> Self {
        DlqConfig {
            max_bulk: 100,
            release_batch_size: 10,
            release_interval_ms: 1_000,
            decision_ttl_seconds: 24 * 3_600,
        }
    }
}

/// Largest `dlq.max_bulk` accepted: the size of one read-model page.
pub const DLQ_MAX_BULK_LIMIT: u32 = 500;

impl DlqConfig {
    fn validate(&self) -> anyhow::Result<()> {
        if self.max_bulk == 0 || self.max_bulk > DLQ_MAX_BULK_LIMIT {
            bail!(
                "dlq.max_bulk is {}; set it between 1 and {DLQ_MAX_BULK_LIMIT}",
                self.max_bulk
            );
        }
        if self.release_batch_size == 0 || self.release_interval_ms == 0 {
            bail!(
                "dlq.release_batch_size and dlq.release_interval_ms must be above 0; the \
                 defaults are 10 payments every 1000 ms"
            );
        }
        if self.decision_ttl_seconds < 60 {
            bail!(
                "dlq.decision_ttl_seconds is {}; set at least 60 so an approver has time to \
                 review",
                self.decision_ttl_seconds
            );
        }
        Ok(())
    }

    /// Returns the release pace of approved retries.
    pub fn release_pace(&self) -> crate::dispatcher::ReleasePace {
        crate::dispatcher::ReleasePace {
            batch_size: self.release_batch_size,
            interval: Duration::from_millis(self.release_interval_ms),
        }
    }
}

/// Backend that stores the events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// `events.sqlite` in the data directory (one node).
    Sqlite,
    /// A PostgreSQL database at `store.url`, which several nodes can share.
    Postgres,
}

/// Event store settings. `docs/operations/postgres.md` explains the PostgreSQL ones.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite` (the default) or `postgres`.
    pub backend: StoreBackend,
    /// PostgreSQL URL, such as `postgres://folio@db.internal:5432/folio?sslmode=verify-full`;
    /// only for the `postgres` backend. Also `FOLIO_STORE__URL`.
    pub url: String,
    /// Secret reference of the PostgreSQL password, such as `file:/run/secrets/db-password`.
    /// Its value replaces any password in `store.url`, also for the operators and tokens
    /// kept in that database. It is read again every `secrets.ttl_seconds`, so a rotated
    /// password takes effect without a restart. Empty means the password in `store.url`.
    pub password_secret: String,
    /// Pooled PostgreSQL connections of this node.
    pub max_connections: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Sqlite,
            url: String::new(),
            password_secret: String::new(),
            max_connections: 8,
        }
    }
}

impl StoreConfig {
    fn validate(&self) -> anyhow::Result<()> {
        match self.backend {
            StoreBackend::Sqlite if !self.url.is_empty() => bail!(
                "store.url is set but store.backend is \"sqlite\"; set store.backend = \"postgres\" \
                 or remove store.url"
            ),
            StoreBackend::Postgres if !self.url.starts_with("postgres://")
                && !self.url.starts_with("postgresql://") =>
            {
                bail!(
                    "store.backend is \"postgres\" but store.url is not a postgres:// URL; set it \
                     (or FOLIO_STORE__URL) to postgres://user@host:5432/database"
                )
            }
            StoreBackend::Sqlite if !self.password_secret.is_empty() => bail!(
                "store.password_secret is set but store.backend is \"sqlite\"; set \
                 store.backend = \"postgres\" or remove store.password_secret"
            ),
            _ if self.max_connections == 0 => {
                bail!("store.max_connections is 0; set it to at least 1")
            }
            _ => crate::secrets::check_reference("store.password_secret", &self.password_secret),
        }
    }
}

/// HTTP server settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on, such as `127.0.0.1:8080`.
    pub listen_addr: String,
    /// Maximum wait, in milliseconds, for a read model to reach a query's `min_position`.
    pub min_position_wait_ms: u64,
    /// Maximum request body size in bytes (ABA files included).
    pub max_body_bytes: usize,
    /// PEM file of the server certificate chain. When set, the listener speaks TLS 1.3
    /// only; when empty, plain HTTP is allowed on a loopback address and nowhere else.
    pub tls_cert: PathBuf,
    /// PEM file of the server's private key; set together with `tls_cert`.
    pub tls_key: PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen_addr: "127.0.0.1:8080".to_owned(),
            min_position_wait_ms: 2_000,
            max_body_bytes: 8 * 1024 * 1024,
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
        }
    }
}

impl ServerConfig {
    /// Returns true when the listener serves TLS (`tls_cert` and `tls_key` are set).
    pub fn uses_tls(&self) -> bool {
        !self.tls_cert.as_os_str().is_empty()
    }

    /// Checks that the certificate and key come as a pair, and that plain HTTP is used only
    /// on a loopback address, so a token never crosses a network in the clear.
    fn validate_tls(&self) -> anyhow::Result<()> {
        let has_cert = !self.tls_cert.as_os_str().is_empty();
        let has_key = !self.tls_key.as_os_str().is_empty();
        if has_cert != has_key {
            bail!("server.tls_cert and server.tls_key must be set together; set both PEM paths");
        }
        if !has_cert && !is_loopback_addr(&self.listen_addr) {
            bail!(
                "server.listen_addr {} is not a loopback address and server.tls_cert is empty; \
                 set server.tls_cert and server.tls_key (TLS 1.3), or listen on 127.0.0.1",
                self.listen_addr
            );
        }
        Ok(())
    }
}

/// Returns true for `127.x.x.x:port`, `[::1]:port` and `localhost:port`.
fn is_loopback_addr(listen_addr: &str) -> bool {
    match listen_addr.parse::<std::net::SocketAddr>() {
        Ok(addr) => addr.ip().is_loopback(),
        Err(_) => listen_addr.starts_with("localhost:"),
    }
}

/// Continuous chain verification settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerificationConfig {
    /// Seconds between passes over the events committed since the previous pass.
    pub interval_seconds: u64,
    /// Every this many passes, each ledger is verified again from its genesis event.
    pub full_every: u32,
    /// Refuse appends to a ledger once its chain fails verification (on by default).
    pub quarantine_on_failure: bool,
}

impl Default for VerificationConfig {
    fn default() -> Self {
        VerificationConfig {
            interval_seconds: 60,
            full_every: 60,
            quarantine_on_failure: true,
        }
    }
}

/// Continuous control monitoring settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlsConfig {
    /// Hours between recorded control runs on each ledger.
    pub interval_hours: u64,
    /// Days a signing key may stay in use before the key age control fails.
    pub max_signing_key_age_days: u64,
}

impl Default for ControlsConfig {
    fn default() -> Self {
        ControlsConfig {
            interval_hours: 24,
            max_signing_key_age_days: 365,
        }
    }
}

impl ControlsConfig {
    /// Time between recorded runs on each ledger.
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_hours.saturating_mul(3_600))
    }

    /// Limits the controls check against.
    pub fn policy(&self) -> domain::controls::ControlPolicy {
        let days = i64::try_from(self.max_signing_key_age_days).unwrap_or(i64::MAX);
        domain::controls::ControlPolicy {
            max_signing_key_age_micros: days.saturating_mul(86_400_000_000),
        }
    }
}

/// Payment rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaymentsConfig {
    /// Largest accepted amount of one payment, in minor units (cents); the default is
    /// 100,000,000 cents (one million dollars).
    pub max_amount_minor: u64,
    /// ISO 4217 codes accepted for payments.
    pub currencies: Vec<String>,
}

impl Default for PaymentsConfig {
    fn default() -> Self {
        PaymentsConfig {
            max_amount_minor: 100_000_000,
            currencies: vec!["AUD".to_owned()],
        }
    }
}

/// Bank connection and dispatch settings; `docs/operations/bank-dispatch.md` explains each.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BankConfig {
    /// Base URL of the bank API, such as `https://127.0.0.1:9443`. Empty disables dispatch.
    pub url: String,
    /// PEM file of the one CA certificate trusted for the bank (pinned).
    pub ca_cert: PathBuf,
    /// Folio's client certificate chain: a PEM file path or a secret reference
    /// (`file:`, `env:`, `vault:`, `aws-sm:`) of PEM text. Read through the secrets
    /// provider before each dispatch, so a rotated certificate is used without a restart.
    pub client_cert: PathBuf,
    /// Folio's client private key, as `client_cert`.
    pub client_key: PathBuf,
    /// Allow TLS 1.2 as well as TLS 1.3.
    pub allow_tls12: bool,
    /// Per-request timeout in milliseconds.
    pub request_timeout_ms: u64,
    /// Connect timeout in milliseconds.
    pub connect_timeout_ms: u64,
    /// Attempts per payment before it is dead-lettered.
    pub max_attempts: u32,
    /// Base backoff delay in milliseconds.
    pub backoff_base_ms: u64,
    /// Backoff delay cap in milliseconds.
    pub backoff_max_ms: u64,
    /// Consecutive failures that open the circuit breaker.
    pub breaker_failure_threshold: u32,
    /// How long the breaker stays open before one probe, in milliseconds.
    pub breaker_open_ms: u64,
    /// Payments dispatched at the same time, per ledger.
    pub max_in_flight: usize,
}

impl Default for BankConfig {
    fn default() -> Self {
        BankConfig {
            url: String::new(),
            ca_cert: PathBuf::new(),
            client_cert: PathBuf::new(),
            client_key: PathBuf::new(),
            allow_tls12: false,
            request_timeout_ms: 10_000,
            connect_timeout_ms: 3_000,
            max_attempts: 6,
            backoff_base_ms: 500,
            backoff_max_ms: 60_000,
            breaker_failure_threshold: 5,
            breaker_open_ms: 30_000,
            max_in_flight: 16,
        }
    }
}

impl BankConfig {
    fn validate(&self) -> anyhow::Result<()> {
        if !self.url.is_empty() {
            let files = [
                ("bank.ca_cert", &self.ca_cert),
                ("bank.client_cert", &self.client_cert),
                ("bank.client_key", &self.client_key),
            ];
            for (key, path) in files {
                if path.as_os_str().is_empty() {
                    bail!("bank.url is set but {key} is empty; set it to a PEM file path");
                }
            }
            for (key, path) in &files[1..] {
                let text = path.to_string_lossy();
                if crate::secrets::is_reference(&text) {
                    crate::secrets::check_reference(key, &text)?;
                }
            }
        }
        if self.request_timeout_ms == 0 || self.connect_timeout_ms == 0 {
            bail!("bank.request_timeout_ms and bank.connect_timeout_ms must be above 0 ms");
        }
        if self.backoff_base_ms > self.backoff_max_ms {
            bail!(
                "bank.backoff_base_ms ({}) is above bank.backoff_max_ms ({}); lower the base \
                 or raise the cap",
                self.backoff_base_ms,
                self.backoff_max_ms
            );
        }
        Ok(())
    }

    /// Per-request timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// Signed checkpoints: when the sequencer records them and where they are published.
/// `docs/ledger-format.md` describes the checkpoint and `docs/evidence.md` the witnesses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointsConfig {
    /// Record a checkpoint once this many events follow the last one; 0 turns the rule off.
    pub every_events: u64,
    /// Record a checkpoint with the first append this many seconds after the last one; 0
    /// turns the rule off. With both rules off no checkpoint is recorded.
    pub every_seconds: u64,
    /// File that every new checkpoint is appended to as one JSON line; empty for none.
    pub witness_file: PathBuf,
    /// URL that every new checkpoint is POSTed to as JSON; empty for none.
    pub witness_url: String,
    /// Attempts per checkpoint and witness before the publisher logs it and moves on.
    pub publish_attempts: u32,
    /// Seconds between two looks for new checkpoints to publish.
    pub publish_interval_seconds: u64,
}

impl Default for CheckpointsConfig {
    fn default() -> Self {
        CheckpointsConfig {
            every_events: 0,
            every_seconds: 0,
            witness_file: PathBuf::new(),
            witness_url: String::new(),
            publish_attempts: 5,
            publish_interval_seconds: 1,
        }
    }
}

impl CheckpointsConfig {
    /// Returns the store's checkpoint policy, or `None` when both rules are off.
    pub fn policy(&self) -> Option<eventstore_adapter::CheckpointPolicy> {
        (self.every_events > 0 || self.every_seconds > 0).then_some(
            eventstore_adapter::CheckpointPolicy {
                every_events: self.every_events,
                every_seconds: self.every_seconds,
            },
        )
    }

    /// Returns whether any witness is configured.
    pub fn has_witness(&self) -> bool {
        !self.witness_file.as_os_str().is_empty() || !self.witness_url.is_empty()
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.has_witness() && self.policy().is_none() {
            bail!(
                "a checkpoint witness is configured but no checkpoint is recorded; set \
                 checkpoints.every_events or checkpoints.every_seconds above 0"
            );
        }
        let url = &self.witness_url;
        let is_http = url.starts_with("http://") || url.starts_with("https://");
        if !url.is_empty() && !is_http {
            bail!("checkpoints.witness_url {url:?} is not an http:// or https:// URL");
        }
        if self.publish_attempts == 0 || self.publish_interval_seconds == 0 {
            bail!(
                "checkpoints.publish_attempts and checkpoints.publish_interval_seconds must be \
                 at least 1"
            );
        }
        Ok(())
    }
}

/// Parses the text of config file `path`. The error names the line, column and problem
/// but leaves out the excerpt of the line the TOML parser would print, because the line
/// may hold a secret such as `kms.aws.secret_access_key`.
fn parse_toml(text: &str, path: &Path) -> anyhow::Result<toml::Table> {
    text.parse::<toml::Table>().map_err(|error| {
        let (line, column) = match error.span() {
            Some(span) => {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |at| at + 1) + 1;
                (line, column)
            }
            None => (0, 0),
        };
        anyhow::anyhow!(
            "invalid TOML in config file {} at line {line}, column {column}: {}",
            path.display(),
            error.message().trim_end()
        )
    })
}

impl Config {
    /// Loads `path` (if given) and overlays `FOLIO_` variables from `env`.
    ///
    /// # Errors
    /// Fails on an unreadable file, invalid TOML, an unknown key or a value of the wrong type,
    /// naming the file or variable.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Config> {
        let mut root = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                parse_toml(&text, path)?
            }
            None => toml::Table::new(),
        };
        for (name, value) in env {
            overlay_env(&mut root, &name, &value)?;
        }
        let config: Config = toml::Value::Table(root)
            .try_into()
            .context("invalid configuration (file plus FOLIO_ variables)")?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.bank.max_attempts == 0 {
            bail!("bank.max_attempts is 0; set it to at least 1");
        }
        if self.payments.max_amount_minor == 0 {
            bail!("payments.max_amount_minor is 0; set the largest payment in cents");
        }
        for code in &self.payments.currencies {
            domain::payments::Currency::parse(code).map_err(|e| {
                anyhow::anyhow!("payments.currencies: {e}; use ISO 4217 codes such as \"AUD\"")
            })?;
        }
        if self.server.max_body_bytes == 0 {
            bail!("server.max_body_bytes is 0; set the largest request body in bytes");
        }
        self.server.validate_tls()?;
        if self.controls.interval_hours == 0 || self.controls.max_signing_key_age_days == 0 {
            bail!(
                "controls.interval_hours and controls.max_signing_key_age_days must be above 0; \
                 the defaults are 24 and 365"
            );
        }
        if self.verification.interval_seconds == 0 || self.verification.full_every == 0 {
            bail!(
                "verification.interval_seconds and verification.full_every must be above 0; \
                 the defaults are 60 and 60"
            );
        }
        self.bank.validate()?;
        self.mfa.validate()?;
        self.allow_list.validate()?;
        self.operators.validate()?;
        self.store.validate()?;
        self.checkpoints.validate()?;
        if self.bank.max_in_flight == 0 {
            bail!("bank.max_in_flight is 0; set it to at least 1");
        }
        self.read_models.validate()?;
        self.cluster.validate()?;
        self.dlq.validate()?;
        self.anomalies.validate()?;
        self.kms.validate(self.profile)?;
        self.retention.validate()?;
        Ok(())
    }
}

/// `FOLIO_` variables that are not configuration keys: read by the process itself, by
/// client commands (`import-aba`) or by the test suite.
const NON_CONFIG_VARS: &[&str] = &[
    "FOLIO_CONFIG",
    "FOLIO_LOG",
    "FOLIO_LOG_FORMAT",
    "FOLIO_TOKEN",
    "FOLIO_SERVER_URL",
    "FOLIO_PYTHON",
    "FOLIO_REGENERATE_GOLDEN",
    "FOLIO_TEST_POSTGRES_URL",
];

fn overlay_env(root: &mut toml::Table, name: &str, value: &str) -> anyhow::Result<()> {
    let Some(rest) = name.strip_prefix("FOLIO_") else {
        return Ok(());
    };
    if NON_CONFIG_VARS.contains(&name) || rest.is_empty() {
        return Ok(());
    }
    let path: Vec<String> = rest
        .split("__")
        .map(|part| part.to_ascii_lowercase())
        .collect();
    let parsed = parse_scalar(value);
    let (last, parents) = path.split_last().context("empty variable name")?;
    let mut table = root;
    for part in parents {
        let entry = table
            .entry(part.clone())
            .or_insert_with(|| toml::Table::new().into());
        table = entry
            .as_table_mut()
            .with_context(|| format!("{name}: {part} is not a section"))?;
    }
    table.insert(last.clone(), parsed);
    Ok(())
}

fn parse_scalar(value: &str) -> toml::Value {
    let wrapped = format!("v = {value}");
    match wrapped.parse::<toml::Table>() {
        Ok(mut table) => table.remove("v").unwrap_or_else(|| value.into()),
        Err(_) => toml::Value::String(value.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn plaintext_listener_off_loopback_is_rejected() {
        let error = Config::load(None, env(&[("FOLIO_SERVER__LISTEN_ADDR", "0.0.0.0:8080")]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("0.0.0.0:8080"), "{error}");
        assert!(error.contains("server.tls_cert"), "{error}");
    }

    #[test]
    fn toml_error_leaves_out_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("folio.toml");
        let secret = "PLANTEDsecretVALUE42";
        std::fs::write(&path, format!("[kms.aws]\nsecret_access_key = {secret}\n")).unwrap();
        let error = format!("{:#}", Config::load(Some(&path), env(&[])).unwrap_err());
        assert!(error.contains("line 2, column 21"), "{error}");
        assert!(!error.contains(secret), "{error}");
    }

    #[test]
    fn plaintext_listener_on_loopback_is_accepted() {
        for addr in ["127.0.0.1:8080", "[::1]:8080", "localhost:8080"] {
            let config = Config::load(None, env(&[("FOLIO_SERVER__LISTEN_ADDR", addr)]));
            assert!(config.is_ok(), "{addr}: {config:?}");
        }
    }

    #[test]
    fn tls_cert_without_key_is_rejected() {
        let error = Config::load(None, env(&[("FOLIO_SERVER__TLS_CERT", "/etc/folio/a.crt")]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("server.tls_key"), "{error}");
    }

    #[test]
    fn env_overrides_nested_keys() {
        let config = Config::load(
            None,
            env(&[
                ("FOLIO_SERVER__LISTEN_ADDR", "0.0.0.0:9000"),
                ("FOLIO_SERVER__TLS_CERT", "/etc/folio/tls/server.crt"),
                ("FOLIO_SERVER__TLS_KEY", "/etc/folio/tls/server.key"),
                ("FOLIO_BANK__MAX_ATTEMPTS", "3"),
                ("FOLIO_DATA_DIR", "/var/lib/folio"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(config.server.listen_addr, "0.0.0.0:9000");
        assert_eq!(config.bank.max_attempts, 3);
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/folio"));
    }

    #[test]
    fn client_and_test_variables_are_not_config() {
        let vars = env(&[
            ("FOLIO_TOKEN", "folio_x_y"),
            ("FOLIO_PYTHON", "/usr/bin/python3"),
        ]);
        assert!(Config::load(None, vars).is_ok());
    }

    #[test]
    fn unknown_key_is_rejected() {
        let error = Config::load(None, env(&[("FOLIO_BANK__MAX_ATEMPTS", "3")])).unwrap_err();
        assert!(format!("{error:#}").contains("max_atempts"), "{error:#}");
    }

    #[test]
    fn bank_url_without_certificates_is_rejected() {
        let vars = env(&[("FOLIO_BANK__URL", "https://localhost:9443")]);
        let error = Config::load(None, vars).unwrap_err();
        assert!(
            error.to_string().contains("bank.ca_cert is empty"),
            "{error}"
        );
    }

    #[test]
    fn backoff_base_above_cap_is_rejected() {
        let vars = env(&[
            ("FOLIO_BANK__BACKOFF_BASE_MS", "9000"),
            ("FOLIO_BANK__BACKOFF_MAX_MS", "10"),
        ]);
        let error = Config::load(None, vars).unwrap_err();
        assert!(
            error.to_string().contains("bank.backoff_base_ms (9000)"),
            "{error}"
        );
    }

    #[test]
    fn cluster_and_read_models_from_env() {
        let vars = env(&[
            ("FOLIO_READ_MODELS__BACKEND", "postgres"),
            ("FOLIO_READ_MODELS__URL", "postgres://folio@db:5432/read"),
            ("FOLIO_CLUSTER__LEASE_URL", "postgres://folio@db:5432/lease"),
            ("FOLIO_CLUSTER__LEASE_RETRY_MS", "250"),
        ]);
        let config = Config::load(None, vars).unwrap();
        assert!(config.read_models.is_shared());
        assert_eq!(config.read_models.url, "postgres://folio@db:5432/read");
        assert_eq!(config.cluster.lease_url, "postgres://folio@db:5432/lease");
        assert_eq!(config.cluster.retry_interval(), Duration::from_millis(250));
    }

    #[test]
    fn unknown_read_models_backend_is_rejected() {
        let vars = env(&[("FOLIO_READ_MODELS__BACKEND", "mysql")]);
        let error = Config::load(None, vars).unwrap_err();
        assert!(format!("{error:#}").contains("mysql"), "{error:#}");
    }

    #[test]
    fn store_backend_and_url_come_from_the_environment() {
        let url = "postgres://folio@127.0.0.1:5432/folio?sslmode=require";
        let vars = env(&[
            ("FOLIO_STORE__BACKEND", "postgres"),
            ("FOLIO_STORE__URL", url),
            (
                "FOLIO_TEST_POSTGRES_URL",
                "postgres://postgres@127.0.0.1/test",
            ),
        ]);
        let config = Config::load(None, vars).unwrap();
        assert_eq!(config.store.backend, StoreBackend::Postgres);
        assert_eq!(config.store.url, url);
        assert_eq!(Config::default().store.backend, StoreBackend::Sqlite);
    }

    #[test]
    fn store_url_must_match_the_backend() {
        let vars = env(&[("FOLIO_STORE__URL", "postgres://folio@127.0.0.1/folio")]);
        let error = Config::load(None, vars).unwrap_err();
        assert!(error.to_string().contains("store.backend"), "{error}");
        let vars = env(&[("FOLIO_STORE__BACKEND", "postgres")]);
        let error = Config::load(None, vars).unwrap_err();
        assert!(error.to_string().contains("FOLIO_STORE__URL"), "{error}");
        let vars = env(&[("FOLIO_STORE__BACKEND", "mysql")]);
        let error = Config::load(None, vars).unwrap_err();
        assert!(format!("{error:#}").contains("mysql"), "{error:#}");
    }

    #[test]
    fn zero_attempts_is_rejected() {
        let error = Config::load(None, env(&[("FOLIO_BANK__MAX_ATTEMPTS", "0")])).unwrap_err();
        assert!(error.to_string().contains("bank.max_attempts"));
    }
}
