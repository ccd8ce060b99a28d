//! Envelope encryption of event fields: the associated-data layout, the sealed-field
//! format and the limits on each data key. No I/O: data keys, nonces and time come from
//! the caller, which gets them from a KMS and the system random source.
//!
//! A field is encrypted with AES-256-GCM under a 32-byte data key. The data key itself is
//! stored elsewhere, wrapped by a key-encryption key (KEK) in a KMS; an event holds only
//! the data key's id. The associated data binds the ciphertext to the ledger, stream,
//! event id and field name, so a ciphertext copied to another event or field fails
//! authentication.
//!
//! Nonces are 96 random bits per message. With random nonces the chance of a repeat
//! stays under 2^-32 only while a key encrypts at most 2^32 messages (NIST SP 800-38D,
//! 8.3); Folio stops using a data key for encryption after
//! [`MAX_MESSAGES_PER_DATA_KEY`] messages, far under that bound.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zeroize::Zeroizing;

/// Domain-separation prefix of the associated data (the trailing NUL is part of it).
pub const AAD_PREFIX: &[u8] = b"folio/field/v1\0";

/// Algorithm id of a sealed field: AES-256-GCM with a 96-bit random nonce.
pub const ALG_AES_256_GCM: u8 = 1;

/// Length of a data key in bytes.
pub const DATA_KEY_LEN: usize = 32;

/// Length of a nonce in bytes.
pub const NONCE_LEN: usize = 12;

/// Length of the authentication tag in bytes.
pub const TAG_LEN: usize = 16;

/// Hard limit on the messages one data key may encrypt: 2^24, which keeps the
/// probability of a repeated random nonce under 2^-48.
pub const MAX_MESSAGES_PER_DATA_KEY: u64 = 1 << 24;

/// Maximum plaintext length of one field, in bytes.
pub const MAX_FIELD_LEN: usize = 64 * 1024;

const _: () = assert!(MAX_MESSAGES_PER_DATA_KEY < 1 << 32);

/// Location of a field. Every part goes into the associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldContext<'a> {
    /// Ledger of the event.
    pub ledger_id: Uuid,
    /// Stream of the event.
    pub stream: &'a str,
    /// Event id.
    pub event_id: Uuid,
    /// Field name, such as `account`.
    pub field: &'a str,
}

impl FieldContext<'_> {
    /// The associated data of a field sealed under `data_key_id`:
    ///
    /// `folio/field/v1` NUL, algorithm id (1 byte), ledger id (16 bytes), stream length
    /// (u16 big-endian) and UTF-8 bytes, event id (16 bytes), field length (u16
    /// big-endian) and UTF-8 bytes, data key id (16 bytes).
    ///
    /// # Panics
    /// If the stream or field name is longer than 65,535 bytes; the record limits keep
    /// stream ids far shorter, and field names are constants.
    pub fn associated_data(&self, alg: u8, data_key_id: Uuid) -> Vec<u8> {
        let stream = self.stream.as_bytes();
        let field = self.field.as_bytes();
        let stream_len = u16::try_from(stream.len()).expect("stream id within record limits");
        let field_len = u16::try_from(field.len()).expect("field names are short constants");
        let mut aad = Vec::with_capacity(AAD_PREFIX.len() + 53 + stream.len() + field.len());
        aad.extend_from_slice(AAD_PREFIX);
        aad.push(alg);
        aad.extend_from_slice(self.ledger_id.as_bytes());
        aad.extend_from_slice(&stream_len.to_be_bytes());
        aad.extend_from_slice(stream);
        aad.extend_from_slice(self.event_id.as_bytes());
        aad.extend_from_slice(&field_len.to_be_bytes());
        aad.extend_from_slice(field);
        aad.extend_from_slice(data_key_id.as_bytes());
        aad
    }
}

/// An encrypted field as it is stored in an event payload (postcard-encoded).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedField {
    /// Algorithm id; [`ALG_AES_256_GCM`] is the only one.
    pub alg: u8,
    /// Id of the data key, which the key store maps to its wrapped bytes.
    pub data_key_id: Uuid,
    /// Random nonce.
    pub nonce: [u8; NONCE_LEN],
    /// Ciphertext followed by the 16-byte tag.
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for SealedField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedField")
            .field("data_key_id", &self.data_key_id)
            .field("len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

/// A field could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The sealed field names an algorithm this build does not know.
    #[error("sealed field uses unknown algorithm {0}; this build knows only 1 (AES-256-GCM)")]
    UnknownAlgorithm(u8),
    /// The ciphertext is shorter than a tag.
    #[error("sealed field is truncated ({0} bytes, at least 16 expected)")]
    Truncated(usize),
    /// Wrong key, wrong place (ledger, stream, event, field) or altered bytes.
    #[error(
        "sealed field failed authentication: wrong data key, moved to another place or altered"
    )]
    Authentication,
    /// The plaintext is over [`MAX_FIELD_LEN`].
    #[error("field of {0} bytes is over the limit of 65536 bytes")]
    TooLong(usize),
    /// The data key has encrypted its share of messages or is too old.
    #[error("data key {0} is exhausted; a new data key must be used")]
    KeyExhausted(Uuid),
}

/// A plaintext data key with its id. Its bytes are wiped on drop and never printed.
pub struct DataKey {
    id: Uuid,
    bytes: Zeroizing<[u8; DATA_KEY_LEN]>,
}

impl DataKey {
    /// Wraps key bytes the caller drew from a random source or unwrapped from a KMS.
    pub fn new(id: Uuid, bytes: Zeroizing<[u8; DATA_KEY_LEN]>) -> Self {
        DataKey { id, bytes }
    }

    /// The key's id.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The key bytes, for wrapping by a KMS.
    pub fn expose_bytes(&self) -> &[u8; DATA_KEY_LEN] {
        &self.bytes
    }

    /// Encrypts `plaintext` for the place `context` with the caller's random `nonce`.
    ///
    /// # Errors
    /// [`EnvelopeError::TooLong`] over [`MAX_FIELD_LEN`].
    pub fn seal(
        &self,
        context: &FieldContext<'_>,
        nonce: [u8; NONCE_LEN],
        plaintext: &[u8],
    ) -> Result<SealedField, EnvelopeError> {
        if plaintext.len() > MAX_FIELD_LEN {
            return Err(EnvelopeError::TooLong(plaintext.len()));
        }
        let aad = context.associated_data(ALG_AES_256_GCM, self.id);
        let cipher = Aes256Gcm::new(self.bytes.as_ref().into());
        let payload = Payload {
            msg: plaintext,
            aad: &aad,
        };
        // Encryption fails only for inputs over GCM's length limit (2^36 bytes), and the
        // check above keeps the plaintext at MAX_FIELD_LEN or less.
        let ciphertext = cipher
            .encrypt(Nonce::from_slice(&nonce), payload)
            .expect("AES-GCM encryption of a bounded field");
        Ok(SealedField {
            alg: ALG_AES_256_GCM,
            data_key_id: self.id,
            nonce,
            ciphertext,
        })
    }

    /// Decrypts a field sealed under this key for the same place.
    ///
    /// # Errors
    /// [`EnvelopeError::UnknownAlgorithm`], [`EnvelopeError::Truncated`] or
    /// [`EnvelopeError::Authentication`].
    pub fn open(
        &self,
        context: &FieldContext<'_>,
        sealed: &SealedField,
    ) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
        if sealed.alg != ALG_AES_256_GCM {
            return Err(EnvelopeError::UnknownAlgorithm(sealed.alg));
        }
        if sealed.ciphertext.len() < TAG_LEN {
            return Err(EnvelopeError::Truncated(sealed.ciphertext.len()));
        }
        if sealed.data_key_id != self.id {
            return Err(EnvelopeError::Authentication);
        }
        let aad = context.associated_data(sealed.alg, self.id);
        let cipher = Aes256Gcm::new(self.bytes.as_ref().into());
        let payload = Payload {
            msg: &sealed.ciphertext,
            aad: &aad,
        };
        cipher
            .decrypt(Nonce::from_slice(&sealed.nonce), payload)
            .map(Zeroizing::new)
            .map_err(|_| EnvelopeError::Authentication)
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// When a data key stops encrypting: after `max_messages` messages or `max_age_micros`
/// since it was created, whichever comes first. Decryption is not limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataKeyLimits {
    /// Messages one key may encrypt; at most [`MAX_MESSAGES_PER_DATA_KEY`].
    pub max_messages: u64,
    /// Age in microseconds after which a key no longer encrypts.
    pub max_age_micros: i64,
}

impl DataKeyLimits {
    /// Checks the limits against the hard bound.
    ///
    /// # Errors
    /// Names the limit and the allowed range.
    pub fn validated(self) -> Result<Self, String> {
        if self.max_messages == 0 || self.max_messages > MAX_MESSAGES_PER_DATA_KEY {
            return Err(format!(
                "data key message limit {} is outside 1..={MAX_MESSAGES_PER_DATA_KEY}",
                self.max_messages
            ));
        }
        if self.max_age_micros <= 0 {
            return Err(format!(
                "data key age limit {} µs must be positive",
                self.max_age_micros
            ));
        }
        Ok(self)
    }

    /// Whether a key created at `created_micros` that has sealed `used` messages may seal
    /// one more at `now_micros`.
    pub fn allows(&self, used: u64, created_micros: i64, now_micros: i64) -> bool {
        used < self.max_messages && now_micros.saturating_sub(created_micros) < self.max_age_micros
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> DataKey {
        DataKey::new(Uuid::from_bytes([byte; 16]), Zeroizing::new([byte; 32]))
    }

    fn place<'a>(stream: &'a str, field: &'a str) -> FieldContext<'a> {
        FieldContext {
            ledger_id: Uuid::from_bytes([1; 16]),
            stream,
            event_id: Uuid::from_bytes([2; 16]),
            field,
        }
    }

    #[test]
    fn round_trip_hides_the_plaintext() {
        let sealed = key(9).seal(&place("payee-1", "account"), [3; 12], b"062000 12345678");
        let sealed = sealed.unwrap();
        assert!(!sealed.ciphertext.windows(8).any(|w| w == b"12345678"));
        let opened = key(9).open(&place("payee-1", "account"), &sealed).unwrap();
        assert_eq!(opened.as_slice(), b"062000 12345678");
    }

    #[test]
    fn moved_ciphertext_fails() {
        let here = place("payee-1", "account");
        let sealed = key(9).seal(&here, [3; 12], b"secret").unwrap();
        let elsewhere = [
            place("payee-2", "account"),
            place("payee-1", "name"),
            FieldContext {
                ledger_id: Uuid::from_bytes([7; 16]),
                ..here
            },
            FieldContext {
                event_id: Uuid::from_bytes([7; 16]),
                ..here
            },
        ];
        for other in elsewhere {
            assert_eq!(
                key(9).open(&other, &sealed).err(),
                Some(EnvelopeError::Authentication),
                "{other:?}"
            );
        }
        assert!(key(8).open(&here, &sealed).is_err());
        let mut altered = sealed.clone();
        altered.ciphertext[0] ^= 1;
        assert_eq!(
            key(9).open(&here, &altered).err(),
            Some(EnvelopeError::Authentication)
        );
        let mut unknown = sealed;
        unknown.alg = 2;
        assert_eq!(
            key(9).open(&here, &unknown).err(),
            Some(EnvelopeError::UnknownAlgorithm(2))
        );
    }

    #[test]
    fn associated_data_layout_is_length_prefixed() {
        let aad = place("ab", "c").associated_data(1, Uuid::from_bytes([5; 16]));
        let mut expected = b"folio/field/v1\0".to_vec();
        expected.push(1);
        expected.extend_from_slice(&[1; 16]);
        expected.extend_from_slice(&[0, 2, b'a', b'b']);
        expected.extend_from_slice(&[2; 16]);
        expected.extend_from_slice(&[0, 1, b'c']);
        expected.extend_from_slice(&[5; 16]);
        assert_eq!(aad, expected);
    }

    #[test]
    fn limits_stop_encryption_by_count_and_age() {
        let limits = DataKeyLimits {
            max_messages: 2,
            max_age_micros: 1_000,
        };
        assert!(limits.allows(1, 0, 999));
        assert!(!limits.allows(2, 0, 10));
        assert!(!limits.allows(0, 0, 1_000));
        let too_many = DataKeyLimits {
            max_messages: MAX_MESSAGES_PER_DATA_KEY + 1,
            ..limits
        };
        assert!(too_many.validated().is_err());
        assert!(limits.validated().is_ok());
    }

    #[test]
    fn oversized_field_is_refused() {
        let big = vec![0u8; MAX_FIELD_LEN + 1];
        assert_eq!(
            key(1).seal(&place("s", "f"), [0; 12], &big).err(),
            Some(EnvelopeError::TooLong(MAX_FIELD_LEN + 1))
        );
    }
}
