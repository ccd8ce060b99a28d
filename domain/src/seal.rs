//! Sealing: assigning the hash chain and signing events.
//!
//! The store owns positions and stream versions and calls [`Sealer::seal_batch`]
//! under its append lock. Hashing is sequential because each hash covers the
//! previous one; signing runs in parallel.

use std::sync::Arc;

use rayon::prelude::*;
use uuid::Uuid;

use crate::checkpoint::SignedCheckpoint;
use crate::clock::Clock;
use crate::crypto::{KeyId, LedgerKey};
use crate::events::{EventPayload, LedgerCreated, LedgerKeyRotated};
use crate::record::{
    Actor, EventDraft, HashAlg, SealedEvent, SigAlg, SignedHead, FORMAT_VERSION, GENESIS_PREV_HASH,
    HASH_LEN,
};

/// Stream that carries the ledger's own events (genesis and key rotations).
pub const LEDGER_STREAM: &str = "ledger";

/// Domain-separation prefix for the genesis event id.
const GENESIS_EVENT_ID_PREFIX: &[u8] = b"folio/genesis-event-id/v1\0";

/// Domain-separation prefix for key-rotation event ids.
const ROTATION_EVENT_ID_PREFIX: &[u8] = b"folio/rotation-event-id/v1\0";

/// State of a ledger's chain that the next sealed event extends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainTip {
    /// Ledger id.
    pub ledger_id: Uuid,
    /// Position the next event receives.
    pub next_position: u64,
    /// Hash of the event at `next_position - 1`.
    pub prev_hash: [u8; HASH_LEN],
    /// Time of the last sealed event; later events never carry an earlier time.
    pub last_recorded_at_micros: i64,
}

/// A position-assigned event waiting to be sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsealed {
    /// Stream id.
    pub stream_id: String,
    /// Version within the stream, assigned by the store.
    pub stream_version: u64,
    /// The event.
    pub draft: EventDraft,
}

/// Seals events with one ledger key and one clock.
#[derive(Clone)]
pub struct Sealer {
    key: Arc<LedgerKey>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("key_id", &self.key.key_id())
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// Creates a sealer that signs with `key` and timestamps with `clock`.
    pub fn new(key: Arc<LedgerKey>, clock: Arc<dyn Clock>) -> Self {
        Sealer { key, clock }
    }

    /// Returns the id of the signing key.
    pub fn key_id(&self) -> KeyId {
        self.key.key_id()
    }

    /// Seals the genesis event (position 0, stream `ledger`, version 0, type
    /// `ledger.created`) naming this sealer's public key.
    ///
    /// The genesis event id is derived from the ledger id, so the same ledger
    /// id always yields the same genesis event id.
    pub fn genesis(
        &self,
        ledger_id: Uuid,
        tenant: &str,
        actor: Actor,
        correlation_id: Uuid,
    ) -> (SealedEvent, ChainTip) {
        let payload = LedgerCreated {
            key_algorithm: SigAlg::Ed25519 as u8,
            public_key: self.key.public_key(),
            tenant: tenant.to_owned(),
        };
        let draft = EventDraft {
            event_id: derived_event_id(GENESIS_EVENT_ID_PREFIX, &[ledger_id.as_bytes()]),
            event_type: LedgerCreated::EVENT_TYPE.to_owned(),
            schema_version: LedgerCreated::SCHEMA_VERSION,
            actor,
            correlation_id,
            causation_id: None,
            payload: payload.encode(),
        };
        let mut tip = ChainTip {
            ledger_id,
            next_position: 0,
            prev_hash: GENESIS_PREV_HASH,
            last_recorded_at_micros: i64::MIN,
        };
        let item = Unsealed {
            stream_id: LEDGER_STREAM.to_owned(),
            stream_version: 0,
            draft,
        };
        let mut sealed = self.seal_batch(&mut tip, vec![item]);
        // seal_batch returns exactly one event per item.
        let genesis = sealed.remove(0);
        (genesis, tip)
    }

    /// Seals events in order: hashes sequentially, signs in parallel.
    ///
    /// Each event's time is the later of the clock and the previous event's
    /// time, so recorded times never go backwards. Advances `tip`.
    ///
    /// # Panics
    /// Panics if a draft is over a length limit (check with
    /// [`EventDraft::check_limits`] first) or the position would overflow.
    pub fn seal_batch(&self, tip: &mut ChainTip, items: Vec<Unsealed>) -> Vec<SealedEvent> {
        let mut events: Vec<SealedEvent> = items
            .into_iter()
            .map(|item| self.chain_one(tip, item))
            .collect();

        // Each signature covers only its own hash, so order does not matter here.
        events.par_iter_mut().for_each(|event| {
            event.signature = self.key.sign_event_hash(&event.hash);
        });
        events
    }

    /// Fills in the chain fields and hash of one event and advances `tip`.
    fn chain_one(&self, tip: &mut ChainTip, item: Unsealed) -> SealedEvent {
        if let Err(error) = item.draft.check_limits() {
            panic!("draft {} over a record limit: {error}", item.draft.event_id);
        }
        let recorded_at_micros = self.clock.now_micros().max(tip.last_recorded_at_micros);
        let mut event = SealedEvent {
            format_version: FORMAT_VERSION,
            hash_alg: HashAlg::Blake3,
            sig_alg: SigAlg::Ed25519,
            ledger_id: tip.ledger_id,
            position: tip.next_position,
            stream_id: item.stream_id,
            stream_version: item.stream_version,
            event_id: item.draft.event_id,
            event_type: item.draft.event_type,
            schema_version: item.draft.schema_version,
            recorded_at_micros,
            actor: item.draft.actor,
            correlation_id: item.draft.correlation_id,
            causation_id: item.draft.causation_id,
            payload: item.draft.payload,
            prev_hash: tip.prev_hash,
            key_id: self.key.key_id(),
            hash: [0; HASH_LEN],
            signature: [0; crate::record::SIGNATURE_LEN],
        };
        event.hash = event.compute_hash();

        tip.next_position = tip
            .next_position
            .checked_add(1)
            .expect("ledger position overflow");
        tip.prev_hash = event.hash;
        tip.last_recorded_at_micros = recorded_at_micros;
        event
    }

    /// Signs a head (ledger id, position, hash) and returns the encoded signed-head record.
    pub fn sign_head(&self, ledger_id: Uuid, position: u64, head_hash: [u8; HASH_LEN]) -> Vec<u8> {
        let message = SignedHead::signature_message(ledger_id, position, &head_hash);
        let head = SignedHead {
            format_version: FORMAT_VERSION,
            hash_alg: HashAlg::Blake3,
            sig_alg: SigAlg::Ed25519,
            ledger_id,
            position,
            head_hash,
            key_id: self.key.key_id(),
            signature: self.key.sign(&message),
        };
        head.to_bytes()
    }

    /// Signs a checkpoint of the tree over the first `tree_size` events with this sealer's key.
    pub fn sign_checkpoint(
        &self,
        ledger_id: Uuid,
        tree_size: u64,
        head_hash: [u8; HASH_LEN],
        merkle_root: [u8; HASH_LEN],
    ) -> SignedCheckpoint {
        let message =
            SignedCheckpoint::signature_message(ledger_id, tree_size, &head_hash, &merkle_root);
        SignedCheckpoint {
            ledger_id,
            tree_size,
            head_hash,
            merkle_root,
            key_id: self.key.key_id(),
            signature: self.key.sign(&message),
        }
    }

    /// Builds the `ledger.key_rotated` draft (to be sealed by this sealer, the
    /// old key, on stream `ledger`) and returns the sealer to use for every
    /// event after it.
    ///
    /// The event id is derived from the correlation id and the new key id.
    pub fn rotation_draft(
        &self,
        new_key: Arc<LedgerKey>,
        actor: Actor,
        correlation_id: Uuid,
        reason: &str,
    ) -> (EventDraft, Sealer) {
        let payload = LedgerKeyRotated {
            key_algorithm: SigAlg::Ed25519 as u8,
            new_public_key: new_key.public_key(),
            reason: reason.to_owned(),
        };
        let new_key_id = new_key.key_id();
        let draft = EventDraft {
            event_id: derived_event_id(
                ROTATION_EVENT_ID_PREFIX,
                &[correlation_id.as_bytes(), &new_key_id.0],
            ),
            event_type: LedgerKeyRotated::EVENT_TYPE.to_owned(),
            schema_version: LedgerKeyRotated::SCHEMA_VERSION,
            actor,
            correlation_id,
            causation_id: None,
            payload: payload.encode(),
        };
        (draft, Sealer::new(new_key, Arc::clone(&self.clock)))
    }
}

/// Derives a UUIDv7 from a domain-separation prefix and parts, for events whose
/// id must be reproducible without randomness.
///
/// The 48-bit time field is copied from the first part when that part is a
/// UUIDv7 (the ledger id of a genesis event, the correlation id of a rotation),
/// and is zero otherwise. The 74 random bits come from BLAKE3 over the prefix and
/// the parts.
pub(crate) fn derived_event_id(prefix: &[u8], parts: &[&[u8]]) -> Uuid {
    let mut hasher = blake3::Hasher::new();
    hasher.update(prefix);
    for part in parts {
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let millis = parts
        .first()
        .and_then(|first| Uuid::from_slice(first).ok())
        .filter(|id| id.get_version_num() == 7)
        .and_then(|id| id.get_timestamp())
        .map_or(0, |timestamp| {
            let (seconds, nanos) = timestamp.to_unix();
            seconds * 1_000 + u64::from(nanos / 1_000_000)
        });
    let mut random = [0u8; 10];
    random.copy_from_slice(&digest.as_bytes()[..10]);
    uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_id_is_v7_with_ledger_time() {
        let ledger_id = Uuid::parse_str("01941a2b-0000-7000-8000-00a000000001").unwrap();
        let id = derived_event_id(GENESIS_EVENT_ID_PREFIX, &[ledger_id.as_bytes()]);
        assert_eq!(id.get_version_num(), 7);
        assert_eq!(id.get_timestamp(), ledger_id.get_timestamp());
        assert_eq!(
            id,
            derived_event_id(GENESIS_EVENT_ID_PREFIX, &[ledger_id.as_bytes()])
        );
        let other = derived_event_id(ROTATION_EVENT_ID_PREFIX, &[ledger_id.as_bytes()]);
        assert_ne!(id, other, "the prefix separates genesis and rotation ids");
    }
}
