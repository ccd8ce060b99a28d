//! Signed checkpoints: a ledger key's statement of the Merkle root over the first `tree_size`
//! events, recorded in the chain itself as `ledger.checkpoint` events.
//!
//! A checkpoint is a fixed 192-byte record (see `docs/ledger-format.md`), so it can be handed
//! to a witness on its own and checked without the chain: the signature covers the ledger id,
//! the tree size, the head hash at that size and the root.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::crypto::{self, KeyId, SignatureError, KEY_ID_LEN, PUBLIC_KEY_LEN};
use crate::events::EventPayload;
use crate::merkle::{Frontier, Hash};
use crate::record::{
    Actor, EventDraft, HashAlg, Reader, RecordError, SealedEvent, SigAlg, FORMAT_VERSION,
    SIGNATURE_LEN,
};
use crate::seal::{derived_event_id, ChainTip, Sealer, Unsealed};

/// Stream of the checkpoint events. Only the store writes to it.
pub const CHECKPOINT_STREAM: &str = "$checkpoints";

/// Magic bytes that open an encoded checkpoint (the trailing NUL is part of them).
pub const CHECKPOINT_MAGIC: &[u8] = b"folio/checkpoint/v1\0";

/// Domain-separation prefix of checkpoint signatures (the trailing NUL is part of it).
pub const CHECKPOINT_SIGNATURE_PREFIX: &[u8] = b"folio/checkpoint-signature/v1\0";

/// Length of an encoded signed checkpoint in bytes.
pub const CHECKPOINT_LEN: usize =
    CHECKPOINT_MAGIC.len() + 2 + 1 + 1 + 16 + 8 + 32 + 32 + KEY_ID_LEN + SIGNATURE_LEN;

const _: () = assert!(CHECKPOINT_LEN == 192);

/// A signed statement of the Merkle root and head hash of a ledger at a tree size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// Ledger the checkpoint belongs to.
    pub ledger_id: Uuid,
    /// Number of events the tree covers (positions `0..tree_size`).
    pub tree_size: u64,
    /// Hash of the event at position `tree_size - 1`.
    pub head_hash: Hash,
    /// Merkle root over the first `tree_size` event hashes.
    pub merkle_root: Hash,
    /// Id of the key that signed the checkpoint.
    pub key_id: KeyId,
    /// Ed25519 signature over [`SignedCheckpoint::signature_message`].
    pub signature: [u8; SIGNATURE_LEN],
}

/// The payload of a `ledger.checkpoint` event: the encoded signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerCheckpoint {
    /// A [`SignedCheckpoint`] in its 192-byte encoding.
    pub signed_checkpoint: Vec<u8>,
}

impl EventPayload for LedgerCheckpoint {
    const EVENT_TYPE: &'static str = "ledger.checkpoint";
    const SCHEMA_VERSION: u16 = 1;
}

/// A checkpoint cannot be decoded or does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The bytes are not a checkpoint record.
    #[error("checkpoint cannot be decoded: {0}")]
    Decode(#[from] RecordError),
    /// The checkpoint does not start with `folio/checkpoint/v1` NUL.
    #[error("checkpoint does not start with the magic bytes folio/checkpoint/v1")]
    BadMagic,
    /// The key id is not the id of the public key given.
    #[error("checkpoint is signed by key {found}, expected key {expected}")]
    WrongKey {
        /// Key id in the checkpoint.
        found: KeyId,
        /// Key id of the public key checked against.
        expected: KeyId,
    },
    /// The signature does not verify strictly.
    #[error("checkpoint signature does not verify: {0}")]
    Signature(#[from] SignatureError),
}

impl SignedCheckpoint {
    /// Builds the message a checkpoint signature covers:
    /// `folio/checkpoint-signature/v1` NUL, ledger id, tree size (u64 BE), head hash, root.
    pub fn signature_message(
        ledger_id: Uuid,
        tree_size: u64,
        head_hash: &Hash,
        merkle_root: &Hash,
    ) -> Vec<u8> {
        let mut message = Vec::with_capacity(CHECKPOINT_SIGNATURE_PREFIX.len() + 16 + 8 + 64);
        message.extend_from_slice(CHECKPOINT_SIGNATURE_PREFIX);
        message.extend_from_slice(ledger_id.as_bytes());
        message.extend_from_slice(&tree_size.to_be_bytes());
        message.extend_from_slice(head_hash);
        message.extend_from_slice(merkle_root);
        message
    }

    /// Encodes the checkpoint in its fixed 192-byte layout.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(CHECKPOINT_LEN);
        out.extend_from_slice(CHECKPOINT_MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        out.push(HashAlg::Blake3 as u8);
        out.push(SigAlg::Ed25519 as u8);
        out.extend_from_slice(self.ledger_id.as_bytes());
        out.extend_from_slice(&self.tree_size.to_be_bytes());
        out.extend_from_slice(&self.head_hash);
        out.extend_from_slice(&self.merkle_root);
        out.extend_from_slice(&self.key_id.0);
        out.extend_from_slice(&self.signature);
        assert_eq!(out.len(), CHECKPOINT_LEN, "checkpoint layout length");
        out
    }

    /// Decodes a checkpoint. Does not check the signature.
    ///
    /// # Errors
    /// [`CheckpointError`] for bad magic, an unknown version or algorithm, truncation or
    /// trailing bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<SignedCheckpoint, CheckpointError> {
        let mut reader = Reader { rest: bytes };
        if reader.take("checkpoint_magic", CHECKPOINT_MAGIC.len())? != CHECKPOINT_MAGIC {
            return Err(CheckpointError::BadMagic);
        }
        let version = reader.u16("format_version")?;
        if version != FORMAT_VERSION {
            return Err(RecordError::UnsupportedFormatVersion(version).into());
        }
        HashAlg::try_from(reader.u8("hash_alg")?)?;
        SigAlg::try_from(reader.u8("sig_alg")?)?;
        let checkpoint = SignedCheckpoint {
            ledger_id: reader.uuid("ledger_id")?,
            tree_size: reader.u64("tree_size")?,
            head_hash: reader.array("head_hash")?,
            merkle_root: reader.array("merkle_root")?,
            key_id: KeyId(reader.array("key_id")?),
            signature: reader.array("signature")?,
        };
        if !reader.rest.is_empty() {
            let count = reader.rest.len();
            return Err(RecordError::TrailingBytes { count }.into());
        }
        Ok(checkpoint)
    }

    /// Checks the signature strictly under `public_key`, which must be the key the checkpoint
    /// names.
    ///
    /// # Errors
    /// [`CheckpointError::WrongKey`] or [`CheckpointError::Signature`].
    pub fn verify(&self, public_key: &[u8; PUBLIC_KEY_LEN]) -> Result<(), CheckpointError> {
        let expected = KeyId::from_public_key(SigAlg::Ed25519, public_key);
        if self.key_id != expected {
            return Err(CheckpointError::WrongKey {
                found: self.key_id,
                expected,
            });
        }
        let message = Self::signature_message(
            self.ledger_id,
            self.tree_size,
            &self.head_hash,
            &self.merkle_root,
        );
        crypto::verify_strict(public_key, &message, &self.signature)?;
        Ok(())
    }
}

/// Domain-separation prefix of checkpoint event ids, which derive from the ledger and tree size.
const CHECKPOINT_EVENT_ID_PREFIX: &[u8] = b"folio/checkpoint-event-id/v1\0";

/// Seals a `ledger.checkpoint` event for the tree that `frontier` describes, right at `tip`,
/// and advances `tip`. The checkpoint's tree size is the event's own position, so it covers
/// every event before it.
///
/// # Panics
/// Panics if the frontier does not cover exactly the events before the tip.
pub fn seal_checkpoint(
    sealer: &Sealer,
    tip: &mut ChainTip,
    frontier: &Frontier,
    stream_version: u64,
) -> SealedEvent {
    let tree_size = tip.next_position;
    assert_eq!(
        frontier.size(),
        tree_size,
        "the frontier covers the events before the tip"
    );
    let signed = sealer.sign_checkpoint(tip.ledger_id, tree_size, tip.prev_hash, frontier.root());
    let event_id = derived_event_id(
        CHECKPOINT_EVENT_ID_PREFIX,
        &[tip.ledger_id.as_bytes(), &tree_size.to_be_bytes()],
    );
    let payload = LedgerCheckpoint {
        signed_checkpoint: signed.to_bytes(),
    };
    let draft = EventDraft {
        event_id,
        event_type: LedgerCheckpoint::EVENT_TYPE.to_owned(),
        schema_version: LedgerCheckpoint::SCHEMA_VERSION,
        actor: Actor::system("sequencer"),
        correlation_id: event_id,
        causation_id: None,
        payload: payload.encode(),
    };
    let item = Unsealed {
        stream_id: CHECKPOINT_STREAM.to_owned(),
        stream_version,
        draft,
    };
    let mut sealed = sealer.seal_batch(tip, vec![item]);
    // `seal_batch` returns one event per item.
    sealed.remove(0)
}

/// Decodes the signed checkpoint that a `ledger.checkpoint` event carries.
///
/// # Errors
/// A message naming what is wrong with the payload.
pub fn checkpoint_of(event: &SealedEvent) -> Result<SignedCheckpoint, String> {
    if event.event_type != LedgerCheckpoint::EVENT_TYPE {
        return Err(format!(
            "event type is {}, not a checkpoint",
            event.event_type
        ));
    }
    if event.schema_version != LedgerCheckpoint::SCHEMA_VERSION {
        return Err(format!(
            "unknown checkpoint schema {}",
            event.schema_version
        ));
    }
    let payload = LedgerCheckpoint::decode(&event.payload).map_err(|e| e.to_string())?;
    SignedCheckpoint::from_bytes(&payload.signed_checkpoint).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::LedgerKey;

    fn signed(key: &LedgerKey) -> SignedCheckpoint {
        let ledger_id = Uuid::from_u128(7);
        let (head_hash, merkle_root) = ([1u8; 32], [2u8; 32]);
        let message = SignedCheckpoint::signature_message(ledger_id, 5, &head_hash, &merkle_root);
        SignedCheckpoint {
            ledger_id,
            tree_size: 5,
            head_hash,
            merkle_root,
            key_id: key.key_id(),
            signature: key.sign(&message),
        }
    }

    #[test]
    fn round_trips_and_verifies() {
        let key = LedgerKey::from_seed([3; 32]);
        let checkpoint = signed(&key);
        let bytes = checkpoint.to_bytes();
        let decoded = SignedCheckpoint::from_bytes(&bytes).unwrap();
        assert_eq!(decoded, checkpoint);
        decoded.verify(&key.public_key()).unwrap();
    }

    #[test]
    fn rejects_changed_fields_and_other_keys() {
        let key = LedgerKey::from_seed([3; 32]);
        let mut checkpoint = signed(&key);
        checkpoint.tree_size = 6;
        assert!(matches!(
            checkpoint.verify(&key.public_key()),
            Err(CheckpointError::Signature(_))
        ));
        let other = LedgerKey::from_seed([4; 32]);
        assert!(matches!(
            signed(&key).verify(&other.public_key()),
            Err(CheckpointError::WrongKey { .. })
        ));
        let mut bytes = signed(&key).to_bytes();
        bytes.push(0);
        assert!(SignedCheckpoint::from_bytes(&bytes).is_err());
        assert_eq!(
            SignedCheckpoint::from_bytes(&bytes[1..]),
            Err(CheckpointError::BadMagic)
        );
    }
}
