//! The offline chain verifier: checks an exported or paged ledger without
//! trusting the system that wrote it.
//!
//! Records arrive in chunks ([`ChainVerifier::push_chunk`]), so the CLI can
//! page them from a database. Each chunk is decoded and hashed in parallel,
//! then checked in order (cheap), then its signatures are batch-verified in
//! parallel. The verifier reports the FIRST failure in ledger order; the
//! checks of one record run in the order listed on [`FailureKind`].

use std::collections::HashMap;

use rayon::prelude::*;
use uuid::Uuid;

use crate::checkpoint::{checkpoint_of, LedgerCheckpoint, SignedCheckpoint, CHECKPOINT_STREAM};
use crate::crypto::{self, KeyId, SignatureCheck, PUBLIC_KEY_LEN};
use crate::events::{EventPayload, LedgerCreated, LedgerKeyRevoked, LedgerKeyRotated};
use crate::export;
use crate::merkle::Frontier;
use crate::personal::SubjectErased;
use crate::record::{
    hash_canonical_body, RecordError, SealedEvent, SigAlg, SignedHead, HASH_LEN, SEAL_LEN,
};
use crate::seal::LEDGER_STREAM;

/// Records handed to [`ChainVerifier::push_chunk`] at a time by [`verify_export`].
const EXPORT_CHUNK: usize = 4096;

/// Kind of the first failure. Codes are stable and never renumbered.
///
/// For one record the checks run in this order: `undecodable`,
/// `wrong_ledger`, `missing_event` / `reordered_event`, `changed_bytes`,
/// `broken_link`, `bad_genesis` (position 0 or a second genesis),
/// `unknown_key`, `bad_signature`, `time_went_backwards`,
/// `stream_version_gap`, `bad_rotation`, `bad_checkpoint`. After the last record: the signed
/// head checks (`bad_head`, `truncated_tail`, `head_mismatch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// The export file itself cannot be decoded (bad magic, cut inside a record).
    BadExport,
    /// A record cannot be decoded.
    Undecodable,
    /// A record names another ledger than the genesis event.
    WrongLedger,
    /// The position jumps forward and the expected position never appears later.
    MissingEvent,
    /// The position goes backwards or repeats, or jumps forward and the expected position appears later.
    ReorderedEvent,
    /// The stored hash does not match the record's bytes.
    ChangedBytes,
    /// The previous hash is not the hash of the previous record.
    BrokenLink,
    /// The genesis event is missing or malformed, or a second genesis appears.
    BadGenesis,
    /// The record is signed by a key other than the active key.
    UnknownKey,
    /// The signature does not verify strictly under the active key.
    BadSignature,
    /// The recorded time is earlier than the previous record's.
    TimeWentBackwards,
    /// The stream version is not the stream's previous version plus one (or 0 for a new stream).
    StreamVersionGap,
    /// A key rotation event is malformed.
    BadRotation,
    /// A checkpoint event is malformed, misplaced, states another root or head than the
    /// chain before it, or its own signature fails.
    BadCheckpoint,
    /// The signed head cannot be decoded, names another ledger or key, or its signature fails.
    BadHead,
    /// There is no signed head, or it names a position past the last record.
    TruncatedTail,
    /// The signed head names an earlier position, or another hash, than the last record.
    HeadMismatch,
}

impl FailureKind {
    /// Returns the stable snake_case code.
    pub fn code(self) -> &'static str {
        match self {
            FailureKind::BadExport => "bad_export",
            FailureKind::Undecodable => "undecodable",
            FailureKind::WrongLedger => "wrong_ledger",
            FailureKind::MissingEvent => "missing_event",
            FailureKind::ReorderedEvent => "reordered_event",
            FailureKind::ChangedBytes => "changed_bytes",
            FailureKind::BrokenLink => "broken_link",
            FailureKind::BadGenesis => "bad_genesis",
            FailureKind::UnknownKey => "unknown_key",
            FailureKind::BadSignature => "bad_signature",
            FailureKind::TimeWentBackwards => "time_went_backwards",
            FailureKind::StreamVersionGap => "stream_version_gap",
            FailureKind::BadRotation => "bad_rotation",
            FailureKind::BadCheckpoint => "bad_checkpoint",
            FailureKind::BadHead => "bad_head",
            FailureKind::TruncatedTail => "truncated_tail",
            FailureKind::HeadMismatch => "head_mismatch",
        }
    }
}

/// The first failure found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", kind.code())]
pub struct Failure {
    /// Ledger position where the chain stopped verifying: the position the
    /// verifier expected next. `None` for file-level and signed-head failures
    /// that name no position.
    pub position: Option<u64>,
    /// Kind of failure.
    pub kind: FailureKind,
    /// A sentence saying what is wrong and what was expected.
    pub message: String,
}

fn fail(position: Option<u64>, kind: FailureKind, message: String) -> Failure {
    Failure {
        position,
        kind,
        message,
    }
}

/// A signing key seen in the ledger and the positions it signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpan {
    /// Key id.
    pub key_id: KeyId,
    /// Public key.
    pub public_key: [u8; PUBLIC_KEY_LEN],
    /// Position of the event that named the key (genesis or rotation).
    pub named_at: u64,
    /// First and last position the key signed, or `None` if it signed no event.
    pub signed: Option<(u64, u64)>,
}

/// A key rotation seen in the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// Position of the `ledger.key_rotated` event.
    pub position: u64,
    /// Key that signed the rotation.
    pub old_key_id: KeyId,
    /// Key that signs every later event.
    pub new_key_id: KeyId,
}

/// Contents of an intact ledger: event count, head, keys and rotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Ledger id.
    pub ledger_id: Uuid,
    /// Number of events.
    pub event_count: u64,
    /// Position of the last event.
    pub head_position: u64,
    /// Hash of the last event.
    pub head_hash: [u8; HASH_LEN],
    /// Keys in the order they were named.
    pub keys: Vec<KeySpan>,
    /// Key rotations in ledger order.
    pub rotations: Vec<Rotation>,
    /// Checkpoints recorded in the ledger, each checked against the chain, in ledger order.
    pub checkpoints: Vec<SignedCheckpoint>,
    /// Merkle root over every event hash of the ledger.
    pub merkle_root: [u8; HASH_LEN],
    /// Signing keys revoked by `ledger.key_revoked`, with the events they signed that
    /// are no longer trusted.
    pub revocations: Vec<Revocation>,
    /// Subjects whose personal fields were erased by policy (`subject.erased`), in ledger
    /// order. Their sealed bytes are still in the chain, so they verify as they were.
    pub erasures: Vec<Erasure>,
}

/// A `ledger.key_revoked` event and what it withdraws trust from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// Position of the revocation event.
    pub position: u64,
    /// The revoked key.
    pub key_id: KeyId,
    /// First position no longer trusted.
    pub from_position: u64,
    /// Why.
    pub reason: String,
    /// First and last position at or after `from_position` that the key signed; `None`
    /// when it signed nothing there. These events verify but must not be trusted.
    pub untrusted: Option<(u64, u64)>,
    /// Keys named by a rotation inside the untrusted span. Only the revoked key vouches
    /// for them, so an attacker with that key could have named a key of their own. Trust
    /// one only after comparing its id with the id the ledger's operator published.
    pub named_by_revoked: Vec<KeyId>,
}

/// A `subject.erased` event: the fields sealed under the subject's keys can no longer be
/// opened. This is policy, not tampering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Erasure {
    /// Position of the event.
    pub position: u64,
    /// The subject, such as `payee:<id>`.
    pub subject: String,
    /// The policy or reason recorded.
    pub policy: String,
}

/// Chain state after the last verified record.
#[derive(Debug)]
struct State {
    ledger_id: Option<Uuid>,
    next_position: u64,
    prev_hash: [u8; HASH_LEN],
    last_recorded_at: Option<i64>,
    /// Index into `keys` of the key that must sign the next record.
    active_key: Option<usize>,
    /// Next expected version of every stream seen.
    streams: HashMap<String, u64>,
    keys: Vec<KeySpan>,
    rotations: Vec<Rotation>,
    /// Merkle tree over the verified events, to check each checkpoint's root.
    frontier: Frontier,
    checkpoints: Vec<SignedCheckpoint>,
    erasures: Vec<Erasure>,
    /// `ledger.key_revoked` events seen, with their positions.
    revoked: Vec<(u64, LedgerKeyRevoked)>,
}

/// A record after the parallel decode-and-hash phase.
type Decoded = Result<(SealedEvent, bool), RecordError>;

/// The sequential verdict on one record.
struct Checked {
    /// Signature to verify, when the record got far enough to name its key.
    signature: Option<SignatureCheck>,
    /// A failure found by a check that runs after the signature check.
    late_failure: Option<Failure>,
}

/// Streaming verifier of a ledger's hash chain, signatures and signed head.
#[derive(Debug)]
pub struct ChainVerifier {
    state: State,
    /// The first failure, once found: later chunks are ignored.
    failure: Option<Failure>,
    /// A forward position jump whose kind depends on later records: if the
    /// expected position shows up later it is a reordering, else a missing event.
    pending_gap: Option<Failure>,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl ChainVerifier {
    /// Creates a verifier that expects the genesis event first.
    pub fn new() -> Self {
        let state = State {
            ledger_id: None,
            next_position: 0,
            prev_hash: crate::record::GENESIS_PREV_HASH,
            last_recorded_at: None,
            active_key: None,
            streams: HashMap::new(),
            keys: Vec::new(),
            rotations: Vec::new(),
            frontier: Frontier::new(),
            checkpoints: Vec::new(),
            erasures: Vec::new(),
            revoked: Vec::new(),
        };
        ChainVerifier {
            state,
            failure: None,
            pending_gap: None,
        }
    }

    /// Verifies the next chunk of encoded records, in ledger order.
    ///
    /// # Errors
    /// The first failure in ledger order. Once a failure is returned, later
    /// chunks are ignored and the same failure is returned again.
    pub fn push_chunk<R: AsRef<[u8]> + Sync>(&mut self, records: &[R]) -> Result<(), Failure> {
        if let Some(failure) = &self.failure {
            return Err(failure.clone());
        }
        let decoded: Vec<Decoded> = records
            .par_iter()
            .map(|r| decode_and_hash(r.as_ref()))
            .collect();
        if self.pending_gap.is_some() {
            self.resolve_gap(&decoded);
            return match &self.failure {
                Some(failure) => Err(failure.clone()),
                None => Ok(()),
            };
        }
        let result = self.check_chunk(&decoded);
        if let Err(failure) = &result {
            self.failure = Some(failure.clone());
        }
        result
    }

    /// Checks the signed head after the last chunk and returns the summary.
    ///
    /// # Errors
    /// The first failure of any chunk, a missing event, or a signed-head failure.
    pub fn finish(self, signed_head: Option<&[u8]>) -> Result<Summary, Failure> {
        if let Some(failure) = self.failure {
            return Err(failure);
        }
        if let Some(gap) = self.pending_gap {
            return Err(gap);
        }
        let state = self.state;
        let (Some(ledger_id), Some(last_position)) =
            (state.ledger_id, state.next_position.checked_sub(1))
        else {
            let message = "the ledger has no events, expected a genesis event".to_owned();
            return Err(fail(Some(0), FailureKind::BadGenesis, message));
        };
        check_head(&state, ledger_id, last_position, signed_head)?;
        let revocations = revocations(&state.keys, &state.revoked);
        Ok(Summary {
            ledger_id,
            event_count: state.next_position,
            head_position: last_position,
            head_hash: state.prev_hash,
            merkle_root: state.frontier.root(),
            keys: state.keys,
            rotations: state.rotations,
            revocations,
            checkpoints: state.checkpoints,
            erasures: state.erasures,
        })
    }

    /// Turns a pending forward jump into its final kind once later records are seen.
    fn resolve_gap(&mut self, decoded: &[Decoded]) {
        let expected = self.state.next_position;
        let found = decoded
            .iter()
            .flatten()
            .any(|(event, _)| event.position == expected);
        if found {
            if let Some(mut gap) = self.pending_gap.take() {
                gap.kind = FailureKind::ReorderedEvent;
                gap.message = format!(
                    "event at position {expected} appears later in the ledger: events are out of order"
                );
                self.failure = Some(gap);
            }
        }
    }

    /// Runs the sequential checks, then the signature checks, of one chunk.
    fn check_chunk(&mut self, decoded: &[Decoded]) -> Result<(), Failure> {
        let mut checks: Vec<(u64, SignatureCheck)> = Vec::with_capacity(decoded.len());
        let mut first_failure: Option<Failure> = None;
        for (index, item) in decoded.iter().enumerate() {
            let position = self.state.next_position;
            match self.state.check_record(item) {
                Ok(checked) => {
                    if let Some(signature) = checked.signature {
                        checks.push((position, signature));
                    }
                    if let Some(failure) = checked.late_failure {
                        first_failure = Some(failure);
                        break;
                    }
                }
                Err(failure) if failure.kind == FailureKind::MissingEvent => {
                    self.pending_gap = Some(failure);
                    self.resolve_gap(&decoded[index + 1..]);
                    break;
                }
                Err(failure) => {
                    first_failure = Some(failure);
                    break;
                }
            }
        }
        check_signatures(&checks)?;
        if let Some(failure) = first_failure {
            return Err(failure);
        }
        match &self.failure {
            Some(failure) => Err(failure.clone()),
            None => Ok(()),
        }
    }
}

/// Verifies a whole export file in one call.
///
/// # Errors
/// The first failure, as [`ChainVerifier`] reports it, or `bad_export` when
/// the file cannot be decoded.
pub fn verify_export(bytes: &[u8]) -> Result<Summary, Failure> {
    let exported = export::decode(bytes)
        .map_err(|error| fail(None, FailureKind::BadExport, format!("{error}")))?;
    let mut verifier = ChainVerifier::new();
    for chunk in exported.records.chunks(EXPORT_CHUNK) {
        if verifier.push_chunk(chunk).is_err() {
            break;
        }
    }
    verifier.finish(exported.signed_head.as_deref())
}

/// Decodes a record and compares its stored hash with the hash of its body bytes.
fn decode_and_hash(bytes: &[u8]) -> Decoded {
    let event = SealedEvent::from_bytes(bytes)?;
    // A decoded record is at least SEAL_LEN bytes long, and the body is every byte before the seal.
    let body = &bytes[..bytes.len() - SEAL_LEN];
    let hash_matches = hash_canonical_body(body) == event.hash;
    Ok((event, hash_matches))
}

/// Batch-verifies the collected signatures and reports the first bad one.
fn check_signatures(checks: &[(u64, SignatureCheck)]) -> Result<(), Failure> {
    let signatures: Vec<SignatureCheck> = checks.iter().map(|(_, check)| check.clone()).collect();
    let Some(index) = crypto::first_invalid_signature(&signatures) else {
        return Ok(());
    };
    let (position, check) = &checks[index];
    let reason = crypto::verify_strict(&check.public_key, &check.message, &check.signature)
        .err()
        .map_or_else(
            || "batch verification failed".to_owned(),
            |error| error.to_string(),
        );
    let message = format!(
        "signature of the event at position {position} does not verify under key {}: {reason}",
        KeyId::from_public_key(SigAlg::Ed25519, &check.public_key)
    );
    Err(fail(Some(*position), FailureKind::BadSignature, message))
}

impl State {
    /// Checks one record in order and advances the state unless a check fails.
    /// The signature is returned unverified, for batch verification.
    fn check_record(&mut self, item: &Decoded) -> Result<Checked, Failure> {
        let expected = self.next_position;
        let at = |kind, message| fail(Some(expected), kind, message);
        let (event, hash_matches) = match item {
            Ok(decoded) => decoded,
            Err(error) => {
                return Err(at(
                    FailureKind::Undecodable,
                    format!("record cannot be decoded: {error}"),
                ));
            }
        };

        self.check_order(event, *hash_matches)?;
        let key_index = self.resolve_key(event)?;
        let public_key = self.keys[key_index].public_key;
        let signature = SignatureCheck {
            public_key,
            message: crypto::event_signature_message(&event.hash),
            signature: event.signature,
        };

        let late_failure = self.check_late(event).err();
        if late_failure.is_none() {
            self.advance(event, key_index)?;
        }
        Ok(Checked {
            signature: Some(signature),
            late_failure,
        })
    }

    /// Checks the ledger id, position, hash and link.
    fn check_order(&mut self, event: &SealedEvent, hash_matches: bool) -> Result<(), Failure> {
        let expected = self.next_position;
        let at = |kind, message| Err(fail(Some(expected), kind, message));
        let ledger_id = *self.ledger_id.get_or_insert(event.ledger_id);
        if event.ledger_id != ledger_id {
            let message = format!(
                "event names ledger {}, expected {ledger_id}",
                event.ledger_id
            );
            return at(FailureKind::WrongLedger, message);
        }
        if event.position > expected {
            let message = format!(
                "event at position {expected} is missing: found position {}",
                event.position
            );
            return at(FailureKind::MissingEvent, message);
        }
        if event.position < expected {
            let message = format!(
                "found position {} where position {expected} was expected: events are out of order or repeated",
                event.position
            );
            return at(FailureKind::ReorderedEvent, message);
        }
        if !hash_matches {
            let message =
                "event bytes do not match its stored hash: the record was changed".to_owned();
            return at(FailureKind::ChangedBytes, message);
        }
        if event.prev_hash != self.prev_hash {
            let message = format!(
                "previous hash {} does not match the hash {} of the event before",
                hex::encode(event.prev_hash),
                hex::encode(self.prev_hash)
            );
            return at(FailureKind::BrokenLink, message);
        }
        Ok(())
    }

    /// Finds the key that must have signed the event: the genesis key at
    /// position 0, else the active key.
    fn resolve_key(&mut self, event: &SealedEvent) -> Result<usize, Failure> {
        let expected = self.next_position;
        if expected == 0 {
            let public_key = check_genesis(event)?;
            self.keys.push(KeySpan {
                key_id: event.key_id,
                public_key,
                named_at: 0,
                signed: None,
            });
            self.active_key = Some(0);
            return Ok(0);
        }
        if event.event_type == LedgerCreated::EVENT_TYPE {
            let message = "a second ledger.created event appears, but only position 0 may hold one";
            return Err(fail(
                Some(expected),
                FailureKind::BadGenesis,
                message.to_owned(),
            ));
        }
        // The genesis check above set the active key before any later position is reached.
        let active = self.active_key.expect("active key set by genesis");
        if event.key_id != self.keys[active].key_id {
            let message = format!(
                "event is signed by key {}, expected the active key {}",
                event.key_id, self.keys[active].key_id
            );
            return Err(fail(Some(expected), FailureKind::UnknownKey, message));
        }
        Ok(active)
    }

    /// Checks time, stream version and rotation, which rank after the signature check.
    fn check_late(&self, event: &SealedEvent) -> Result<(), Failure> {
        let expected = self.next_position;
        let at = |kind, message| Err(fail(Some(expected), kind, message));
        if let Some(last) = self.last_recorded_at {
            if event.recorded_at_micros < last {
                let message = format!(
                    "recorded time {} µs is earlier than the previous event's {last} µs",
                    event.recorded_at_micros
                );
                return at(FailureKind::TimeWentBackwards, message);
            }
        }
        let stream_next = self.streams.get(&event.stream_id).copied().unwrap_or(0);
        if event.stream_version != stream_next {
            let message = format!(
                "stream {:?} version is {}, expected {stream_next}",
                event.stream_id, event.stream_version
            );
            return at(FailureKind::StreamVersionGap, message);
        }
        if event.event_type == LedgerKeyRotated::EVENT_TYPE {
            let active = self.active_key.map(|index| self.keys[index].public_key);
            check_rotation(event, active)
                .map_err(|message| fail(Some(expected), FailureKind::BadRotation, message))?;
        }
        let is_checkpoint_type = event.event_type == LedgerCheckpoint::EVENT_TYPE;
        if is_checkpoint_type || event.stream_id == CHECKPOINT_STREAM {
            self.check_checkpoint(event)
                .map_err(|message| fail(Some(expected), FailureKind::BadCheckpoint, message))?;
        }
        Ok(())
    }

    /// Stores a verified event's position, hash, time, stream version, key use and rotation.
    fn advance(&mut self, event: &SealedEvent, key_index: usize) -> Result<(), Failure> {
        assert_eq!(
            event.position, self.next_position,
            "advance after the position check"
        );
        self.next_position = event.position.checked_add(1).ok_or_else(|| {
            fail(
                Some(event.position),
                FailureKind::Undecodable,
                "position overflows u64".to_owned(),
            )
        })?;
        self.prev_hash = event.hash;
        self.frontier.push(&event.hash);
        if event.event_type == LedgerCheckpoint::EVENT_TYPE {
            // `check_checkpoint` accepted this payload before advance was called.
            let checkpoint = checkpoint_of(event).expect("checkpoint payload checked");
            self.checkpoints.push(checkpoint);
        }
        self.last_recorded_at = Some(event.recorded_at_micros);
        self.streams.insert(
            event.stream_id.clone(),
            event.stream_version.saturating_add(1),
        );

        let span = &mut self.keys[key_index];
        span.signed = Some(match span.signed {
            None => (event.position, event.position),
            Some((first, _)) => (first, event.position),
        });

        if event.event_type == LedgerKeyRotated::EVENT_TYPE {
            self.rotate(event);
        }
        if event.event_type == LedgerKeyRevoked::EVENT_TYPE {
            if let Ok(revoked) = LedgerKeyRevoked::decode(&event.payload) {
                self.revoked.push((event.position, revoked));
            }
        }
        if event.event_type == SubjectErased::EVENT_TYPE {
            // The payload is covered by the signature either way; one this build cannot
            // read is listed with its position only.
            let (subject, policy) = SubjectErased::decode(&event.payload)
                .map(|erased| (erased.subject, erased.policy))
                .unwrap_or_else(|_| ("(unreadable)".to_owned(), String::new()));
            self.erasures.push(Erasure {
                position: event.position,
                subject,
                policy,
            });
        }
        Ok(())
    }

    /// Checks a checkpoint event against the chain before it: its stream and type, its tree
    /// size (its own position), head hash, Merkle root, key and signature.
    fn check_checkpoint(&self, event: &SealedEvent) -> Result<(), String> {
        if event.stream_id != CHECKPOINT_STREAM || event.event_type != LedgerCheckpoint::EVENT_TYPE
        {
            return Err(format!(
                "event type {} on stream {:?}: checkpoints are ledger.checkpoint events on stream {CHECKPOINT_STREAM}, and nothing else is",
                event.event_type, event.stream_id
            ));
        }
        let checkpoint = checkpoint_of(event)?;
        if checkpoint.ledger_id != event.ledger_id {
            return Err(format!("checkpoint names ledger {}", checkpoint.ledger_id));
        }
        if checkpoint.tree_size != event.position || checkpoint.head_hash != event.prev_hash {
            return Err(format!(
                "checkpoint states tree size {} and head {}, but it sits at position {} after head {}",
                checkpoint.tree_size,
                hex::encode(checkpoint.head_hash),
                event.position,
                hex::encode(event.prev_hash)
            ));
        }
        let root = self.frontier.root();
        if checkpoint.merkle_root != root {
            return Err(format!(
                "checkpoint states Merkle root {}, the events before it give {}",
                hex::encode(checkpoint.merkle_root),
                hex::encode(root)
            ));
        }
        // The active key signed this event (checked before), and must sign its checkpoint too.
        let active = self.active_key.expect("active key set by genesis");
        checkpoint
            .verify(&self.keys[active].public_key)
            .map_err(|error| error.to_string())
    }

    fn rotate(&mut self, event: &SealedEvent) {
        // check_rotation accepted this payload before advance was called.
        let payload = LedgerKeyRotated::decode(&event.payload).expect("rotation payload checked");
        let new_key_id = KeyId::from_public_key(SigAlg::Ed25519, &payload.new_public_key);
        self.rotations.push(Rotation {
            position: event.position,
            old_key_id: event.key_id,
            new_key_id,
        });
        self.keys.push(KeySpan {
            key_id: new_key_id,
            public_key: payload.new_public_key,
            named_at: event.position,
            signed: None,
        });
        self.active_key = Some(self.keys.len() - 1);
    }
}

/// Checks the genesis event and returns the public key it names.
fn check_genesis(event: &SealedEvent) -> Result<[u8; PUBLIC_KEY_LEN], Failure> {
    let bad = |message: String| fail(Some(0), FailureKind::BadGenesis, message);
    if event.event_type != LedgerCreated::EVENT_TYPE
        || event.schema_version != LedgerCreated::SCHEMA_VERSION
    {
        return Err(bad(format!(
            "event type is {} schema {}, expected ledger.created schema 1",
            event.event_type, event.schema_version
        )));
    }
    if event.stream_id != LEDGER_STREAM || event.stream_version != 0 {
        return Err(bad(format!(
            "genesis is on stream {:?} version {}, expected stream \"ledger\" version 0",
            event.stream_id, event.stream_version
        )));
    }
    let payload = LedgerCreated::decode(&event.payload).map_err(|error| bad(error.to_string()))?;
    // Postcard's decoder accepts over-long varints, so requiring the canonical
    // encoding gives every key-naming payload exactly one byte form.
    if payload.encode() != event.payload {
        return Err(bad(
            "payload is not the canonical postcard encoding".to_owned()
        ));
    }
    if payload.key_algorithm != SigAlg::Ed25519 as u8 {
        return Err(bad(format!(
            "key algorithm is {}, expected 1 (Ed25519)",
            payload.key_algorithm
        )));
    }
    crypto::check_public_key(&payload.public_key)
        .map_err(|error| bad(format!("genesis key rejected: {error}")))?;
    let named = KeyId::from_public_key(SigAlg::Ed25519, &payload.public_key);
    if event.key_id != named {
        return Err(bad(format!(
            "genesis is signed by key {}, expected the key it names, {named}",
            event.key_id
        )));
    }
    Ok(payload.public_key)
}

/// Checks a `ledger.key_rotated` event against the active public key.
fn check_rotation(event: &SealedEvent, active: Option<[u8; PUBLIC_KEY_LEN]>) -> Result<(), String> {
    if event.stream_id != LEDGER_STREAM || event.schema_version != LedgerKeyRotated::SCHEMA_VERSION
    {
        return Err(format!(
            "rotation is on stream {:?} schema {}, expected stream \"ledger\" schema 1",
            event.stream_id, event.schema_version
        ));
    }
    let payload = LedgerKeyRotated::decode(&event.payload).map_err(|error| error.to_string())?;
    if payload.encode() != event.payload {
        return Err("payload is not the canonical postcard encoding".to_owned());
    }
    if payload.key_algorithm != SigAlg::Ed25519 as u8 {
        return Err(format!(
            "key algorithm is {}, expected 1 (Ed25519)",
            payload.key_algorithm
        ));
    }
    crypto::check_public_key(&payload.new_public_key)
        .map_err(|error| format!("new key rejected: {error}"))?;
    if Some(payload.new_public_key) == active {
        return Err("new key is the active key".to_owned());
    }
    Ok(())
}

/// Checks the signed head against the last verified record.
fn check_head(
    state: &State,
    ledger_id: Uuid,
    last_position: u64,
    signed_head: Option<&[u8]>,
) -> Result<(), Failure> {
    let next = state.next_position;
    let Some(bytes) = signed_head else {
        let message =
            format!("no signed head: events after position {last_position} may have been cut off");
        return Err(fail(Some(next), FailureKind::TruncatedTail, message));
    };
    let bad_head = |message: String| fail(None, FailureKind::BadHead, message);
    let head = SignedHead::from_bytes(bytes)
        .map_err(|error| bad_head(format!("signed head cannot be decoded: {error}")))?;
    if head.ledger_id != ledger_id {
        return Err(bad_head(format!(
            "signed head names ledger {}, expected {ledger_id}",
            head.ledger_id
        )));
    }
    if head.position > last_position {
        let message = format!(
            "signed head is at position {} but the last event is at {last_position}: the tail was cut off",
            head.position
        );
        return Err(fail(Some(next), FailureKind::TruncatedTail, message));
    }
    check_head_signature(state, &head)?;
    if head.position < last_position || head.head_hash != state.prev_hash {
        let message = format!(
            "signed head is position {} hash {}, expected position {last_position} hash {}",
            head.position,
            hex::encode(head.head_hash),
            hex::encode(state.prev_hash)
        );
        return Err(fail(
            Some(head.position),
            FailureKind::HeadMismatch,
            message,
        ));
    }
    Ok(())
}

/// Checks that the active key signed the head.
fn check_head_signature(state: &State, head: &SignedHead) -> Result<(), Failure> {
    let bad_head = |message: String| fail(None, FailureKind::BadHead, message);
    // finish only calls check_head after genesis set the active key.
    let active = &state.keys[state.active_key.expect("active key set by genesis")];
    if head.key_id != active.key_id {
        return Err(bad_head(format!(
            "signed head is signed by key {}, expected the active key {}",
            head.key_id, active.key_id
        )));
    }
    let message = SignedHead::signature_message(head.ledger_id, head.position, &head.head_hash);
    crypto::verify_strict(&active.public_key, &message, &head.signature)
        .map_err(|error| bad_head(format!("signed head signature rejected: {error}")))
}

/// Matches each revocation with the span its key signed at or after the revoked position.
fn revocations(keys: &[KeySpan], revoked: &[(u64, LedgerKeyRevoked)]) -> Vec<Revocation> {
    revoked
        .iter()
        .map(|(position, revocation)| {
            let key_id = KeyId::from_public_key(SigAlg::Ed25519, &revocation.public_key);
            let untrusted = keys
                .iter()
                .filter(|span| span.public_key == revocation.public_key)
                .filter_map(|span| span.signed)
                .filter(|(_, last)| *last >= revocation.from_position)
                .map(|(first, last)| (first.max(revocation.from_position), last))
                .reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)));
            let named_by_revoked = keys
                .iter()
                .filter(|span| span.public_key != revocation.public_key)
                .filter(|span| {
                    untrusted.is_some_and(|(first, last)| (first..=last).contains(&span.named_at))
                })
                .map(|span| span.key_id)
                .collect();
            Revocation {
                position: *position,
                key_id,
                from_position: revocation.from_position,
                reason: revocation.reason.clone(),
                untrusted,
                named_by_revoked,
            }
        })
        .collect()
}
