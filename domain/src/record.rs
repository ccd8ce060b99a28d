//! The sealed event record: its fields, its canonical byte layout, its hash.
//!
//! The byte layout is documented in `docs/ledger-format.md`; that document and
//! this module must change together.

use uuid::Uuid;

use crate::crypto::KeyId;

/// Version of the record layout written by this code.
pub const FORMAT_VERSION: u16 = 1;

/// Length of an event hash in bytes.
pub const HASH_LEN: usize = 32;

/// Length of an event signature in bytes.
pub const SIGNATURE_LEN: usize = 64;

/// The previous-hash value carried by the genesis event.
pub const GENESIS_PREV_HASH: [u8; HASH_LEN] = [0; HASH_LEN];

/// Hash algorithm identifier stored in every record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HashAlg {
    /// BLAKE3 with a 256-bit output (identifier 1).
    Blake3 = 1,
}

/// Signature algorithm identifier stored in every record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SigAlg {
    /// Ed25519 as in RFC 8032, verified strictly (identifier 1).
    Ed25519 = 1,
}

/// Kind of actor that performed an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ActorKind {
    /// Folio itself: the sequencer, the dispatcher, a scheduled job (identifier 0).
    System = 0,
    /// A machine client authenticated by an API token (identifier 1).
    ApiClient = 1,
    /// A person signed in to the console (identifier 2).
    Operator = 2,
}

/// The actor of an event and the credential it used.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Actor {
    /// Kind of actor.
    pub kind: ActorKind,
    /// Stable identifier of the actor, such as an API client id.
    pub id: String,
    /// Identifier of the credential used, such as an API token id; empty for the system.
    pub credential: String,
}

impl Actor {
    /// Returns the system actor, named after the component that acts (for example `dispatcher`).
    pub fn system(component: &str) -> Self {
        Actor {
            kind: ActorKind::System,
            id: component.to_owned(),
            credential: String::new(),
        }
    }
}

/// An event before sealing: what a command decides to record.
///
/// The sequencer adds the ledger id, position, stream version, time, previous
/// hash, key id, hash and signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventDraft {
    /// Unique event id (UUIDv7).
    pub event_id: Uuid,
    /// Dotted event type, such as `payment.submitted`.
    pub event_type: String,
    /// Version of the payload schema for this event type.
    pub schema_version: u16,
    /// Who acts.
    pub actor: Actor,
    /// Id shared by every event caused by one request.
    pub correlation_id: Uuid,
    /// Id of the event or request that caused this one, if any.
    pub causation_id: Option<Uuid>,
    /// Payload bytes (postcard encoding of the payload type).
    pub payload: Vec<u8>,
}

/// A sealed, hash-linked and signed event, exactly as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedEvent {
    /// Record layout version.
    pub format_version: u16,
    /// Hash algorithm of `hash` and `prev_hash`.
    pub hash_alg: HashAlg,
    /// Signature algorithm of `signature`.
    pub sig_alg: SigAlg,
    /// Ledger the event belongs to.
    pub ledger_id: Uuid,
    /// Global position in the ledger, gapless from 0.
    pub position: u64,
    /// Stream (aggregate) id, such as `payment-0193...`.
    pub stream_id: String,
    /// Version within the stream, gapless from 0.
    pub stream_version: u64,
    /// Unique event id (UUIDv7).
    pub event_id: Uuid,
    /// Dotted event type.
    pub event_type: String,
    /// Payload schema version.
    pub schema_version: u16,
    /// Time the sequencer sealed the event, in microseconds since the Unix epoch (UTC).
    pub recorded_at_micros: i64,
    /// Who acted.
    pub actor: Actor,
    /// Correlation id.
    pub correlation_id: Uuid,
    /// Causation id.
    pub causation_id: Option<Uuid>,
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// Hash of the event at `position - 1`, or zeros for the genesis event.
    pub prev_hash: [u8; HASH_LEN],
    /// Id of the key that signed the event.
    pub key_id: KeyId,
    /// Hash over the canonical bytes of every field above.
    pub hash: [u8; HASH_LEN],
    /// Signature over the hash.
    pub signature: [u8; SIGNATURE_LEN],
}

/// Domain-separation prefix of event hashes (the trailing NUL is part of the prefix).
pub const EVENT_HASH_PREFIX: &[u8] = b"folio/event/v1\0";

/// Maximum payload length in bytes (1 MiB).
pub const MAX_PAYLOAD_LEN: usize = 1 << 20;

/// Maximum length in bytes of each string field (1 KiB).
pub const MAX_STRING_LEN: usize = 1 << 10;

/// Length of the hash and signature that follow the canonical body in a stored record.
pub const SEAL_LEN: usize = HASH_LEN + SIGNATURE_LEN;

/// A record could not be decoded, or a draft breaks a length limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The bytes end before a field is complete.
    #[error("record truncated in field {field}")]
    Truncated {
        /// Field being read.
        field: &'static str,
    },
    /// Bytes follow the signature.
    #[error("{count} trailing bytes after the signature")]
    TrailingBytes {
        /// Number of extra bytes.
        count: usize,
    },
    /// The record layout version is not known to this build.
    #[error("unsupported record format version {0}")]
    UnsupportedFormatVersion(u16),
    /// The hash algorithm identifier is not known to this build.
    #[error("unknown hash algorithm id {0}")]
    UnknownHashAlg(u8),
    /// The signature algorithm identifier is not known to this build.
    #[error("unknown signature algorithm id {0}")]
    UnknownSigAlg(u8),
    /// The actor kind identifier is not known to this build.
    #[error("unknown actor kind {0}")]
    UnknownActorKind(u8),
    /// The causation flag is neither 0 nor 1.
    #[error("invalid causation flag {0}, expected 0 or 1")]
    InvalidCausationFlag(u8),
    /// A string field is not valid UTF-8.
    #[error("field {field} is not valid UTF-8")]
    InvalidUtf8 {
        /// Field name.
        field: &'static str,
    },
    /// A signed head does not start with the head magic bytes.
    #[error("signed head does not start with the magic bytes folio/head/v1")]
    BadHeadMagic,
    /// A variable-length field is longer than its limit.
    #[error("field {field} is {len} bytes, over the limit of {max}")]
    TooLong {
        /// Field name.
        field: &'static str,
        /// Declared length.
        len: u64,
        /// Limit.
        max: usize,
    },
}

impl TryFrom<u8> for HashAlg {
    type Error = RecordError;

    fn try_from(id: u8) -> Result<Self, RecordError> {
        match id {
            1 => Ok(HashAlg::Blake3),
            other => Err(RecordError::UnknownHashAlg(other)),
        }
    }
}

impl TryFrom<u8> for SigAlg {
    type Error = RecordError;

    fn try_from(id: u8) -> Result<Self, RecordError> {
        match id {
            1 => Ok(SigAlg::Ed25519),
            other => Err(RecordError::UnknownSigAlg(other)),
        }
    }
}

impl TryFrom<u8> for ActorKind {
    type Error = RecordError;

    fn try_from(id: u8) -> Result<Self, RecordError> {
        match id {
            0 => Ok(ActorKind::System),
            1 => Ok(ActorKind::ApiClient),
            2 => Ok(ActorKind::Operator),
            other => Err(RecordError::UnknownActorKind(other)),
        }
    }
}

impl EventDraft {
    /// Checks the length limits that every sealed record must meet.
    ///
    /// # Errors
    /// [`RecordError::TooLong`] naming the first field over its limit.
    pub fn check_limits(&self) -> Result<(), RecordError> {
        check_len("event_type", self.event_type.len(), MAX_STRING_LEN)?;
        check_len("actor_id", self.actor.id.len(), MAX_STRING_LEN)?;
        check_len(
            "actor_credential",
            self.actor.credential.len(),
            MAX_STRING_LEN,
        )?;
        check_len("payload", self.payload.len(), MAX_PAYLOAD_LEN)
    }
}

fn check_len(field: &'static str, len: usize, max: usize) -> Result<(), RecordError> {
    if len > max {
        return Err(RecordError::TooLong {
            field,
            len: len as u64,
            max,
        });
    }
    Ok(())
}

impl SealedEvent {
    /// Encodes the canonical body: every field before `hash`, in the documented order.
    ///
    /// # Panics
    /// Panics if a variable-length field is over its limit, because a record
    /// that cannot be decoded again must never be sealed.
    pub fn canonical_body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160 + self.payload.len());
        out.extend_from_slice(&self.format_version.to_be_bytes());
        out.push(self.hash_alg as u8);
        out.push(self.sig_alg as u8);
        out.extend_from_slice(self.ledger_id.as_bytes());
        out.extend_from_slice(&self.position.to_be_bytes());
        put_bytes(
            &mut out,
            "stream_id",
            self.stream_id.as_bytes(),
            MAX_STRING_LEN,
        );
        out.extend_from_slice(&self.stream_version.to_be_bytes());
        out.extend_from_slice(self.event_id.as_bytes());
        put_bytes(
            &mut out,
            "event_type",
            self.event_type.as_bytes(),
            MAX_STRING_LEN,
        );
        out.extend_from_slice(&self.schema_version.to_be_bytes());
        out.extend_from_slice(&self.recorded_at_micros.to_be_bytes());
        out.push(self.actor.kind as u8);
        put_bytes(
            &mut out,
            "actor_id",
            self.actor.id.as_bytes(),
            MAX_STRING_LEN,
        );
        put_bytes(
            &mut out,
            "actor_credential",
            self.actor.credential.as_bytes(),
            MAX_STRING_LEN,
        );
        out.extend_from_slice(self.correlation_id.as_bytes());
        put_causation(&mut out, self.causation_id);
        put_bytes(&mut out, "payload", &self.payload, MAX_PAYLOAD_LEN);
        out.extend_from_slice(&self.prev_hash);
        out.extend_from_slice(&self.key_id.0);
        out
    }

    /// Computes the event hash: BLAKE3 over `folio/event/v1` NUL and the canonical body.
    pub fn compute_hash(&self) -> [u8; HASH_LEN] {
        hash_canonical_body(&self.canonical_body())
    }

    /// Encodes the stored record: canonical body, hash, signature.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.canonical_body();
        out.extend_from_slice(&self.hash);
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes a stored record.
    ///
    /// Decoding does not check the hash or signature: that is the verifier's job.
    ///
    /// # Errors
    /// [`RecordError`] naming the first field that is truncated, unknown,
    /// invalid or over its limit, or the number of trailing bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<SealedEvent, RecordError> {
        let mut reader = Reader { rest: bytes };
        let event = read_event(&mut reader)?;
        if !reader.rest.is_empty() {
            return Err(RecordError::TrailingBytes {
                count: reader.rest.len(),
            });
        }
        Ok(event)
    }
}

/// Hashes an encoded canonical body with the event domain-separation prefix.
pub fn hash_canonical_body(body: &[u8]) -> [u8; HASH_LEN] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(EVENT_HASH_PREFIX);
    hasher.update(body);
    *hasher.finalize().as_bytes()
}

fn put_bytes(out: &mut Vec<u8>, field: &str, bytes: &[u8], max: usize) {
    assert!(
        bytes.len() <= max,
        "{field} is {} bytes, over the limit of {max}",
        bytes.len()
    );
    // The limit above is far below u32::MAX, so the cast is exact.
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn put_causation(out: &mut Vec<u8>, causation_id: Option<Uuid>) {
    match causation_id {
        None => out.push(0),
        Some(id) => {
            out.push(1);
            out.extend_from_slice(id.as_bytes());
        }
    }
}

fn read_event(reader: &mut Reader<'_>) -> Result<SealedEvent, RecordError> {
    let format_version = reader.u16("format_version")?;
    if format_version != FORMAT_VERSION {
        return Err(RecordError::UnsupportedFormatVersion(format_version));
    }
    let hash_alg = HashAlg::try_from(reader.u8("hash_alg")?)?;
    let sig_alg = SigAlg::try_from(reader.u8("sig_alg")?)?;
    let ledger_id = reader.uuid("ledger_id")?;
    let position = reader.u64("position")?;
    let stream_id = reader.string("stream_id")?;
    let stream_version = reader.u64("stream_version")?;
    let event_id = reader.uuid("event_id")?;
    let event_type = reader.string("event_type")?;
    let schema_version = reader.u16("schema_version")?;
    let recorded_at_micros = i64::from_be_bytes(reader.array("recorded_at_micros")?);
    let actor = read_actor(reader)?;
    let correlation_id = reader.uuid("correlation_id")?;
    let causation_id = read_causation(reader)?;
    let payload = reader.bytes("payload", MAX_PAYLOAD_LEN)?.to_vec();
    let prev_hash = reader.array::<HASH_LEN>("prev_hash")?;
    let key_id = KeyId(reader.array("key_id")?);
    let hash = reader.array::<HASH_LEN>("hash")?;
    let signature = reader.array::<SIGNATURE_LEN>("signature")?;
    Ok(SealedEvent {
        format_version,
        hash_alg,
        sig_alg,
        ledger_id,
        position,
        stream_id,
        stream_version,
        event_id,
        event_type,
        schema_version,
        recorded_at_micros,
        actor,
        correlation_id,
        causation_id,
        payload,
        prev_hash,
        key_id,
        hash,
        signature,
    })
}

fn read_actor(reader: &mut Reader<'_>) -> Result<Actor, RecordError> {
    let kind = ActorKind::try_from(reader.u8("actor_kind")?)?;
    let id = reader.string("actor_id")?;
    let credential = reader.string("actor_credential")?;
    Ok(Actor {
        kind,
        id,
        credential,
    })
}

fn read_causation(reader: &mut Reader<'_>) -> Result<Option<Uuid>, RecordError> {
    match reader.u8("causation_flag")? {
        0 => Ok(None),
        1 => Ok(Some(reader.uuid("causation_id")?)),
        other => Err(RecordError::InvalidCausationFlag(other)),
    }
}

/// A cursor over record bytes that names the field on every failure.
pub(crate) struct Reader<'a> {
    pub(crate) rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn take(
        &mut self,
        field: &'static str,
        len: usize,
    ) -> Result<&'a [u8], RecordError> {
        if self.rest.len() < len {
            return Err(RecordError::Truncated { field });
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], RecordError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(field, N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, RecordError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, RecordError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, RecordError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, RecordError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn uuid(&mut self, field: &'static str) -> Result<Uuid, RecordError> {
        Ok(Uuid::from_bytes(self.array(field)?))
    }

    pub(crate) fn bytes(
        &mut self,
        field: &'static str,
        max: usize,
    ) -> Result<&'a [u8], RecordError> {
        let len = self.u32(field)?;
        if len as usize > max {
            return Err(RecordError::TooLong {
                field,
                len: u64::from(len),
                max,
            });
        }
        self.take(field, len as usize)
    }

    pub(crate) fn string(&mut self, field: &'static str) -> Result<String, RecordError> {
        let bytes = self.bytes(field, MAX_STRING_LEN)?;
        let text = std::str::from_utf8(bytes).map_err(|_| RecordError::InvalidUtf8 { field })?;
        Ok(text.to_owned())
    }
}

/// Magic bytes that open a signed-head record (the trailing NUL is part of them).
pub const HEAD_MAGIC: &[u8] = b"folio/head/v1\0";

/// Domain-separation prefix of head signatures (the trailing NUL is part of the prefix).
pub const HEAD_SIGNATURE_PREFIX: &[u8] = b"folio/head-signature/v1\0";

/// Length of an encoded signed head in bytes.
pub const SIGNED_HEAD_LEN: usize =
    HEAD_MAGIC.len() + 2 + 1 + 1 + 16 + 8 + HASH_LEN + crate::crypto::KEY_ID_LEN + SIGNATURE_LEN;

const _: () = assert!(SIGNED_HEAD_LEN == 154);

/// A signed statement of a ledger's last position and hash, so a cut-off tail is detectable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHead {
    /// Head layout version (the same numbering as records).
    pub format_version: u16,
    /// Hash algorithm of `head_hash`.
    pub hash_alg: HashAlg,
    /// Signature algorithm of `signature`.
    pub sig_alg: SigAlg,
    /// Ledger the head belongs to.
    pub ledger_id: Uuid,
    /// Position of the last event.
    pub position: u64,
    /// Hash of the last event.
    pub head_hash: [u8; HASH_LEN],
    /// Id of the key that signed the head.
    pub key_id: KeyId,
    /// Signature over [`SignedHead::signature_message`].
    pub signature: [u8; SIGNATURE_LEN],
}

impl SignedHead {
    /// Builds the message a head signature covers:
    /// `folio/head-signature/v1` NUL, ledger id, position (u64 BE), head hash.
    pub fn signature_message(
        ledger_id: Uuid,
        position: u64,
        head_hash: &[u8; HASH_LEN],
    ) -> Vec<u8> {
        let mut message = Vec::with_capacity(HEAD_SIGNATURE_PREFIX.len() + 16 + 8 + HASH_LEN);
        message.extend_from_slice(HEAD_SIGNATURE_PREFIX);
        message.extend_from_slice(ledger_id.as_bytes());
        message.extend_from_slice(&position.to_be_bytes());
        message.extend_from_slice(head_hash);
        message
    }

    /// Encodes the signed head.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SIGNED_HEAD_LEN);
        out.extend_from_slice(HEAD_MAGIC);
        out.extend_from_slice(&self.format_version.to_be_bytes());
        out.push(self.hash_alg as u8);
        out.push(self.sig_alg as u8);
        out.extend_from_slice(self.ledger_id.as_bytes());
        out.extend_from_slice(&self.position.to_be_bytes());
        out.extend_from_slice(&self.head_hash);
        out.extend_from_slice(&self.key_id.0);
        out.extend_from_slice(&self.signature);
        assert_eq!(out.len(), SIGNED_HEAD_LEN);
        out
    }

    /// Decodes a signed head. Does not check the signature.
    ///
    /// # Errors
    /// [`RecordError`] for bad magic, an unknown version or algorithm, truncation or trailing bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<SignedHead, RecordError> {
        let mut reader = Reader { rest: bytes };
        if reader.take("head_magic", HEAD_MAGIC.len())? != HEAD_MAGIC {
            return Err(RecordError::BadHeadMagic);
        }
        let format_version = reader.u16("format_version")?;
        if format_version != FORMAT_VERSION {
            return Err(RecordError::UnsupportedFormatVersion(format_version));
        }
        let head = SignedHead {
            format_version,
            hash_alg: HashAlg::try_from(reader.u8("hash_alg")?)?,
            sig_alg: SigAlg::try_from(reader.u8("sig_alg")?)?,
            ledger_id: reader.uuid("ledger_id")?,
            position: reader.u64("position")?,
            head_hash: reader.array("head_hash")?,
            key_id: KeyId(reader.array("key_id")?),
            signature: reader.array("signature")?,
        };
        if !reader.rest.is_empty() {
            return Err(RecordError::TrailingBytes {
                count: reader.rest.len(),
            });
        }
        Ok(head)
    }
}
