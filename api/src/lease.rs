//! Leases: which node runs the background workers (bank dispatcher, shared projections).
//!
//! Any node accepts commands, but the workers that act on the whole ledger run on one node
//! at a time. A [`Lease`] grants that right. [`PgLease`] takes a session-level PostgreSQL
//! advisory lock on a dedicated connection. The lock lives exactly as long as the session,
//! so a node that dies or loses its connection gives the lease up at once, and a standby
//! that retries every second or so takes over. [`LocalLease`] always grants, for the
//! embedded single-process setup where `folio.lock` already keeps a second process out.
//!
//! A lease is not a fence: a holder that has lost its session notices only at its next
//! check, so for up to one check interval two nodes may run workers. The dispatcher is safe
//! under that overlap because attempts are appended with the payment stream's exact
//! expected version and the bank deduplicates by the payment's idempotency key.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};

/// Failures of a lease operation.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The lease URL does not parse.
    #[error("invalid cluster.lease_url: {0}; expected postgres://user@host:port/database")]
    InvalidUrl(#[source] sqlx::Error),
    /// The database query failed.
    #[error("lease database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The database did not respond within the timeout.
    #[error("lease database timed out after {0:?}")]
    TimedOut(Duration),
    /// The session still exists but no longer holds the lock.
    #[error("advisory lock {key} is no longer held by this session")]
    NotHeld {
        /// Advisory lock key.
        key: i64,
    },
}

/// A right to run the workers that only one node may run.
#[async_trait]
pub trait Lease: Send + Sync {
    /// Tries once to acquire the lease; `None` means another holder has it.
    ///
    /// # Errors
    /// [`LeaseError`] when the lease store cannot be reached.
    async fn try_acquire(&self) -> Result<Option<Box<dyn HeldLease>>, LeaseError>;

    /// Human-readable description for logs, without credentials.
    fn describe(&self) -> String;
}

/// A lease this node holds.
#[async_trait]
pub trait HeldLease: Send {
    /// Confirms that the lease is still held.
    ///
    /// # Errors
    /// Any error means the lease may be lost, and the holder must stop its workers.
    async fn confirm(&mut self) -> Result<(), LeaseError>;

    /// Gives the lease up so a standby can take it without waiting.
    async fn release(self: Box<Self>);
}

/// Cluster settings: where the lease lives and how fast it moves between nodes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// PostgreSQL URL of the lease database. Empty means a single node with a local lease.
    pub lease_url: String,
    /// Name of the lease; nodes of one deployment share it, other deployments on the same
    /// database pick another.
    pub lease_name: String,
    /// Pause between acquisition attempts of a standby node, in milliseconds.
    pub lease_retry_ms: u64,
    /// Pause between checks that the holder still has its lease, in milliseconds.
    pub lease_check_ms: u64,
    /// Idle time after which PostgreSQL ends a silent holder's session and frees the lock,
    /// in milliseconds; it bounds takeover when the holder hangs or is cut off.
    pub lease_session_timeout_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            lease_url: String::new(),
            lease_name: "folio".to_owned(),
            lease_retry_ms: 1_000,
            lease_check_ms: 1_000,
            lease_session_timeout_ms: 5_000,
        }
    }
}

impl ClusterConfig {
    /// Checks the timings against each other.
    ///
    /// # Errors
    /// Names the key to change when a value is zero or the session timeout is not above
    /// the check interval (the holder's own checks would then end its session).
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.lease_retry_ms == 0 || self.lease_check_ms == 0 {
            anyhow::bail!("cluster.lease_retry_ms and cluster.lease_check_ms must be above 0 ms");
        }
        if self.lease_session_timeout_ms < 2 * self.lease_check_ms {
            anyhow::bail!(
                "cluster.lease_session_timeout_ms ({}) must be at least twice \
                 cluster.lease_check_ms ({}); raise the timeout or check more often",
                self.lease_session_timeout_ms,
                self.lease_check_ms
            );
        }
        if self.lease_name.is_empty() {
            anyhow::bail!("cluster.lease_name is empty; set a name shared by the nodes");
        }
        Ok(())
    }

    /// Pause between acquisition attempts.
    pub fn retry_interval(&self) -> Duration {
        Duration::from_millis(self.lease_retry_ms)
    }

    /// Pause between checks of a held lease.
    pub fn check_interval(&self) -> Duration {
        Duration::from_millis(self.lease_check_ms)
    }

    /// Builds the lease these settings describe.
    ///
    /// # Errors
    /// [`LeaseError::InvalidUrl`] when `lease_url` does not parse.
    pub fn lease(&self) -> Result<Box<dyn Lease>, LeaseError> {
        if self.lease_url.is_empty() {
            return Ok(Box::new(LocalLease));
        }
        let session_timeout = Duration::from_millis(self.lease_session_timeout_ms);
        let lease = PgLease::new(&self.lease_url, &self.lease_name, session_timeout)?;
        Ok(Box::new(lease.with_answer_timeout(self.check_interval())))
    }
}

/// A lease that is always granted, for a single process on its own data directory.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalLease;

#[async_trait]
impl Lease for LocalLease {
    async fn try_acquire(&self) -> Result<Option<Box<dyn HeldLease>>, LeaseError> {
        Ok(Some(Box::new(LocalLease)))
    }

    fn describe(&self) -> String {
        "local lease (single process)".to_owned()
    }
}

#[async_trait]
impl HeldLease for LocalLease {
    async fn confirm(&mut self) -> Result<(), LeaseError> {
        Ok(())
    }

    async fn release(self: Box<Self>) {}
}

/// A lease on a PostgreSQL session-level advisory lock.
pub struct PgLease {
    options: PgConnectOptions,
    key: i64,
    name: String,
    answer_timeout: Duration,
    // A standby keeps its connection between attempts, so it does not start a server
    // process every retry.
    spare: tokio::sync::Mutex<Option<PgConnection>>,
    // Only for `describe`: host and database, never the password.
    target: String,
}

impl std::fmt::Debug for PgLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLease")
            .field("name", &self.name)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl PgLease {
    /// Creates a lease named `name` on the database at `url`. PostgreSQL ends a holder's
    /// session, and so frees the lock, after `session_timeout` without a check.
    ///
    /// # Errors
    /// [`LeaseError::InvalidUrl`] when `url` does not parse.
    pub fn new(url: &str, name: &str, session_timeout: Duration) -> Result<Self, LeaseError> {
        let timeout_ms = session_timeout.as_millis().to_string();
        let options = url
            .parse::<PgConnectOptions>()
            .map_err(LeaseError::InvalidUrl)?
            .options([("idle_session_timeout", timeout_ms.as_str())])
            .application_name("folio-lease")
            .disable_statement_logging();
        let target = format!(
            "postgres://{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or_default()
        );
        Ok(PgLease {
            options,
            key: lease_key(name),
            name: name.to_owned(),
            answer_timeout: Duration::from_secs(1),
            spare: tokio::sync::Mutex::new(None),
            target,
        })
    }

    /// Sets the query timeout after which the lease counts as lost (1 s by default).
    pub fn with_answer_timeout(mut self, timeout: Duration) -> Self {
        self.answer_timeout = timeout;
        self
    }

    /// Advisory lock key derived from the lease name.
    pub fn key(&self) -> i64 {
        self.key
    }

    async fn connection(&self) -> Result<PgConnection, LeaseError> {
        if let Some(connection) = self.spare.lock().await.take() {
            return Ok(connection);
        }
        let connect = PgConnection::connect_with(&self.options);
        bounded(self.answer_timeout, connect).await
    }
}

#[async_trait]
impl Lease for PgLease {
    async fn try_acquire(&self) -> Result<Option<Box<dyn HeldLease>>, LeaseError> {
        let mut connection = self.connection().await?;
        let query = sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
            .bind(self.key)
            .fetch_one(&mut connection);
        // A failed query drops the connection, so the next attempt starts a fresh one.
        let granted = bounded(self.answer_timeout, query).await?;
        if !granted {
            *self.spare.lock().await = Some(connection);
            return Ok(None);
        }
        Ok(Some(Box::new(PgHeldLease {
            connection,
            key: self.key,
            answer_timeout: self.answer_timeout,
        })))
    }

    fn describe(&self) -> String {
        format!(
            "advisory lock {} ({}) on {}",
            self.key, self.name, self.target
        )
    }
}

/// A held advisory lock and the session that owns it.
struct PgHeldLease {
    connection: PgConnection,
    key: i64,
    answer_timeout: Duration,
}

#[async_trait]
impl HeldLease for PgHeldLease {
    async fn confirm(&mut self) -> Result<(), LeaseError> {
        // pg_locks splits a bigint advisory key into two 32-bit halves, with objsubid 1.
        let (high, low) = split_key(self.key);
        let query = sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' \
             AND pid = pg_backend_pid() AND granted AND objsubid = 1 \
             AND classid::bigint = $1 AND objid::bigint = $2)",
        )
        .bind(high)
        .bind(low)
        .fetch_one(&mut self.connection);
        if bounded(self.answer_timeout, query).await? {
            Ok(())
        } else {
            Err(LeaseError::NotHeld { key: self.key })
        }
    }

    async fn release(self: Box<Self>) {
        let PgHeldLease {
            mut connection,
            key,
            answer_timeout,
        } = *self;
        let unlock = sqlx::query_scalar::<_, bool>("SELECT pg_advisory_unlock($1)")
            .bind(key)
            .fetch_one(&mut connection);
        if let Err(error) = bounded(answer_timeout, unlock).await {
            // Closing the session below frees the lock anyway.
            tracing::warn!(%error, key, "could not unlock the lease; closing its session");
        }
        if let Err(error) = connection.close().await {
            tracing::debug!(%error, "lease connection did not close cleanly");
        }
    }
}

/// Runs `future`, turning a late answer into [`LeaseError::TimedOut`].
async fn bounded<T>(
    limit: Duration,
    future: impl std::future::Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, LeaseError> {
    match tokio::time::timeout(limit, future).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(LeaseError::TimedOut(limit)),
    }
}

/// Derives the advisory lock key from the lease name, so unrelated applications on the
/// same database are unlikely to pick the same key.
pub fn lease_key(name: &str) -> i64 {
    let digest = blake3::hash(format!("folio-lease:{name}").as_bytes());
    let mut first = [0_u8; 8];
    first.copy_from_slice(&digest.as_bytes()[..8]);
    i64::from_be_bytes(first)
}

/// Splits a key as `pg_locks` shows it: the high and low 32 bits, each as an unsigned value.
fn split_key(key: i64) -> (i64, i64) {
    let bits = key as u64;
    (i64::from((bits >> 32) as u32), i64::from(bits as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_halves_match_pg_locks() {
        assert_eq!(split_key(1), (0, 1));
        assert_eq!(split_key(-1), (0xffff_ffff, 0xffff_ffff));
        assert_eq!(split_key(0x0000_0002_0000_0003), (2, 3));
    }

    #[test]
    fn key_depends_on_name() {
        assert_ne!(lease_key("a"), lease_key("b"));
        assert_eq!(lease_key("folio"), lease_key("folio"));
    }

    #[test]
    fn session_timeout_below_two_checks_is_rejected() {
        let config = ClusterConfig {
            lease_check_ms: 1_000,
            lease_session_timeout_ms: 1_500,
            ..ClusterConfig::default()
        };
        let error = config.validate().unwrap_err().to_string();
        assert!(
            error.contains("cluster.lease_session_timeout_ms (1500)"),
            "{error}"
        );
    }

    #[test]
    fn invalid_url_is_named() {
        let config = ClusterConfig {
            lease_url: "not a url".to_owned(),
            ..ClusterConfig::default()
        };
        let Err(error) = config.lease() else {
            panic!("an invalid URL was accepted");
        };
        let error = error.to_string();
        assert!(error.contains("cluster.lease_url"), "{error}");
    }
}
