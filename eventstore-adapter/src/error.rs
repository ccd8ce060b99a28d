//! Store errors: business conflicts apart from operating failures.

/// Failure of a backend operation (disk, database, corruption).
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Another writer moved the head since the batch was sealed.
    #[error("ledger {ledger_id} head moved during commit; expected position {expected:?}")]
    HeadMoved {
        /// Ledger id.
        ledger_id: uuid::Uuid,
        /// Expected head position.
        expected: Option<u64>,
    },
    /// Stored bytes did not decode or did not match their index columns.
    #[error("corrupt record at ledger {ledger_id} position {position}: {reason}")]
    Corrupt {
        /// Ledger id.
        ledger_id: uuid::Uuid,
        /// Position.
        position: u64,
        /// What is wrong.
        reason: String,
    },
    /// A uniqueness rule of the store was broken (duplicate event id, stream version or key).
    #[error("constraint violated in ledger {ledger_id}: {reason}")]
    ConstraintViolation {
        /// Ledger id.
        ledger_id: uuid::Uuid,
        /// Which rule.
        reason: String,
    },
    /// The backend cannot take writes (opened read-only, or failing).
    #[error("backend unavailable: {0}")]
    Unavailable(String),
}

/// Error returned by [`crate::EventStore`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A stream was not at the expected version; nothing of the append was stored.
    #[error("stream {stream_id} is at version {actual:?}, expected {expected:?}")]
    WrongExpectedVersion {
        /// Stream id.
        stream_id: String,
        /// Expected version.
        expected: crate::ExpectedVersion,
        /// Actual last version, `None` if the stream does not exist.
        actual: Option<u64>,
    },
    /// The idempotency key was used before with a different request.
    #[error("idempotency key {key:?} was already used with a different request")]
    IdempotencyKeyReused {
        /// The key.
        key: String,
        /// The stored record, so the caller can name the difference.
        stored: Box<crate::IdempotencyRecord>,
    },
    /// No ledger with this id.
    #[error("ledger {0} not found")]
    LedgerNotFound(uuid::Uuid),
    /// A ledger with this id already exists.
    #[error("ledger {0} already exists")]
    LedgerExists(uuid::Uuid),
    /// The request is malformed (empty, duplicate streams, oversized).
    #[error("invalid append: {0}")]
    InvalidAppend(String),
    /// The ledger's stored chain failed verification, so appends to it are refused.
    #[error(
        "ledger {ledger_id} is quarantined because its stored chain failed verification \
         ({reason}); nothing is appended until the store is repaired and the server restarted"
    )]
    LedgerQuarantined {
        /// Ledger id.
        ledger_id: uuid::Uuid,
        /// The verification failure.
        reason: String,
    },
    /// The sequencer has shut down.
    #[error("the sequencer for ledger {0} has stopped")]
    SequencerStopped(uuid::Uuid),
    /// The ledger's chain names a signing key that is not in the store's key ring.
    #[error("ledger {ledger_id} is signed by key {public_key_hex}, which is not in the key ring")]
    KeyNotInRing {
        /// Ledger id.
        ledger_id: uuid::Uuid,
        /// Hex of the public key the chain names as current.
        public_key_hex: String,
    },
    /// The group commit that carried this append failed. Every append of the group gets this
    /// error, and the backend reported that none of their events were stored. Retrying with the
    /// same idempotency key is safe.
    #[error("group commit failed: {0}")]
    CommitFailed(std::sync::Arc<BackendError>),
    /// The backend failed; the append may not be assumed durable.
    #[error(transparent)]
    Backend(#[from] BackendError),
}
