//! Signing keys, key ids and strict signature verification.
//!
//! Verification here is stricter than plain RFC 8032: it rejects non-canonical
//! encodings of `S`, `R` and the public key, small-order (weak) keys and `R`
//! values, and points with a torsion component. Honest signers never produce
//! any of these. Rejecting them makes batch verification and single
//! verification return the same result for every input, except with
//! negligible probability from the batch's pseudo-random coefficients.

use std::collections::HashMap;

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rayon::prelude::*;

use crate::record::{HASH_LEN, SIGNATURE_LEN};

/// Length of a key id in bytes.
pub const KEY_ID_LEN: usize = 16;

/// Length of an Ed25519 public key in bytes.
pub const PUBLIC_KEY_LEN: usize = 32;

/// Domain-separation prefix of key ids (the trailing NUL is part of the prefix).
pub const KEY_ID_PREFIX: &[u8] = b"folio/key-id/v1\0";

/// Domain-separation prefix of event signatures (the trailing NUL is part of the prefix).
pub const EVENT_SIGNATURE_PREFIX: &[u8] = b"folio/event-signature/v1\0";

/// Number of signatures per batch handed to one core.
const BATCH_SIZE: usize = 64;

/// Identifier of a signing key, derived from its public key (see `docs/ledger-format.md`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; KEY_ID_LEN]);

impl KeyId {
    /// Derives the key id: the first 16 bytes of
    /// BLAKE3(`folio/key-id/v1` NUL, algorithm id, public key).
    pub fn from_public_key(alg: crate::record::SigAlg, public_key: &[u8; PUBLIC_KEY_LEN]) -> Self {
        let mut hasher = blake3::Hasher::new();
        hasher.update(KEY_ID_PREFIX);
        hasher.update(&[alg as u8]);
        hasher.update(public_key);
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&hasher.finalize().as_bytes()[..KEY_ID_LEN]);
        KeyId(id)
    }

    /// Formats the key id as 32 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Debug for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyId({})", self.to_hex())
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A ledger signing key (Ed25519). Its `Debug` output shows the key id only.
pub struct LedgerKey {
    signing: SigningKey,
}

impl LedgerKey {
    /// Generates a key from 32 bytes of operating-system randomness.
    ///
    /// # Panics
    /// Panics if the operating system has no randomness source, because no
    /// safe key can be made without one.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).expect("operating system randomness for a signing key");
        let key = Self::from_seed(seed);
        seed.fill(0);
        key
    }

    /// Builds a key from its 32-byte secret seed (RFC 8032 private key).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        LedgerKey {
            signing: SigningKey::from_bytes(&seed),
        }
    }

    /// Returns the secret seed, for writing to a key file readable only by its owner.
    pub fn seed_bytes(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// Returns the public key.
    pub fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.signing.verifying_key().to_bytes()
    }

    /// Returns the key id of the public key.
    pub fn key_id(&self) -> KeyId {
        KeyId::from_public_key(crate::record::SigAlg::Ed25519, &self.public_key())
    }

    /// Signs `message` (already domain-separated by the caller).
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.signing.sign(message).to_bytes()
    }

    /// Signs an event hash: Ed25519 over `folio/event-signature/v1` NUL, hash.
    pub fn sign_event_hash(&self, hash: &[u8; HASH_LEN]) -> [u8; SIGNATURE_LEN] {
        self.sign(&event_signature_message(hash))
    }
}

impl std::fmt::Debug for LedgerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerKey")
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

/// Builds the message an event signature covers.
pub fn event_signature_message(hash: &[u8; HASH_LEN]) -> Vec<u8> {
    let mut message = Vec::with_capacity(EVENT_SIGNATURE_PREFIX.len() + HASH_LEN);
    message.extend_from_slice(EVENT_SIGNATURE_PREFIX);
    message.extend_from_slice(hash);
    message
}

/// Reason a public key or signature is rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The public key is not a canonical encoding of a curve point.
    #[error("public key is not a canonical curve point")]
    InvalidKey,
    /// The public key has small order (a weak key that many signatures verify under).
    #[error("public key has small order (weak key)")]
    WeakKey,
    /// The public key has a torsion component.
    #[error("public key is not in the prime-order subgroup")]
    KeyNotTorsionFree,
    /// `R` is not a canonical encoding of a curve point.
    #[error("signature R is not a canonical curve point")]
    InvalidR,
    /// `R` has small order.
    #[error("signature R has small order")]
    SmallOrderR,
    /// `R` has a torsion component.
    #[error("signature R is not in the prime-order subgroup")]
    RNotTorsionFree,
    /// `S` is not reduced modulo the group order.
    #[error("signature S is not canonical")]
    NonCanonicalS,
    /// The signature equation does not hold.
    #[error("signature does not verify")]
    Mismatch,
}

/// Decompresses a point, requiring a canonical encoding.
fn decompress_canonical(bytes: &[u8; 32]) -> Option<EdwardsPoint> {
    let point = CompressedEdwardsY(*bytes).decompress()?;
    (point.compress().to_bytes() == *bytes).then_some(point)
}

/// Returns whether `point` has no torsion component, in variable time (`R` is public).
///
/// `[L]P = [L - 1]P + P`. The scalar `L - 1` is `-1` reduced, and scalar multiplication
/// multiplies by that integer on the full curve group, so a torsion component `T` of order
/// dividing 8 survives as `[L]T`, which is not the identity because `L` is odd. This costs
/// one variable-time scalar multiplication instead of the constant-time one of
/// `EdwardsPoint::is_torsion_free`.
fn is_torsion_free_vartime(point: &EdwardsPoint) -> bool {
    let minus_one = -Scalar::ONE;
    let product =
        EdwardsPoint::vartime_double_scalar_mul_basepoint(&minus_one, point, &Scalar::ZERO);
    (product + point).is_identity()
}

/// Checks that a public key is canonical, not weak and torsion-free.
///
/// # Errors
/// Returns the first rule the key breaks.
pub fn check_public_key(public_key: &[u8; PUBLIC_KEY_LEN]) -> Result<(), SignatureError> {
    let point = decompress_canonical(public_key).ok_or(SignatureError::InvalidKey)?;
    if point.is_small_order() {
        return Err(SignatureError::WeakKey);
    }
    if !point.is_torsion_free() {
        return Err(SignatureError::KeyNotTorsionFree);
    }
    Ok(())
}

/// Checks the encoding rules of a signature that batch verification does not check.
///
/// # Errors
/// Returns the first rule the signature breaks.
pub fn check_signature_encoding(signature: &[u8; SIGNATURE_LEN]) -> Result<(), SignatureError> {
    let mut r = [0u8; 32];
    r.copy_from_slice(&signature[..32]);
    let mut s = [0u8; 32];
    s.copy_from_slice(&signature[32..]);

    let point = decompress_canonical(&r).ok_or(SignatureError::InvalidR)?;
    if point.is_small_order() {
        return Err(SignatureError::SmallOrderR);
    }
    if !is_torsion_free_vartime(&point) {
        return Err(SignatureError::RNotTorsionFree);
    }
    if !bool::from(Scalar::from_canonical_bytes(s).is_some()) {
        return Err(SignatureError::NonCanonicalS);
    }
    Ok(())
}

/// Verifies one signature strictly: the key and encoding rules, then `verify_strict`.
///
/// # Errors
/// Returns the first rule the key or signature breaks.
pub fn verify_strict(
    public_key: &[u8; PUBLIC_KEY_LEN],
    message: &[u8],
    signature: &[u8; SIGNATURE_LEN],
) -> Result<(), SignatureError> {
    check_public_key(public_key)?;
    check_signature_encoding(signature)?;
    let key = VerifyingKey::from_bytes(public_key).map_err(|_| SignatureError::InvalidKey)?;
    key.verify_strict(message, &Signature::from_bytes(signature))
        .map_err(|_| SignatureError::Mismatch)
}

/// One signature to check in a batch.
#[derive(Debug, Clone)]
pub struct SignatureCheck {
    /// Signer's public key.
    pub public_key: [u8; PUBLIC_KEY_LEN],
    /// Signed message.
    pub message: Vec<u8>,
    /// Signature.
    pub signature: [u8; SIGNATURE_LEN],
}

/// Verifies many signatures with batch verification across all cores and
/// returns the index of the first one that fails, or `None` if all verify.
///
/// Each distinct public key is checked once, up front. Each chunk of 64 is
/// batch-verified after the strict encoding checks of its signatures. A chunk
/// whose batch fails is rechecked one signature at a time with
/// [`verify_strict`] to find the first bad one.
pub fn first_invalid_signature(checks: &[SignatureCheck]) -> Option<usize> {
    // A ledger is signed by one key or a few. The key's torsion check costs about as much as
    // verifying a signature, so repeating it per signature took half the verification time.
    let keys = checked_keys(checks);
    checks
        .par_chunks(BATCH_SIZE)
        .enumerate()
        .filter_map(|(chunk_index, chunk)| {
            first_invalid_in_chunk(chunk, &keys).map(|offset| chunk_index * BATCH_SIZE + offset)
        })
        .min()
}

/// Checks every distinct public key of `checks` with [`check_public_key`]. Keys that fail map
/// to `None`.
fn checked_keys(checks: &[SignatureCheck]) -> HashMap<[u8; PUBLIC_KEY_LEN], Option<VerifyingKey>> {
    let mut keys = HashMap::new();
    for check in checks {
        keys.entry(check.public_key).or_insert_with(|| {
            check_public_key(&check.public_key).ok()?;
            VerifyingKey::from_bytes(&check.public_key).ok()
        });
    }
    keys
}

/// Batch-verifies one chunk, falling back to single verification on failure.
fn first_invalid_in_chunk(
    chunk: &[SignatureCheck],
    keys: &HashMap<[u8; PUBLIC_KEY_LEN], Option<VerifyingKey>>,
) -> Option<usize> {
    if batch_verifies(chunk, keys) {
        return None;
    }
    chunk.iter().position(|check| {
        verify_strict(&check.public_key, &check.message, &check.signature).is_err()
    })
}

/// Returns true when every key and signature passes the strict checks and the batch equation.
/// `checked` holds the result of [`check_public_key`] for every key of `chunk`.
fn batch_verifies(
    chunk: &[SignatureCheck],
    checked: &HashMap<[u8; PUBLIC_KEY_LEN], Option<VerifyingKey>>,
) -> bool {
    let mut keys = Vec::with_capacity(chunk.len());
    let mut signatures = Vec::with_capacity(chunk.len());
    for check in chunk {
        let Some(Some(key)) = checked.get(&check.public_key) else {
            return false;
        };
        // NOTE: the torsion check of `R` in here is one full scalar multiplication per
        // signature, about twice the per-signature cost of `verify_batch` itself (an estimate
        // from a 2-core x86-64 VM), so strict verification cannot reach the bare batch rate.
        if check_signature_encoding(&check.signature).is_err() {
            return false;
        }
        keys.push(*key);
        signatures.push(Signature::from_bytes(&check.signature));
    }
    let messages: Vec<&[u8]> = chunk.iter().map(|check| check.message.as_slice()).collect();
    ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
}

#[cfg(test)]
mod torsion_tests {
    use super::*;
    use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};

    #[test]
    fn vartime_torsion_check_matches_constant_time() {
        let mut point = ED25519_BASEPOINT_POINT;
        for step in 0..64u64 {
            point += ED25519_BASEPOINT_POINT * Scalar::from(step + 3);
            for torsion in EIGHT_TORSION.iter() {
                let candidate = point + torsion;
                assert_eq!(
                    is_torsion_free_vartime(&candidate),
                    candidate.is_torsion_free(),
                    "step {step}"
                );
            }
        }
    }
}
