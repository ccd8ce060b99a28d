//! Value types shared by the store facade, the sequencer and the backends.

use domain::record::{EventDraft, SealedEvent, HASH_LEN};
use uuid::Uuid;

/// The version a stream must be at for an append to succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// The stream must not exist yet.
    NoStream,
    /// Any state, including no stream.
    Any,
    /// The stream's last event must have exactly this version.
    Exact(u64),
}

/// Events for one stream inside an append.
#[derive(Debug, Clone)]
pub struct StreamWrite {
    /// Stream id.
    pub stream_id: String,
    /// Version the stream must be at.
    pub expected: ExpectedVersion,
    /// Events to append, in order. An empty list only checks `expected`, so a decision can
    /// rest on a stream it does not change (at least one write of an append has events).
    pub events: Vec<EventDraft>,
}

/// A claim on an idempotency key, stored in the same transaction as the events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyClaim {
    /// The client's `Idempotency-Key`, scoped to the ledger.
    pub key: String,
    /// blake3 of the canonical request (method, path, body).
    pub request_hash: [u8; HASH_LEN],
    /// Canonical request bytes, kept so a mismatch can name the difference.
    pub request: Vec<u8>,
    /// HTTP status of the original response.
    pub response_status: u16,
    /// Original response body (JSON).
    pub response_body: Vec<u8>,
}

/// A stored idempotency key and the result it produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// The claim as first stored.
    pub claim: IdempotencyClaim,
    /// Position of the first event of the original append.
    pub first_position: u64,
    /// Position of the last event of the original append.
    pub last_position: u64,
}

/// An atomic append: one or more streams, all committed or none.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    /// Per-stream writes; stream ids must be distinct.
    pub writes: Vec<StreamWrite>,
    /// Idempotency key claimed by this append, if any.
    pub idempotency: Option<IdempotencyClaim>,
}

/// Positions and versions of a committed append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendResult {
    /// Position of the first event appended.
    pub first_position: u64,
    /// Position of the last event appended.
    pub last_position: u64,
    /// Hash of the last event appended.
    pub last_hash: [u8; HASH_LEN],
    /// New last version of each stream that received events, in request order.
    pub stream_versions: Vec<(String, u64)>,
}

/// Result of [`crate::EventStore::append`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The events were sealed and are durable.
    Committed(AppendResult),
    /// The idempotency key was already used with the same request; nothing was appended.
    Duplicate(IdempotencyRecord),
}

/// The tip of a ledger's chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    /// Ledger id.
    pub ledger_id: Uuid,
    /// Position of the last event.
    pub position: u64,
    /// Hash of the last event.
    pub hash: [u8; HASH_LEN],
}

/// A chain head signed by the ledger key after each commit, so a cut tail is detectable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHead {
    /// The head.
    pub head: ChainHead,
    /// Encoded signed-head record (see `domain::export`).
    pub record: Vec<u8>,
}

/// A ledger known to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerInfo {
    /// Ledger id.
    pub ledger_id: Uuid,
    /// Tenant the ledger belongs to.
    pub tenant: String,
    /// Current head.
    pub head: ChainHead,
}

/// Events, idempotency claims and signed head that a backend commits in one transaction.
#[derive(Debug, Clone)]
pub struct CommitBatch {
    /// Ledger written.
    pub ledger_id: Uuid,
    /// Head the batch extends; `None` when the batch starts with the genesis event.
    pub expected_head: Option<ChainHead>,
    /// Sealed events in position order.
    pub events: Vec<SealedEvent>,
    /// Idempotency claims with the positions they cover.
    pub idempotency: Vec<IdempotencyRecord>,
    /// Signed head after the batch.
    pub signed_head: SignedHead,
}
