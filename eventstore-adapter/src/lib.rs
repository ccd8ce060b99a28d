//! Folio's event store: the storage trait every backend implements, the
//! per-ledger sequencer that seals and group-commits appends, and the backends
//! (in-memory for unit tests, SQLite as the embedded default, PostgreSQL for several nodes).
//!
//! Callers use [`EventStore`]; backends implement [`Backend`]. The sequencer is
//! the only code that assigns positions, stream versions and hashes, so every
//! backend gets the same chain rules.

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod checkpoints;
mod error;
#[cfg(feature = "kurrentdb")]
pub mod kurrentdb;
pub mod memory;
pub mod postgres;
mod sequencer;
pub mod sqlite;
mod store;
mod subscription;
mod types;

pub use checkpoints::CheckpointPolicy;
pub use error::{BackendError, StoreError};
pub use store::{Backend, EventStore, MAX_APPEND_BYTES, MAX_EVENTS_PER_APPEND, MAX_READ_LIMIT};
pub use subscription::Subscription;
pub use types::{
    AppendOutcome, AppendRequest, AppendResult, ChainHead, CommitBatch, ExpectedVersion,
    IdempotencyClaim, IdempotencyRecord, LedgerInfo, SignedHead, StreamWrite,
};
