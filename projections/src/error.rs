//! Projection errors: operating failures apart from broken history.

use domain::events::PayloadError;
use uuid::Uuid;

/// Failure of the projection engine or of a read-model query.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// The read-model database failed.
    #[error("read-model database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The event store failed while the runner read from it.
    #[error("event store error: {0}")]
    Store(#[from] eventstore_adapter::StoreError),
    /// The store subscription ended without an error; the runner subscribes again.
    #[error("ledger {ledger_id}: the event subscription ended")]
    SubscriptionEnded {
        /// Ledger id.
        ledger_id: Uuid,
    },
    /// An event does not follow the checkpoint: a position is missing or repeated.
    #[error("ledger {ledger_id}: expected position {expected}, found position {found}")]
    Gap {
        /// Ledger id.
        ledger_id: Uuid,
        /// Position that should come next.
        expected: u64,
        /// Position received.
        found: u64,
    },
    /// An event's previous hash is not the hash the read models last applied.
    #[error("ledger {ledger_id}: broken hash link at position {position}: prev_hash {found}, expected {expected}")]
    BrokenLink {
        /// Ledger id.
        ledger_id: Uuid,
        /// Position of the event that does not link.
        position: u64,
        /// Hash of the last applied event (hex).
        expected: String,
        /// The event's previous hash (hex).
        found: String,
    },
    /// An event belongs to a different ledger than the one being projected.
    #[error("ledger {ledger_id}: event at position {position} belongs to ledger {found}")]
    WrongLedger {
        /// Ledger being projected.
        ledger_id: Uuid,
        /// Position of the event.
        position: u64,
        /// Ledger the event names.
        found: Uuid,
    },
    /// The payload of a known event type does not decode.
    #[error("ledger {ledger_id}: payload at position {position} does not decode: {source}")]
    Payload {
        /// Ledger id.
        ledger_id: Uuid,
        /// Position of the event.
        position: u64,
        /// Decoder error.
        source: PayloadError,
    },
    /// Sealed fields of an event could not be opened (KMS or key store failure).
    #[error("ledger {ledger_id}: sealed fields at position {position} cannot be opened: {reason}")]
    Opening {
        /// Ledger id.
        ledger_id: Uuid,
        /// Position of the event.
        position: u64,
        /// What failed.
        reason: String,
    },
    /// An event contradicts the read models, such as a receipt for an unknown payment.
    #[error("ledger {ledger_id}: event at position {position} is inconsistent: {reason}")]
    Inconsistent {
        /// Ledger id.
        ledger_id: Uuid,
        /// Position of the event.
        position: u64,
        /// Description of the contradiction.
        reason: String,
    },
    /// A number does not fit the database's signed 64-bit integer.
    #[error("{field} value {value} is out of range for a 64-bit signed column")]
    OutOfRange {
        /// Column or field name.
        field: &'static str,
        /// The value.
        value: u64,
    },
    /// A stored row contains a value this code never writes.
    #[error("corrupt read-model row in {table}: {reason}")]
    CorruptRow {
        /// Table name.
        table: &'static str,
        /// Description of the problem.
        reason: String,
    },
    /// A query parameter is invalid.
    #[error("invalid query parameter {name}: {reason}")]
    InvalidQuery {
        /// Parameter name.
        name: &'static str,
        /// Description of the problem and the accepted form.
        reason: String,
    },
}

impl ProjectionError {
    /// Returns the position of the event this error is about, if it is about one event.
    pub fn position(&self) -> Option<u64> {
        match self {
            ProjectionError::Gap { found, .. } => Some(*found),
            ProjectionError::BrokenLink { position, .. }
            | ProjectionError::WrongLedger { position, .. }
            | ProjectionError::Payload { position, .. }
            | ProjectionError::Opening { position, .. }
            | ProjectionError::Inconsistent { position, .. } => Some(*position),
            _ => None,
        }
    }

    /// Returns whether retrying cannot help, because the event history itself is at fault.
    ///
    /// The runner stops a ledger for good on these and retries the others after a pause.
    pub fn is_permanent(&self) -> bool {
        match self {
            // A store that reports a corrupt record (such as a gap it found itself) will
            // report it again on every retry.
            ProjectionError::Store(eventstore_adapter::StoreError::Backend(
                eventstore_adapter::BackendError::Corrupt { .. },
            )) => true,
            ProjectionError::Database(_)
            | ProjectionError::Store(_)
            | ProjectionError::SubscriptionEnded { .. } => false,
            _ => true,
        }
    }
}
