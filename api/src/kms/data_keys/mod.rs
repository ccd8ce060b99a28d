//! Per-subject data keys: one or more AES-256 keys per subject (a payee), stored wrapped
//! by the KEK, never in the ledger. With the embedded store they live in
//! `data-keys.sqlite` of the data directory. With a PostgreSQL store they live in the
//! `data_keys` table of that database, so every node that shares the store opens the
//! fields any of them sealed.
//!
//! Keeping the wrapped keys outside the append-only ledger is what makes erasure real.
//! Destroying a subject deletes its wrapped keys, so no KEK can recover the fields sealed
//! under them, while the sealed bytes stay in the hash chain unchanged.
//!
//! Each key counts the messages it sealed in the database (`messages`), reserved one at
//! a time with a conditional `UPDATE`, so the limit of `[kms] data_key_max_messages`
//! holds across restarts and across nodes sharing the database. A key past its message
//! or age limit is not used to seal again; the next seal for the subject makes a new key.
//!
//! On PostgreSQL another node may destroy a key that this node holds unwrapped in its
//! cache. Each open served from the cache therefore first reads the key's row by primary
//! key, so a field reads as erased on every node as soon as the erasing transaction has
//! committed. The embedded store has one node, which evicts the keys it destroys.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use domain::envelope::{DataKey, DataKeyLimits, EnvelopeError, FieldContext, SealedField};
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};
use uuid::Uuid;
use zeroize::Zeroizing;

use super::cache::DataKeyCache;
use super::{random_key, Kms, KmsError, WrappedKey};
use crate::credentials::{Database, Dialect};

mod copy;

pub use copy::{copy_data_keys, CopiedDataKeys};

/// File of the data keys in a data directory, for the embedded store.
pub const DATA_KEYS_FILE: &str = "data-keys.sqlite";

/// Location of the wrapped data keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyStore {
    /// An SQLite file, normally `data-keys.sqlite` of a data directory (one node).
    File(PathBuf),
    /// The `data_keys` table of a PostgreSQL database that every node shares.
    Postgres(String),
}

impl KeyStore {
    /// Returns the key store that goes with an event store: `data-keys.sqlite` beside an
    /// `events.sqlite` of a data directory, or the same PostgreSQL database. An SQLite
    /// store outside a data directory has none.
    pub fn beside(store: &crate::store::StoreLocation) -> Option<KeyStore> {
        use crate::store::StoreLocation;
        use eventstore_adapter::sqlite::EVENTS_FILE;
        match store {
            StoreLocation::Postgres(url) => Some(KeyStore::Postgres(url.clone())),
            StoreLocation::Sqlite(path) if path.file_name() == Some(EVENTS_FILE.as_ref()) => {
                let dir = path.parent()?;
                Some(KeyStore::File(dir.join(DATA_KEYS_FILE)))
            }
            StoreLocation::Sqlite(_) => None,
        }
    }

    /// Names the key store for messages, without any password.
    pub fn describe(&self) -> String {
        match self {
            KeyStore::File(path) => path.display().to_string(),
            KeyStore::Postgres(url) => crate::store::redact(url),
        }
    }

    async fn connect(&self) -> Result<Database, sqlx::Error> {
        match self {
            KeyStore::File(path) => Database::open_file(path).await,
            KeyStore::Postgres(url) => Database::connect(url).await,
        }
    }
}

/// Table of the data keys, in the SQLite file or in the PostgreSQL store's database.
pub(crate) const DATA_KEYS_TABLE: &str = "data_keys";

/// Statements that create the data-key table, portable between SQLite and PostgreSQL
/// (the blob type is rewritten for PostgreSQL). Both are idempotent.
pub(crate) const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS data_keys (
        id TEXT PRIMARY KEY,
        ledger_id TEXT NOT NULL,
        subject TEXT NOT NULL,
        provider TEXT NOT NULL,
        kek_id TEXT NOT NULL,
        kek_version TEXT NOT NULL,
        wrapped BLOB,
        created_at_micros BIGINT NOT NULL,
        messages BIGINT NOT NULL,
        destroyed_at_micros BIGINT
    )",
    "CREATE INDEX IF NOT EXISTS data_keys_subject ON data_keys (ledger_id, subject)",
];

/// A data-key operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataKeyError {
    /// The KMS failed.
    #[error(transparent)]
    Kms(#[from] KmsError),
    /// The key database failed.
    #[error("data key store: {0}")]
    Database(#[from] sqlx::Error),
    /// Sealing or opening failed.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// A sealed field names a key this store never had.
    #[error(
        "data key {0} is not in the data-key store; after `folio migrate`, check that the \
         keys were copied with the events"
    )]
    UnknownKey(Uuid),
    /// A stored row is damaged.
    #[error("data key store row {0} is damaged: {1}")]
    Corrupt(Uuid, String),
}

/// A field as a reader sees it.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened {
    /// The plaintext.
    Plain(Zeroizing<Vec<u8>>),
    /// The subject's key was destroyed: the field is erased by policy.
    Erased,
}

/// Progress of one rewrap batch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RewrapBatch {
    /// Keys moved to the current KEK version in this batch.
    pub rewrapped: u64,
    /// Keys still wrapped by the old version after it.
    pub remaining: u64,
    /// Keys moved in this batch, per ledger.
    pub by_ledger: BTreeMap<Uuid, u64>,
    /// The KEK version the keys moved to, when any moved.
    pub to_version: Option<String>,
}

/// The data keys, their wrapped form and an unwrapped cache.
pub struct DataKeys {
    pool: AnyPool,
    kms: Arc<dyn Kms>,
    cache: DataKeyCache,
    limits: DataKeyLimits,
    /// Other nodes write the same table, so a cached key may have been destroyed.
    shared: bool,
}

impl DataKeys {
    /// Opens (creating) the SQLite key database at `path`.
    ///
    /// # Errors
    /// A database that cannot be opened or created.
    pub async fn open(
        path: &Path,
        kms: Arc<dyn Kms>,
        cache: DataKeyCache,
        limits: DataKeyLimits,
    ) -> Result<DataKeys, DataKeyError> {
        let store = KeyStore::File(path.to_path_buf());
        Self::open_at(&store, kms, cache, limits).await
    }

    /// Opens the key store `store`, creating its table if missing. Every node of a
    /// cluster on PostgreSQL opens the same table.
    ///
    /// # Errors
    /// A database that cannot be opened or reached, or a table that cannot be created.
    pub async fn open_at(
        store: &KeyStore,
        kms: Arc<dyn Kms>,
        cache: DataKeyCache,
        limits: DataKeyLimits,
    ) -> Result<DataKeys, DataKeyError> {
        let database = store.connect().await?;
        Self::with_database(database, kms, cache, limits).await
    }

    async fn with_database(
        database: Database,
        kms: Arc<dyn Kms>,
        cache: DataKeyCache,
        limits: DataKeyLimits,
    ) -> Result<DataKeys, DataKeyError> {
        database.create_schema(SCHEMA, &[DATA_KEYS_TABLE]).await?;
        Ok(DataKeys {
            pool: database.pool,
            kms,
            cache,
            limits,
            shared: database.dialect == Dialect::Postgres,
        })
    }

    /// Returns the key database's pool, so that a rotated database password reaches it.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The cache's counters, for `/metrics`.
    pub fn cache_metrics(&self) -> Arc<super::cache::CacheMetrics> {
        Arc::clone(&self.cache.metrics)
    }

    /// Seals `plaintext` for `context` under a key of `subject`, making a key when the
    /// subject has none within its limits.
    ///
    /// # Errors
    /// KMS, database or envelope failures.
    pub async fn seal_field(
        &self,
        subject: &str,
        context: &FieldContext<'_>,
        plaintext: &[u8],
        now_micros: i64,
    ) -> Result<SealedField, DataKeyError> {
        let fields = [(*context, plaintext)];
        let sealed = self.seal_fields(subject, &fields, now_micros).await?;
        // One field in, one sealed field out.
        Ok(sealed.into_iter().next().expect("one sealed field"))
    }

    /// Seals several fields of one subject and ledger, reserving their messages on a key
    /// with one update per key instead of one per field.
    ///
    /// # Errors
    /// KMS, database or envelope failures.
    pub async fn seal_fields(
        &self,
        subject: &str,
        fields: &[(FieldContext<'_>, &[u8])],
        now_micros: i64,
    ) -> Result<Vec<SealedField>, DataKeyError> {
        let mut sealed = Vec::with_capacity(fields.len());
        let chunk = usize::try_from(self.limits.max_messages).unwrap_or(usize::MAX);
        for group in fields.chunks(chunk.max(1)) {
            let ledger_id = group[0].0.ledger_id;
            let count = u64::try_from(group.len()).unwrap_or(u64::MAX);
            let key = self
                .key_for_sealing(ledger_id, subject, now_micros, count)
                .await?;
            for (context, plaintext) in group {
                assert_eq!(context.ledger_id, ledger_id, "fields of one ledger");
                let mut nonce = [0u8; 12];
                getrandom::getrandom(&mut nonce).map_err(|error| {
                    KmsError::Local(format!("the system random source failed: {error}"))
                })?;
                sealed.push(key.seal(context, nonce, plaintext)?);
            }
        }
        Ok(sealed)
    }

    /// Opens a sealed field, or reports it erased when its key was destroyed.
    ///
    /// # Errors
    /// An unknown key, a KMS or database failure, or a field that fails authentication.
    pub async fn open_field(
        &self,
        context: &FieldContext<'_>,
        sealed: &SealedField,
    ) -> Result<Opened, DataKeyError> {
        let Some(key) = self.key(sealed.data_key_id).await? else {
            return Ok(Opened::Erased);
        };
        Ok(Opened::Plain(key.open(context, sealed)?))
    }

    /// Destroys every key of `subject` in `ledger_id`; returns their ids. Fields sealed
    /// under them read as [`Opened::Erased`] from then on.
    ///
    /// # Errors
    /// A database failure.
    pub async fn destroy_subject(
        &self,
        ledger_id: Uuid,
        subject: &str,
        now_micros: i64,
    ) -> Result<Vec<Uuid>, DataKeyError> {
        let mut transaction = self.pool.begin().await?;
        if !self.shared {
            // SQLite keeps a deleted value's bytes in free space unless `secure_delete` is
            // on, and a wrapped key left there could still be unwrapped by the KEK.
            sqlx::query("PRAGMA secure_delete = ON")
                .execute(&mut *transaction)
                .await?;
        }
        let rows = sqlx::query(
            "SELECT id FROM data_keys WHERE ledger_id = $1 AND subject = $2 \
             AND destroyed_at_micros IS NULL",
        )
        .bind(ledger_id.to_string())
        .bind(subject)
        .fetch_all(&mut *transaction)
        .await?;
        sqlx::query(
            "UPDATE data_keys SET wrapped = NULL, destroyed_at_micros = $1 \
             WHERE ledger_id = $2 AND subject = $3 AND destroyed_at_micros IS NULL",
        )
        .bind(now_micros)
        .bind(ledger_id.to_string())
        .bind(subject)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        if !self.shared && !rows.is_empty() {
            self.empty_write_ahead_log().await?;
        }

        let ids = rows
            .iter()
            .map(|row| parse_id(row.get("id")))
            .collect::<Result<Vec<_>, _>>()?;
        for id in &ids {
            self.cache.remove(*id);
        }
        Ok(ids)
    }

    /// Moves the SQLite write-ahead log, which still contains pages from before a
    /// destruction, into the file and empties it. While a reader uses the log the
    /// checkpoint reports busy, so it is retried for up to a second, then left to a later
    /// checkpoint with a warning.
    async fn empty_write_ahead_log(&self) -> Result<(), DataKeyError> {
        for _ in 0..20 {
            let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_one(&self.pool)
                .await?;
            if busy == 0 {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        tracing::warn!(
            "the data-key log could not be emptied after an erasure while readers held it; \
             the destroyed keys' old pages leave it at a later checkpoint"
        );
        Ok(())
    }

    /// Ids of the live (not destroyed) keys of `subject`.
    ///
    /// # Errors
    /// A database failure.
    pub async fn live_keys(
        &self,
        ledger_id: Uuid,
        subject: &str,
    ) -> Result<Vec<Uuid>, DataKeyError> {
        let rows = sqlx::query(
            "SELECT id FROM data_keys WHERE ledger_id = $1 AND subject = $2 \
             AND destroyed_at_micros IS NULL ORDER BY id",
        )
        .bind(ledger_id.to_string())
        .bind(subject)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| parse_id(row.get("id"))).collect()
    }

    /// Live (not destroyed) keys per KEK version: what a retirement must wait for.
    ///
    /// # Errors
    /// A database failure.
    pub async fn versions_in_use(&self) -> Result<BTreeMap<String, u64>, DataKeyError> {
        let rows = sqlx::query(
            "SELECT kek_version, COUNT(*) AS n FROM data_keys \
             WHERE destroyed_at_micros IS NULL GROUP BY kek_version",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|row| {
                let count: i64 = row.get("n");
                (row.get::<String, _>("kek_version"), count.max(0) as u64)
            })
            .collect())
    }

    /// Moves at most `batch` live keys wrapped by KEK version `from_version` to the
    /// KMS's current version. Each key is updated on its own, so a crash loses no work
    /// and the next call resumes with the keys still on the old version.
    ///
    /// # Errors
    /// KMS or database failures; keys moved before the failure stay moved.
    pub async fn rewrap_batch(
        &self,
        from_version: &str,
        batch: u32,
    ) -> Result<RewrapBatch, DataKeyError> {
        let rows = sqlx::query(
            "SELECT id, ledger_id, subject, provider, kek_id, kek_version, wrapped FROM data_keys \
             WHERE kek_version = $1 AND destroyed_at_micros IS NULL ORDER BY id LIMIT $2",
        )
        .bind(from_version)
        .bind(i64::from(batch))
        .fetch_all(&self.pool)
        .await?;
        let mut rewrapped = 0;
        let mut by_ledger: BTreeMap<Uuid, u64> = BTreeMap::new();
        let mut to_version = None;
        for row in &rows {
            let (id, ledger_id, subject, wrapped) = wrapped_row(row)?;
            let context = wrap_context(ledger_id, &subject, id);
            let new = self.kms.rewrap(&wrapped, &context).await?;
            if new.kek_version == from_version {
                // Rewrapping under the version it is already on would "move" the same
                // keys on every batch, for ever.
                return Err(DataKeyError::Kms(KmsError::Local(format!(
                    "KEK version {from_version} is the current version; rotate the KEK \
                     before rewrapping off it"
                ))));
            }
            let updated = sqlx::query(
                "UPDATE data_keys SET provider = $1, kek_id = $2, kek_version = $3, wrapped = $4 \
                 WHERE id = $5 AND kek_version = $6 AND destroyed_at_micros IS NULL",
            )
            .bind(&new.provider)
            .bind(&new.kek_id)
            .bind(&new.kek_version)
            .bind(&new.ciphertext)
            .bind(id.to_string())
            .bind(from_version)
            .execute(&self.pool)
            .await?;
            rewrapped += updated.rows_affected();
            *by_ledger.entry(ledger_id).or_default() += updated.rows_affected();
            to_version = Some(new.kek_version);
        }
        let remaining = self
            .versions_in_use()
            .await?
            .get(from_version)
            .copied()
            .unwrap_or(0);
        Ok(RewrapBatch {
            rewrapped,
            remaining,
            by_ledger,
            to_version,
        })
    }

    /// A key of the subject that may seal `count` more messages, with them reserved.
    async fn key_for_sealing(
        &self,
        ledger_id: Uuid,
        subject: &str,
        now_micros: i64,
        count: u64,
    ) -> Result<Arc<DataKey>, DataKeyError> {
        let newest = sqlx::query(
            "SELECT id, created_at_micros, messages FROM data_keys \
             WHERE ledger_id = $1 AND subject = $2 AND destroyed_at_micros IS NULL \
             ORDER BY created_at_micros DESC, id DESC LIMIT 1",
        )
        .bind(ledger_id.to_string())
        .bind(subject)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = newest {
            let id = parse_id(row.get("id"))?;
            let created: i64 = row.get("created_at_micros");
            let used = u64::try_from(row.get::<i64, _>("messages")).unwrap_or(u64::MAX);
            let fits = used.saturating_add(count) <= self.limits.max_messages;
            if fits
                && self.limits.allows(used, created, now_micros)
                && self.reserve(id, count).await?
            {
                if let Some(key) = self.key(id).await? {
                    return Ok(key);
                }
            }
        }
        self.create(ledger_id, subject, now_micros, count).await
    }

    /// Counts `count` more messages against key `id` if they fit under the limit.
    async fn reserve(&self, id: Uuid, count: u64) -> Result<bool, DataKeyError> {
        let max = i64::try_from(self.limits.max_messages).unwrap_or(i64::MAX);
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        let updated = sqlx::query(
            "UPDATE data_keys SET messages = messages + $1 \
             WHERE id = $2 AND messages + $3 <= $4 AND destroyed_at_micros IS NULL",
        )
        .bind(count)
        .bind(id.to_string())
        .bind(count)
        .bind(max)
        .execute(&self.pool)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Makes, wraps and stores a new key for the subject, with its first `count` messages
    /// counted.
    async fn create(
        &self,
        ledger_id: Uuid,
        subject: &str,
        now_micros: i64,
        count: u64,
    ) -> Result<Arc<DataKey>, DataKeyError> {
        let id = Uuid::now_v7();
        let bytes = random_key()?;
        let wrapped = self
            .kms
            .wrap(&bytes, &wrap_context(ledger_id, subject, id))
            .await?;
        sqlx::query(
            "INSERT INTO data_keys (id, ledger_id, subject, provider, kek_id, kek_version, \
             wrapped, created_at_micros, messages) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(id.to_string())
        .bind(ledger_id.to_string())
        .bind(subject)
        .bind(&wrapped.provider)
        .bind(&wrapped.kek_id)
        .bind(&wrapped.kek_version)
        .bind(&wrapped.ciphertext)
        .bind(now_micros)
        .bind(i64::try_from(count).unwrap_or(i64::MAX))
        .execute(&self.pool)
        .await?;
        let key = Arc::new(DataKey::new(id, bytes));
        self.cache.insert(Arc::clone(&key), Instant::now());
        Ok(key)
    }

    /// The unwrapped key `id`: from the cache, else unwrapped by the KMS; `None` when it
    /// was destroyed.
    async fn key(&self, id: Uuid) -> Result<Option<Arc<DataKey>>, DataKeyError> {
        if let Some(key) = self.cache.get(id, Instant::now()) {
            if self.shared && self.destroyed_elsewhere(id).await? {
                self.cache.remove(id);
                return Ok(None);
            }
            return Ok(Some(key));
        }
        let row = sqlx::query(
            "SELECT id, ledger_id, subject, provider, kek_id, kek_version, wrapped, \
             destroyed_at_micros FROM data_keys WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?
        .ok_or(DataKeyError::UnknownKey(id))?;
        if row.get::<Option<i64>, _>("destroyed_at_micros").is_some() {
            return Ok(None);
        }
        let (id, ledger_id, subject, wrapped) = wrapped_row(&row)?;
        let bytes = self
            .kms
            .unwrap(&wrapped, &wrap_context(ledger_id, &subject, id))
            .await?;
        let key = Arc::new(DataKey::new(id, bytes));
        self.cache.insert(Arc::clone(&key), Instant::now());
        Ok(Some(key))
    }
}

impl DataKeys {
    /// Returns whether key `id`, found in this node's cache, has been destroyed since it
    /// was cached, by this node or another one sharing the table. One primary-key read.
    async fn destroyed_elsewhere(&self, id: Uuid) -> Result<bool, DataKeyError> {
        let destroyed: Option<Option<i64>> =
            sqlx::query_scalar("SELECT destroyed_at_micros FROM data_keys WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?;
        // A cached key whose row is gone was removed outside Folio: treat it as destroyed,
        // since nothing could unwrap it again.
        Ok(destroyed.is_none_or(|at| at.is_some()))
    }
}

/// The context a data key is wrapped with: it binds the wrapped bytes to their row.
fn wrap_context(ledger_id: Uuid, subject: &str, id: Uuid) -> Vec<u8> {
    format!("folio/data-key/v1|{ledger_id}|{subject}|{id}").into_bytes()
}

fn parse_id(text: String) -> Result<Uuid, DataKeyError> {
    Uuid::parse_str(&text).map_err(|_| DataKeyError::Corrupt(Uuid::nil(), format!("id {text:?}")))
}

fn wrapped_row(row: &AnyRow) -> Result<(Uuid, Uuid, String, WrappedKey), DataKeyError> {
    let id = parse_id(row.get("id"))?;
    let ledger_id = Uuid::parse_str(&row.get::<String, _>("ledger_id"))
        .map_err(|_| DataKeyError::Corrupt(id, "ledger id".to_owned()))?;
    let ciphertext: Option<Vec<u8>> = row.get("wrapped");
    let ciphertext =
        ciphertext.ok_or_else(|| DataKeyError::Corrupt(id, "no wrapped key".to_owned()))?;
    let wrapped = WrappedKey {
        provider: row.get("provider"),
        kek_id: row.get("kek_id"),
        kek_version: row.get("kek_version"),
        ciphertext,
    };
    Ok((id, ledger_id, row.get("subject"), wrapped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kms::local::LocalKms;
    use std::time::Duration;

    async fn keys(dir: &Path, max_messages: u64) -> (DataKeys, Arc<LocalKms>) {
        let kms = Arc::new(LocalKms::open(&dir.join("kek")).unwrap());
        let limits = DataKeyLimits {
            max_messages,
            max_age_micros: 1_000_000,
        };
        let cache = DataKeyCache::new(Duration::from_secs(60), 16);
        let store = DataKeys::open(&dir.join("dk.sqlite"), kms.clone(), cache, limits)
            .await
            .unwrap();
        (store, kms)
    }

    fn place(field: &str) -> FieldContext<'_> {
        FieldContext {
            ledger_id: Uuid::from_u128(1),
            stream: "allowlist",
            event_id: Uuid::from_u128(2),
            field,
        }
    }

    #[tokio::test]
    async fn seal_open_and_erase() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = keys(dir.path(), 100).await;
        let sealed = store
            .seal_field("payee:9", &place("name"), b"Jane Citizen", 0)
            .await
            .unwrap();
        let opened = store.open_field(&place("name"), &sealed).await.unwrap();
        assert_eq!(
            opened,
            Opened::Plain(Zeroizing::new(b"Jane Citizen".to_vec()))
        );
        assert!(store.open_field(&place("account"), &sealed).await.is_err());
        let wrapped: Vec<u8> = sqlx::query_scalar("SELECT wrapped FROM data_keys")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert!(
            files_hold(dir.path(), &wrapped),
            "the wrapped key is stored"
        );

        let destroyed = store
            .destroy_subject(Uuid::from_u128(1), "payee:9", 5)
            .await
            .unwrap();
        assert_eq!(destroyed, vec![sealed.data_key_id]);
        assert_eq!(
            store.open_field(&place("name"), &sealed).await.unwrap(),
            Opened::Erased
        );
        // Neither the database file nor its write-ahead log keeps the wrapped bytes.
        assert!(
            !files_hold(dir.path(), &wrapped),
            "the wrapped key outlived its erasure"
        );
    }

    /// Returns whether any `dk.sqlite*` file under `dir` contains `needle`.
    fn files_hold(dir: &Path, needle: &[u8]) -> bool {
        std::fs::read_dir(dir).unwrap().any(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with("dk.sqlite")
                && std::fs::read(&path)
                    .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
        })
    }

    #[tokio::test]
    async fn limits_make_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = keys(dir.path(), 2).await;
        let a = store.seal_field("s", &place("f"), b"1", 0).await.unwrap();
        let b = store.seal_field("s", &place("f"), b"2", 1).await.unwrap();
        let c = store.seal_field("s", &place("f"), b"3", 2).await.unwrap();
        assert_eq!(a.data_key_id, b.data_key_id);
        assert_ne!(
            b.data_key_id, c.data_key_id,
            "the third message needs a new key"
        );
        let d = store
            .seal_field("s", &place("f"), b"4", 2_000_000)
            .await
            .unwrap();
        assert_ne!(c.data_key_id, d.data_key_id, "an old key stops sealing");
        for (sealed, text) in [(a, b"1"), (c, b"3")] {
            let opened = store.open_field(&place("f"), &sealed).await.unwrap();
            assert_eq!(opened, Opened::Plain(Zeroizing::new(text.to_vec())));
        }
    }

    #[tokio::test]
    async fn rewrap_moves_keys_in_batches() {
        let dir = tempfile::tempdir().unwrap();
        let (store, kms) = keys(dir.path(), 100).await;
        let mut sealed = Vec::new();
        for subject in ["a", "b", "c"] {
            sealed.push(
                store
                    .seal_field(subject, &place("f"), subject.as_bytes(), 0)
                    .await
                    .unwrap(),
            );
        }
        kms.rotate().await.unwrap();
        let first = store.rewrap_batch("1", 2).await.unwrap();
        assert_eq!((first.rewrapped, first.remaining), (2, 1));
        assert_eq!(first.to_version.as_deref(), Some("2"));
        assert_eq!(first.by_ledger.get(&Uuid::from_u128(1)), Some(&2));
        let second = store.rewrap_batch("1", 2).await.unwrap();
        assert_eq!((second.rewrapped, second.remaining), (1, 0));
        assert_eq!(
            store
                .versions_in_use()
                .await
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["2"]
        );
        kms.retire(1).unwrap();

        // A fresh store (empty cache) unwraps every key with version 2 alone.
        drop(store);
        let (store, _) = keys(dir.path(), 100).await;
        for (field, subject) in sealed.iter().zip(["a", "b", "c"]) {
            let opened = store.open_field(&place("f"), field).await.unwrap();
            assert_eq!(
                opened,
                Opened::Plain(Zeroizing::new(subject.as_bytes().to_vec()))
            );
        }
    }
}
