//! Operators, sessions, TOTP state and recovery codes: in `operators.sqlite` beside the
//! API tokens' `auth.sqlite` on one node, or in the PostgreSQL database that several nodes
//! share (see [`crate::credentials`]).
//!
//! Two rules of the second factor are enforced here by single statements: a TOTP step
//! is recorded only if it is later than the last one (`UPDATE ... WHERE last_step < ?`,
//! checked by rows affected), and a recovery code is consumed only if it is unused
//! (`UPDATE ... WHERE used_at_micros IS NULL`). Two requests racing with one code
//! cannot both win, on one node or on two: PostgreSQL makes the second `UPDATE` of a row
//! wait for the first to commit and then checks its `WHERE` against the new row.
//!
//! The lockout counters (`factor_failures`) and the lock itself are rows of the same
//! database, so every node counts the failures made on every other.

use std::str::FromStr;

use domain::operators::Role;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};
use uuid::Uuid;

use crate::credentials::{CredentialsLocation, OPERATORS_FILE};

/// Tables and indexes, in SQL that both databases accept (`BLOB` becomes `BYTEA` on
/// PostgreSQL). Integers are `BIGINT` there. SQLite files made by earlier versions declare
/// `INTEGER`, which SQLite treats the same.
pub(crate) const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS operators (
        id TEXT PRIMARY KEY,
        ledger_id TEXT NOT NULL,
        username TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        roles TEXT NOT NULL,
        created_at_micros BIGINT NOT NULL,
        created_recorded BIGINT NOT NULL,
        totp_sealed BLOB,
        totp_active BIGINT NOT NULL DEFAULT 0,
        last_step BIGINT NOT NULL DEFAULT -1,
        recovery_generation BIGINT NOT NULL DEFAULT 0,
        recovery_acknowledged BIGINT NOT NULL DEFAULT 0,
        locked_until_micros BIGINT,
        UNIQUE (ledger_id, username)
    )",
    "CREATE TABLE IF NOT EXISTS recovery_codes (
        operator_id TEXT NOT NULL,
        generation BIGINT NOT NULL,
        code_id TEXT NOT NULL,
        hash TEXT NOT NULL,
        used_at_micros BIGINT,
        PRIMARY KEY (operator_id, generation, code_id)
    )",
    "CREATE TABLE IF NOT EXISTS sessions (
        id TEXT PRIMARY KEY,
        operator_id TEXT NOT NULL,
        secret_hash BLOB NOT NULL,
        binding BLOB NOT NULL,
        created_at_micros BIGINT NOT NULL,
        last_seen_at_micros BIGINT NOT NULL,
        revoked_at_micros BIGINT,
        factor TEXT NOT NULL,
        factor_at_micros BIGINT NOT NULL,
        second_factor_at_micros BIGINT
    )",
    "CREATE TABLE IF NOT EXISTS factor_failures (
        operator_id TEXT NOT NULL,
        at_micros BIGINT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS factor_failures_by_operator
        ON factor_failures (operator_id, at_micros)",
    // One row sealed with the TOTP secret key, so a node with another key is refused at
    // start rather than at an operator's sign-in.
    "CREATE TABLE IF NOT EXISTS operator_key_check (
        id BIGINT PRIMARY KEY,
        sealed BLOB NOT NULL,
        created_at_micros BIGINT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS mfa_resets (
        operator_id TEXT PRIMARY KEY,
        proposed_by TEXT NOT NULL,
        reason TEXT NOT NULL,
        proposed_at_micros BIGINT NOT NULL
    )",
];

/// Tables that [`SCHEMA`] creates.
pub(crate) const TABLES: &[&str] = &[
    "operators",
    "recovery_codes",
    "sessions",
    "factor_failures",
    "operator_key_check",
    "mfa_resets",
];

/// An operator row; the TOTP secret stays sealed.
#[derive(Clone)]
pub struct OperatorRecord {
    /// Operator id.
    pub id: Uuid,
    /// Ledger (tenant) the operator works on.
    pub ledger_id: Uuid,
    /// User name, unique per ledger.
    pub username: String,
    /// Argon2id PHC string of the password.
    pub password_hash: String,
    /// Roles.
    pub roles: Vec<Role>,
    /// Whether `operator.created` is in the ledger (the command-line bootstrap writes the
    /// row first; the server records the event at the first sign-in).
    pub created_recorded: bool,
    /// TOTP secret sealed with the secret box, once enrolment started.
    pub totp_sealed: Option<Vec<u8>>,
    /// Whether enrolment is complete.
    pub totp_active: bool,
    /// Last TOTP step accepted, -1 before the first.
    pub last_step: i64,
    /// Generation of the current recovery code set, 0 before the first.
    pub recovery_generation: u32,
    /// Whether the current set was acknowledged.
    pub recovery_acknowledged: bool,
    /// End of a lock.
    pub locked_until_micros: Option<i64>,
}

impl std::fmt::Debug for OperatorRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorRecord")
            .field("id", &self.id)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// A session row.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    /// Session id.
    pub id: Uuid,
    /// Operator.
    pub operator_id: Uuid,
    /// Keyed hash of the bearer secret.
    pub secret_hash: Vec<u8>,
    /// Hash of the client binding (the User-Agent).
    pub binding: Vec<u8>,
    /// Start.
    pub created_at_micros: i64,
    /// Last request.
    pub last_seen_at_micros: i64,
    /// Revocation time.
    pub revoked_at_micros: Option<i64>,
    /// Newest factor: `password`, `totp` or `recovery_code`.
    pub factor: String,
    /// When it was verified.
    pub factor_at_micros: i64,
    /// When a second factor last passed in this session.
    pub second_factor_at_micros: Option<i64>,
}

/// The operator store.
#[derive(Clone)]
pub struct OperatorStore {
    pool: AnyPool,
}

fn parse_uuid(text: &str) -> Result<Uuid, sqlx::Error> {
    Uuid::parse_str(text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn operator_from_row(row: &AnyRow) -> Result<OperatorRecord, sqlx::Error> {
    let roles: String = row.try_get("roles")?;
    let roles = roles
        .split(',')
        .filter(|r| !r.is_empty())
        .map(Role::from_str)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| sqlx::Error::Decode(e.into()))?;
    Ok(OperatorRecord {
        id: parse_uuid(row.try_get("id")?)?,
        ledger_id: parse_uuid(row.try_get("ledger_id")?)?,
        username: row.try_get("username")?,
        password_hash: row.try_get("password_hash")?,
        roles,
        created_recorded: row.try_get::<i64, _>("created_recorded")? != 0,
        totp_sealed: row.try_get("totp_sealed")?,
        totp_active: row.try_get::<i64, _>("totp_active")? != 0,
        last_step: row.try_get("last_step")?,
        recovery_generation: u32::try_from(row.try_get::<i64, _>("recovery_generation")?)
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        recovery_acknowledged: row.try_get::<i64, _>("recovery_acknowledged")? != 0,
        locked_until_micros: row.try_get("locked_until_micros")?,
    })
}

fn session_from_row(row: &AnyRow) -> Result<SessionRecord, sqlx::Error> {
    Ok(SessionRecord {
        id: parse_uuid(row.try_get("id")?)?,
        operator_id: parse_uuid(row.try_get("operator_id")?)?,
        secret_hash: row.try_get("secret_hash")?,
        binding: row.try_get("binding")?,
        created_at_micros: row.try_get("created_at_micros")?,
        last_seen_at_micros: row.try_get("last_seen_at_micros")?,
        revoked_at_micros: row.try_get("revoked_at_micros")?,
        factor: row.try_get("factor")?,
        factor_at_micros: row.try_get("factor_at_micros")?,
        second_factor_at_micros: row.try_get("second_factor_at_micros")?,
    })
}

/// Fields of a new operator.
pub struct NewOperator<'a> {
    /// Ledger.
    pub ledger_id: Uuid,
    /// User name.
    pub username: &'a str,
    /// Argon2id PHC string of the password.
    pub password_hash: &'a str,
    /// Roles.
    pub roles: &'a [Role],
    /// Whether the caller records `operator.created` itself.
    pub created_recorded: bool,
    /// Creation time.
    pub now_micros: i64,
}

impl OperatorStore {
    /// Returns the connection pool, so a rotated database password can be applied to it.
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Opens or creates the operator database at `location`.
    ///
    /// # Errors
    /// Fails if the database cannot be opened or the schema cannot be created, naming it.
    pub async fn open(location: &CredentialsLocation) -> anyhow::Result<Self> {
        let database = location.connect(OPERATORS_FILE, SCHEMA, TABLES).await?;
        Ok(OperatorStore {
            pool: database.pool,
        })
    }

    /// Returns the sealed key check value, if a node has stored one.
    ///
    /// # Errors
    /// Database failures.
    pub async fn key_check(&self) -> Result<Option<Vec<u8>>, sqlx::Error> {
        let row = sqlx::query("SELECT sealed FROM operator_key_check WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| row.try_get(0)).transpose()
    }

    /// Stores the sealed key check value unless one is stored; returns whether this call
    /// stored it.
    ///
    /// # Errors
    /// Database failures.
    pub async fn insert_key_check(
        &self,
        sealed: &[u8],
        now_micros: i64,
    ) -> Result<bool, sqlx::Error> {
        let result = sqlx::query(
            "INSERT INTO operator_key_check (id, sealed, created_at_micros) VALUES (1, $1, $2)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(sealed)
        .bind(now_micros)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Inserts an operator and returns its id, or `None` if the name is taken on the ledger.
    ///
    /// # Errors
    /// Database failures.
    pub async fn create(&self, new: &NewOperator<'_>) -> Result<Option<Uuid>, sqlx::Error> {
        let id = Uuid::now_v7();
        let roles: Vec<&str> = new.roles.iter().map(|r| r.as_str()).collect();
        let result = sqlx::query(
            "INSERT INTO operators (id, ledger_id, username, password_hash, roles,
                created_at_micros, created_recorded)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (ledger_id, username) DO NOTHING",
        )
        .bind(id.to_string())
        .bind(new.ledger_id.to_string())
        .bind(new.username)
        .bind(new.password_hash)
        .bind(roles.join(","))
        .bind(new.now_micros)
        .bind(i64::from(new.created_recorded))
        .execute(&self.pool)
        .await?;
        Ok((result.rows_affected() == 1).then_some(id))
    }

    /// Returns an operator by ledger and user name.
    ///
    /// # Errors
    /// Database failures.
    pub async fn by_name(
        &self,
        ledger_id: Uuid,
        username: &str,
    ) -> Result<Option<OperatorRecord>, sqlx::Error> {
        sqlx::query("SELECT * FROM operators WHERE ledger_id = $1 AND username = $2")
            .bind(ledger_id.to_string())
            .bind(username)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(operator_from_row)
            .transpose()
    }

    /// Returns an operator by id.
    ///
    /// # Errors
    /// Database failures.
    pub async fn get(&self, id: Uuid) -> Result<Option<OperatorRecord>, sqlx::Error> {
        sqlx::query("SELECT * FROM operators WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(operator_from_row)
            .transpose()
    }

    /// Lists the operators of a ledger in creation order.
    ///
    /// # Errors
    /// Database failures.
    pub async fn list(&self, ledger_id: Uuid) -> Result<Vec<OperatorRecord>, sqlx::Error> {
        let rows = sqlx::query("SELECT * FROM operators WHERE ledger_id = $1 ORDER BY id")
            .bind(ledger_id.to_string())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(operator_from_row).collect()
    }

    /// Marks `operator.created` as recorded; returns whether this call did it.
    ///
    /// # Errors
    /// Database failures.
    pub async fn mark_created_recorded(&self, id: Uuid) -> Result<bool, sqlx::Error> {
        let result = sqlx::query(
            "UPDATE operators SET created_recorded = 1 WHERE id = $1 AND created_recorded = 0",
        )
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Stores a new sealed TOTP secret for an operator who is not enrolled yet.
    /// Returns `false` if the operator's enrolment is already active.
    ///
    /// # Errors
    /// Database failures.
    pub async fn set_pending_totp(&self, id: Uuid, sealed: &[u8]) -> Result<bool, sqlx::Error> {
        let result = sqlx::query(
            "UPDATE operators SET totp_sealed = $1, last_step = -1
             WHERE id = $2 AND totp_active = 0",
        )
        .bind(sealed)
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Records `step` as the last accepted TOTP step if it is later than the stored one.
    /// Returns `false` when another request already used this or a later step.
    ///
    /// # Errors
    /// Database failures.
    pub async fn accept_step(&self, id: Uuid, step: i64) -> Result<bool, sqlx::Error> {
        let result =
            sqlx::query("UPDATE operators SET last_step = $1 WHERE id = $2 AND last_step < $3")
                .bind(step)
                .bind(id.to_string())
                .bind(step)
                .execute(&self.pool)
                .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Activates enrolment once the recovery codes of `generation` are acknowledged.
    ///
    /// # Errors
    /// Database failures.
    pub async fn activate(&self, id: Uuid, generation: u32) -> Result<bool, sqlx::Error> {
        let result = sqlx::query(
            "UPDATE operators SET totp_active = 1, recovery_acknowledged = 1
             WHERE id = $1 AND recovery_generation = $2 AND totp_sealed IS NOT NULL",
        )
        .bind(id.to_string())
        .bind(i64::from(generation))
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Replaces the recovery codes with a new generation; earlier codes stop working.
    /// `codes` contains each code's public id and Argon2id hash.
    ///
    /// # Errors
    /// Database failures.
    pub async fn replace_recovery_codes(
        &self,
        id: Uuid,
        codes: &[(String, String)],
    ) -> Result<u32, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "UPDATE operators SET recovery_generation = recovery_generation + 1,
                recovery_acknowledged = 0
             WHERE id = $1 RETURNING recovery_generation",
        )
        .bind(id.to_string())
        .fetch_one(&mut *tx)
        .await?;
        let generation: i64 = row.try_get(0)?;
        sqlx::query("DELETE FROM recovery_codes WHERE operator_id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        for (code_id, hash) in codes {
            sqlx::query(
                "INSERT INTO recovery_codes (operator_id, generation, code_id, hash)
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(id.to_string())
            .bind(generation)
            .bind(code_id)
            .bind(hash)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        u32::try_from(generation).map_err(|e| sqlx::Error::Decode(Box::new(e)))
    }

    /// Returns the hash of an unused recovery code of the current generation.
    ///
    /// # Errors
    /// Database failures.
    pub async fn recovery_hash(
        &self,
        id: Uuid,
        code_id: &str,
    ) -> Result<Option<String>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT hash FROM recovery_codes WHERE operator_id = $1 AND code_id = $2
                AND used_at_micros IS NULL",
        )
        .bind(id.to_string())
        .bind(code_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| row.try_get(0)).transpose()
    }

    /// Marks a recovery code used; returns `false` if another request used it first.
    ///
    /// # Errors
    /// Database failures.
    pub async fn consume_recovery_code(
        &self,
        id: Uuid,
        code_id: &str,
        now_micros: i64,
    ) -> Result<bool, sqlx::Error> {
        let result = sqlx::query(
            "UPDATE recovery_codes SET used_at_micros = $1
             WHERE operator_id = $2 AND code_id = $3 AND used_at_micros IS NULL",
        )
        .bind(now_micros)
        .bind(id.to_string())
        .bind(code_id)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Counts unused recovery codes.
    ///
    /// # Errors
    /// Database failures.
    pub async fn unused_recovery_codes(&self, id: Uuid) -> Result<u32, sqlx::Error> {
        let row = sqlx::query(
            "SELECT COUNT(*) FROM recovery_codes WHERE operator_id = $1 AND used_at_micros IS NULL",
        )
        .bind(id.to_string())
        .fetch_one(&self.pool)
        .await?;
        let count: i64 = row.try_get(0)?;
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    /// Records a failed attempt and returns the failures in the window and the newest one.
    ///
    /// # Errors
    /// Database failures.
    pub async fn record_failure(
        &self,
        id: Uuid,
        now_micros: i64,
        window_start_micros: i64,
    ) -> Result<(u32, Option<i64>), sqlx::Error> {
        sqlx::query("INSERT INTO factor_failures (operator_id, at_micros) VALUES ($1, $2)")
            .bind(id.to_string())
            .bind(now_micros)
            .execute(&self.pool)
            .await?;
        self.failures_since(id, window_start_micros).await
    }

    /// Returns the failures since `window_start_micros` and the newest one.
    ///
    /// # Errors
    /// Database failures.
    pub async fn failures_since(
        &self,
        id: Uuid,
        window_start_micros: i64,
    ) -> Result<(u32, Option<i64>), sqlx::Error> {
        let row = sqlx::query(
            "SELECT COUNT(*), MAX(at_micros) FROM factor_failures
             WHERE operator_id = $1 AND at_micros >= $2",
        )
        .bind(id.to_string())
        .bind(window_start_micros)
        .fetch_one(&self.pool)
        .await?;
        let count: i64 = row.try_get(0)?;
        Ok((u32::try_from(count).unwrap_or(u32::MAX), row.try_get(1)?))
    }

    /// Locks an operator until `until_micros`.
    ///
    /// # Errors
    /// Database failures.
    pub async fn lock(&self, id: Uuid, until_micros: i64) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE operators SET locked_until_micros = $1 WHERE id = $2")
            .bind(until_micros)
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Releases a lock and deletes past failures.
    ///
    /// # Errors
    /// Database failures.
    pub async fn unlock(&self, id: Uuid) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE operators SET locked_until_micros = NULL WHERE id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM factor_failures WHERE operator_id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// Creates a session.
    ///
    /// # Errors
    /// Database failures.
    pub async fn create_session(&self, session: &SessionRecord) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO sessions (id, operator_id, secret_hash, binding, created_at_micros,
                last_seen_at_micros, factor, factor_at_micros)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(session.id.to_string())
        .bind(session.operator_id.to_string())
        .bind(&session.secret_hash)
        .bind(&session.binding)
        .bind(session.created_at_micros)
        .bind(session.last_seen_at_micros)
        .bind(&session.factor)
        .bind(session.factor_at_micros)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Returns a session.
    ///
    /// # Errors
    /// Database failures.
    pub async fn session(&self, id: Uuid) -> Result<Option<SessionRecord>, sqlx::Error> {
        sqlx::query("SELECT * FROM sessions WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(session_from_row)
            .transpose()
    }

    /// Records activity on a session.
    ///
    /// # Errors
    /// Database failures.
    pub async fn touch_session(&self, id: Uuid, now_micros: i64) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE sessions SET last_seen_at_micros = $1 WHERE id = $2")
            .bind(now_micros)
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records a passed second factor on a session.
    ///
    /// # Errors
    /// Database failures.
    pub async fn record_second_factor(
        &self,
        id: Uuid,
        factor: &str,
        now_micros: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE sessions SET factor = $1, factor_at_micros = $2, second_factor_at_micros = $3
             WHERE id = $4 AND revoked_at_micros IS NULL",
        )
        .bind(factor)
        .bind(now_micros)
        .bind(now_micros)
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Revokes one session; returns whether it was active.
    ///
    /// # Errors
    /// Database failures.
    pub async fn revoke_session(&self, id: Uuid, now_micros: i64) -> Result<bool, sqlx::Error> {
        let result = sqlx::query(
            "UPDATE sessions SET revoked_at_micros = $1 WHERE id = $2 AND revoked_at_micros IS NULL",
        )
        .bind(now_micros)
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Revokes every active session of an operator and returns their ids.
    ///
    /// # Errors
    /// Database failures.
    pub async fn revoke_all_sessions(
        &self,
        operator_id: Uuid,
        now_micros: i64,
    ) -> Result<Vec<Uuid>, sqlx::Error> {
        let rows = sqlx::query(
            "UPDATE sessions SET revoked_at_micros = $1
             WHERE operator_id = $2 AND revoked_at_micros IS NULL RETURNING id",
        )
        .bind(now_micros)
        .bind(operator_id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| parse_uuid(row.try_get(0)?)).collect()
    }

    /// Stores a pending MFA reset; returns `false` if one is already pending.
    ///
    /// # Errors
    /// Database failures.
    pub async fn propose_reset(
        &self,
        operator_id: Uuid,
        proposed_by: Uuid,
        reason: &str,
        now_micros: i64,
    ) -> Result<bool, sqlx::Error> {
        let result = sqlx::query(
            "INSERT INTO mfa_resets (operator_id, proposed_by, reason, proposed_at_micros)
             VALUES ($1, $2, $3, $4) ON CONFLICT (operator_id) DO NOTHING",
        )
        .bind(operator_id.to_string())
        .bind(proposed_by.to_string())
        .bind(reason)
        .bind(now_micros)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Returns who proposed the pending reset of an operator.
    ///
    /// # Errors
    /// Database failures.
    pub async fn pending_reset(&self, operator_id: Uuid) -> Result<Option<Uuid>, sqlx::Error> {
        let row = sqlx::query("SELECT proposed_by FROM mfa_resets WHERE operator_id = $1")
            .bind(operator_id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| parse_uuid(row.try_get(0)?)).transpose()
    }

    /// Applies a reset: the TOTP secret and recovery codes are deleted and the operator
    /// must enrol again. Returns `false` if no reset was pending.
    ///
    /// # Errors
    /// Database failures.
    pub async fn apply_reset(&self, operator_id: Uuid) -> Result<bool, sqlx::Error> {
        let id = operator_id.to_string();
        let mut tx = self.pool.begin().await?;
        let removed = sqlx::query("DELETE FROM mfa_resets WHERE operator_id = $1")
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        if removed.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE operators SET totp_sealed = NULL, totp_active = 0, last_step = -1,
                recovery_acknowledged = 0, locked_until_micros = NULL
             WHERE id = $1",
        )
        .bind(&id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM recovery_codes WHERE operator_id = $1")
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store_with_operator() -> (tempfile::TempDir, OperatorStore, Uuid) {
        let dir = tempfile::tempdir().unwrap();
        let location = CredentialsLocation::Files(dir.path().to_path_buf());
        let store = OperatorStore::open(&location).await.unwrap();
        let new = NewOperator {
            ledger_id: Uuid::now_v7(),
            username: "cas",
            password_hash: "unused",
            roles: &[Role::Viewer],
            created_recorded: true,
            now_micros: 0,
        };
        let id = store.create(&new).await.unwrap().unwrap();
        assert!(
            store.create(&new).await.unwrap().is_none(),
            "a name is unique per ledger"
        );
        (dir, store, id)
    }

    #[tokio::test]
    async fn step_is_accepted_once_and_only_forward() {
        let (_dir, store, id) = store_with_operator().await;
        assert!(store.accept_step(id, 100).await.unwrap());
        assert!(
            !store.accept_step(id, 100).await.unwrap(),
            "same step again"
        );
        assert!(!store.accept_step(id, 99).await.unwrap(), "an earlier step");
        assert!(store.accept_step(id, 101).await.unwrap());
    }

    #[tokio::test]
    async fn recovery_code_is_consumed_once_and_regeneration_voids() {
        let (_dir, store, id) = store_with_operator().await;
        let codes = vec![("abcd".to_owned(), "hash-1".to_owned())];
        assert_eq!(store.replace_recovery_codes(id, &codes).await.unwrap(), 1);
        assert!(store.consume_recovery_code(id, "abcd", 5).await.unwrap());
        assert!(!store.consume_recovery_code(id, "abcd", 6).await.unwrap());
        assert_eq!(store.recovery_hash(id, "abcd").await.unwrap(), None);

        let fresh = vec![("efgh".to_owned(), "hash-2".to_owned())];
        assert_eq!(store.replace_recovery_codes(id, &fresh).await.unwrap(), 2);
        assert_eq!(store.unused_recovery_codes(id).await.unwrap(), 1);
        assert!(!store.consume_recovery_code(id, "abcd", 7).await.unwrap());
    }
}
