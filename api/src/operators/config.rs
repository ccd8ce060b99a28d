//! Configuration of operator sign-in (`[mfa]`) and of allow-list approvals (`[allow_list]`).

use std::path::PathBuf;

use anyhow::bail;
use serde::Deserialize;

/// Maximum step-up age, in seconds (five minutes).
pub const MAX_STEP_UP_AGE_SECONDS: u64 = 300;
/// Maximum idle time of a session, in seconds (15 minutes).
pub const MAX_SESSION_IDLE_SECONDS: u64 = 15 * 60;
/// Maximum lifetime of a session, in seconds (12 hours).
pub const MAX_SESSION_ABSOLUTE_SECONDS: u64 = 12 * 60 * 60;

/// Operator sign-in, second factors and step-up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MfaConfig {
    /// File holding the 32-byte AES-256-GCM key (64 hex digits) that encrypts TOTP
    /// secrets at rest. Empty: `<data_dir>/keys/mfa-secret.key`, created on first start.
    /// Nodes that share operators (see `[operators]`) must all read the same key.
    pub secret_key_file: PathBuf,
    /// Issuer shown by authenticator apps.
    pub issuer: String,
    /// Age of a second factor after which sensitive commands ask for it again, in
    /// seconds; at most 300.
    pub step_up_max_age_seconds: u64,
    /// Idle time after which a session ends, in seconds; at most 900.
    pub session_idle_seconds: u64,
    /// Time after which a session ends however active, in seconds; at most 43200.
    pub session_absolute_seconds: u64,
    /// Cheap Argon2 parameters for test suites. Not readable from a file or the
    /// environment, so a deployed server always hashes with the production cost.
    #[serde(skip)]
    pub test_hash_cost: bool,
}

impl Default for MfaConfig {
    fn default() -> Self {
        MfaConfig {
            secret_key_file: PathBuf::new(),
            issuer: "Folio".to_owned(),
            step_up_max_age_seconds: MAX_STEP_UP_AGE_SECONDS,
            session_idle_seconds: MAX_SESSION_IDLE_SECONDS,
            session_absolute_seconds: MAX_SESSION_ABSOLUTE_SECONDS,
            test_hash_cost: false,
        }
    }
}

impl MfaConfig {
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        let limits = [
            (
                "mfa.step_up_max_age_seconds",
                self.step_up_max_age_seconds,
                MAX_STEP_UP_AGE_SECONDS,
            ),
            (
                "mfa.session_idle_seconds",
                self.session_idle_seconds,
                MAX_SESSION_IDLE_SECONDS,
            ),
            (
                "mfa.session_absolute_seconds",
                self.session_absolute_seconds,
                MAX_SESSION_ABSOLUTE_SECONDS,
            ),
        ];
        for (key, value, max) in limits {
            if value == 0 || value > max {
                bail!("{key} is {value}; set it between 1 and {max} seconds");
            }
        }
        if self.issuer.trim().is_empty() || self.issuer.contains(':') {
            bail!(
                "mfa.issuer {:?} must be non-empty and contain no colon",
                self.issuer
            );
        }
        Ok(())
    }
}

/// Where operators, sessions and API tokens are stored (`[operators]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OperatorsConfig {
    /// PostgreSQL URL of the database that holds operators, sessions, second factors and
    /// API tokens for every node. Empty: the event store's database when `store.backend`
    /// is `postgres`, otherwise `operators.sqlite` and `auth.sqlite` in the data directory.
    pub url: String,
    /// Secret reference of the password for `url`, such as `file:/run/secrets/db-password`;
    /// read again every `secrets.ttl_seconds`. Empty: the password in `url`, if any.
    pub password_secret: String,
}

impl OperatorsConfig {
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        let url = &self.url;
        if !url.is_empty() && !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            bail!(
                "operators.url is not a postgres:// URL; set it (or FOLIO_OPERATORS__URL) to \
                 postgres://user@host:5432/database, or leave it empty"
            );
        }
        if url.is_empty() && !self.password_secret.is_empty() {
            bail!(
                "operators.password_secret is set but operators.url is empty; set \
                 store.password_secret for the event store's database, or set operators.url"
            );
        }
        crate::secrets::check_reference("operators.password_secret", &self.password_secret)
    }
}

/// Allow-list proposals and the cooling-off period of new payees.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AllowListConfig {
    /// Time a proposal waits for approval before it expires, in seconds (default 72 hours).
    pub proposal_ttl_seconds: u64,
    /// Time from approval until a new or changed payee can be paid, in seconds (default
    /// 24 hours).
    pub cooling_off_seconds: u64,
}

impl Default for AllowListConfig {
    fn default() -> Self {
        AllowListConfig {
            proposal_ttl_seconds: 72 * 60 * 60,
            cooling_off_seconds: 24 * 60 * 60,
        }
    }
}

impl AllowListConfig {
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        if self.proposal_ttl_seconds == 0 {
            bail!("allow_list.proposal_ttl_seconds is 0; set how long a proposal may wait");
        }
        // Ten years bounds the microsecond arithmetic far below overflow.
        let ten_years = 10 * 366 * 24 * 60 * 60;
        if self.proposal_ttl_seconds > ten_years || self.cooling_off_seconds > ten_years {
            bail!("allow_list periods must be under ten years ({ten_years} seconds)");
        }
        Ok(())
    }
}
