//! Leases: which node runs the background workers (bank dispatcher, shared projections) of
//! each ledger.
//!
//! Any node accepts commands for any ledger, but the workers that act on a whole ledger run
//! on one node at a time. Each ledger has its own lease, so the ledgers of a deployment are
//! spread over its nodes. A [`LeaseSession`] holds a node's leases. [`PgLeases`] holds them
//! as session-level PostgreSQL advisory locks on one dedicated connection, keyed by the
//! lease name and the ledger id. The locks live exactly as long as the session, so a node
//! that dies or loses its connection gives its ledgers up at once, and the other nodes take
//! them at their next round. [`LocalLeases`] always grants, for the embedded single-process
//! setup where `folio.lock` already keeps a second process out.
//!
//! The session also holds a membership lock, so each node can count the live nodes and
//! take no more than its share of the ledgers (see [`crate::workers::LedgerWorkers`]).
//!
//! A lease is not a fence: a holder that has lost its session notices only at its next
//! check, so for up to one check interval two nodes may run the workers of a ledger. The
//! dispatcher is safe under that overlap because attempts are appended with the payment
//! stream's exact expected version and the bank deduplicates by the payment's idempotency
//! key.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Row};
use uuid::Uuid;

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
    /// The session still exists but no longer holds its membership lock.
    #[error("the lease session no longer holds its membership lock")]
    NotMember,
    /// Every membership id drawn was taken by another session.
    #[error("no free membership id after {0} random draws; check the lease database")]
    NoMemberId(u32),
}

/// The leases of one node, one per ledger.
#[async_trait]
pub trait LeaseSession: Send {
    /// Returns the number of nodes that hold a lease session, this one included, opening
    /// this node's session if it has none.
    ///
    /// # Errors
    /// [`LeaseError`] when the lease store cannot be reached.
    async fn members(&mut self) -> Result<u32, LeaseError>;

    /// Tries once to take the lease of `ledger_id`; `false` means another node holds it.
    ///
    /// # Errors
    /// [`LeaseError`] when the lease store cannot be reached.
    async fn try_acquire(&mut self, ledger_id: Uuid) -> Result<bool, LeaseError>;

    /// Returns which of `ledgers` this node still holds.
    ///
    /// # Errors
    /// Any error means every lease may be lost, and the node must stop all its workers.
    async fn held(&mut self, ledgers: &[Uuid]) -> Result<HashSet<Uuid>, LeaseError>;

    /// Gives the lease of `ledger_id` up, so another node can take it without waiting.
    ///
    /// # Errors
    /// [`LeaseError`] when the lease store cannot be reached; then the session is closed,
    /// which gives up every lease.
    async fn release(&mut self, ledger_id: Uuid) -> Result<(), LeaseError>;

    /// Ends the session, giving up every lease at once.
    async fn close(&mut self);

    /// Human-readable description for logs, without credentials.
    fn describe(&self) -> String;
}

/// Cluster settings: where the lease lives and how fast it moves between nodes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// PostgreSQL URL of the lease database. Empty means a single node with local leases.
    pub lease_url: String,
    /// Name of the leases; nodes of one deployment share it, other deployments on the same
    /// database pick another. Each ledger's advisory lock key is derived from it.
    pub lease_name: String,
    /// Pause after a failed round before a new lease session, in milliseconds.
    pub lease_retry_ms: u64,
    /// Pause between rounds, each of which checks the held leases and tries free ledgers,
    /// in milliseconds.
    pub lease_check_ms: u64,
    /// Idle time after which PostgreSQL ends a silent node's session and frees its locks,
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

    /// Pause after a failed round.
    pub fn retry_interval(&self) -> Duration {
        Duration::from_millis(self.lease_retry_ms)
    }

    /// Pause between rounds.
    pub fn check_interval(&self) -> Duration {
        Duration::from_millis(self.lease_check_ms)
    }

    /// Builds the leases these settings describe.
    ///
    /// # Errors
    /// [`LeaseError::InvalidUrl`] when `lease_url` does not parse.
    pub fn leases(&self) -> Result<Box<dyn LeaseSession>, LeaseError> {
        if self.lease_url.is_empty() {
            return Ok(Box::new(LocalLeases::default()));
        }
        let session_timeout = Duration::from_millis(self.lease_session_timeout_ms);
        let leases = PgLeases::new(&self.lease_url, &self.lease_name, session_timeout)?;
        Ok(Box::new(leases.with_answer_timeout(self.check_interval())))
    }
}

/// Leases that are always granted, for a single process on its own data directory.
#[derive(Debug, Default)]
pub struct LocalLeases {
    held: HashSet<Uuid>,
}

#[async_trait]
impl LeaseSession for LocalLeases {
    async fn members(&mut self) -> Result<u32, LeaseError> {
        Ok(1)
    }

    async fn try_acquire(&mut self, ledger_id: Uuid) -> Result<bool, LeaseError> {
        self.held.insert(ledger_id);
        Ok(true)
    }

    async fn held(&mut self, ledgers: &[Uuid]) -> Result<HashSet<Uuid>, LeaseError> {
        Ok(ledgers
            .iter()
            .copied()
            .filter(|l| self.held.contains(l))
            .collect())
    }

    async fn release(&mut self, ledger_id: Uuid) -> Result<(), LeaseError> {
        self.held.remove(&ledger_id);
        Ok(())
    }

    async fn close(&mut self) {
        self.held.clear();
    }

    fn describe(&self) -> String {
        "local leases (single process)".to_owned()
    }
}

/// Leases on PostgreSQL session-level advisory locks, all held by one connection.
pub struct PgLeases {
    options: PgConnectOptions,
    name: String,
    answer_timeout: Duration,
    /// First half of the two-key membership lock, derived from the lease name.
    member_class: i32,
    /// Second half, drawn at random when the session opens.
    member_id: i32,
    session: Option<PgConnection>,
    // Only for `describe`: host and database, never the password.
    target: String,
}

impl std::fmt::Debug for PgLeases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLeases")
            .field("name", &self.name)
            .field("member_id", &self.member_id)
            .finish_non_exhaustive()
    }
}

impl PgLeases {
    /// Creates the leases named `name` on the database at `url`. PostgreSQL ends the
    /// session, and so frees every lock, after `session_timeout` without a check.
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
        let class = lease_key(&format!("{name}:members"));
        Ok(PgLeases {
            options,
            name: name.to_owned(),
            answer_timeout: Duration::from_secs(1),
            // The high half of a 64-bit digest is as good a key as the whole.
            member_class: (class >> 32) as i32,
            member_id: 0,
            session: None,
            target,
        })
    }

    /// Sets the query timeout after which the leases count as lost (1 s by default).
    pub fn with_answer_timeout(mut self, timeout: Duration) -> Self {
        self.answer_timeout = timeout;
        self
    }

    /// Advisory lock key of a ledger's lease.
    pub fn key(&self, ledger_id: Uuid) -> i64 {
        ledger_lease_key(&self.name, ledger_id)
    }

    /// Returns the open session, opening it and taking a membership lock first if needed.
    async fn session(&mut self) -> Result<&mut PgConnection, LeaseError> {
        if self.session.is_none() {
            let connect = PgConnection::connect_with(&self.options);
            let mut connection = bounded(self.answer_timeout, connect).await?;
            self.member_id = join(&mut connection, self.member_class, self.answer_timeout).await?;
            self.session = Some(connection);
        }
        // Set just above when it was empty.
        Ok(self.session.as_mut().expect("lease session is open"))
    }

    /// Passes `result` on, closing the session first when it is an error, which gives up
    /// every lease so the next call starts afresh.
    async fn checked<T>(&mut self, result: Result<T, LeaseError>) -> Result<T, LeaseError> {
        if result.is_err() {
            self.close().await;
        }
        result
    }
}

/// Random membership ids a session draws before it gives up. With a few nodes, two draws
/// out of 2^32 collide almost never, so reaching this limit means something else is wrong.
const MEMBER_ID_DRAWS: u32 = 8;

/// Takes a membership lock with a random second key and returns that key.
async fn join(
    connection: &mut PgConnection,
    class: i32,
    limit: Duration,
) -> Result<i32, LeaseError> {
    for _ in 0..MEMBER_ID_DRAWS {
        let id: i32 = rand::random();
        let taken = sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1, $2)")
            .bind(class)
            .bind(id)
            .fetch_one(&mut *connection);
        // A lock not granted means another node drew the same id.
        if bounded(limit, taken).await? {
            return Ok(id);
        }
    }
    Err(LeaseError::NoMemberId(MEMBER_ID_DRAWS))
}

#[async_trait]
impl LeaseSession for PgLeases {
    async fn members(&mut self) -> Result<u32, LeaseError> {
        let class = i64::from(self.member_class as u32);
        let limit = self.answer_timeout;
        let connection = self.session().await?;
        let query = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND objsubid = 2 AND classid::bigint = $1 AND database = \
             (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .bind(class)
        .fetch_one(connection);
        let result = bounded(limit, query).await;
        let count = self.checked(result).await?;
        // This node's own membership lock is among them.
        Ok(u32::try_from(count).unwrap_or(u32::MAX).max(1))
    }

    async fn try_acquire(&mut self, ledger_id: Uuid) -> Result<bool, LeaseError> {
        let key = self.key(ledger_id);
        let limit = self.answer_timeout;
        let connection = self.session().await?;
        let query = sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(connection);
        let result = bounded(limit, query).await;
        self.checked(result).await
    }

    async fn held(&mut self, ledgers: &[Uuid]) -> Result<HashSet<Uuid>, LeaseError> {
        let limit = self.answer_timeout;
        let Some(connection) = self.session.as_mut() else {
            return Ok(HashSet::new());
        };
        let query = sqlx::query(
            "SELECT classid::bigint, objid::bigint, objsubid::bigint FROM pg_locks \
             WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid()",
        )
        .fetch_all(connection);
        let result = bounded(limit, query).await;
        let rows = self.checked(result).await?;
        let mut locks = HashSet::new();
        for row in &rows {
            let lock: (i64, i64, i64) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            locks.insert(lock);
        }
        let member = (
            i64::from(self.member_class as u32),
            i64::from(self.member_id as u32),
            2,
        );
        if !locks.contains(&member) {
            self.close().await;
            return Err(LeaseError::NotMember);
        }
        // pg_locks splits a bigint advisory key into two 32-bit halves, with objsubid 1.
        let held = ledgers.iter().copied().filter(|&ledger_id| {
            let (high, low) = split_key(self.key(ledger_id));
            locks.contains(&(high, low, 1))
        });
        Ok(held.collect())
    }

    async fn release(&mut self, ledger_id: Uuid) -> Result<(), LeaseError> {
        let key = self.key(ledger_id);
        let limit = self.answer_timeout;
        let Some(connection) = self.session.as_mut() else {
            return Ok(());
        };
        let query = sqlx::query_scalar::<_, bool>("SELECT pg_advisory_unlock($1)")
            .bind(key)
            .fetch_one(connection);
        let result = bounded(limit, query).await;
        if !self.checked(result).await? {
            tracing::warn!(ledger = %ledger_id, "released a ledger lease this node did not hold");
        }
        Ok(())
    }

    async fn close(&mut self) {
        if let Some(connection) = self.session.take() {
            // Closing the session frees every lock it holds.
            if let Err(error) = connection.close().await {
                tracing::debug!(%error, "lease connection did not close cleanly");
            }
        }
    }

    fn describe(&self) -> String {
        format!("advisory locks of lease {:?} on {}", self.name, self.target)
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

/// Derives an advisory lock key from a name, so unrelated applications on the same
/// database are unlikely to pick the same key.
pub fn lease_key(name: &str) -> i64 {
    let digest = blake3::hash(format!("folio-lease:{name}").as_bytes());
    let mut first = [0_u8; 8];
    first.copy_from_slice(&digest.as_bytes()[..8]);
    i64::from_be_bytes(first)
}

/// Derives the advisory lock key of a ledger's lease from the lease name and the ledger.
pub fn ledger_lease_key(name: &str, ledger_id: Uuid) -> i64 {
    lease_key(&format!("{name}:ledger:{ledger_id}"))
}

/// Splits a key as `pg_locks` shows it: the high and low 32 bits, each as an unsigned value.
pub fn split_key(key: i64) -> (i64, i64) {
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
    fn key_depends_on_name_and_ledger() {
        assert_ne!(lease_key("a"), lease_key("b"));
        assert_eq!(lease_key("folio"), lease_key("folio"));
        let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
        assert_ne!(
            ledger_lease_key("folio", first),
            ledger_lease_key("folio", second)
        );
        assert_ne!(
            ledger_lease_key("folio", first),
            ledger_lease_key("other", first)
        );
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
        let Err(error) = config.leases() else {
            panic!("an invalid URL was accepted");
        };
        let error = error.to_string();
        assert!(error.contains("cluster.lease_url"), "{error}");
    }
}
