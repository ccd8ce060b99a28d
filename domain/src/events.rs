//! Event payloads: one serde type per event type, encoded with postcard.
//!
//! Postcard's wire format is specified and deterministic for these types (no
//! maps, no floats), so the payload bytes a command produces are the bytes that
//! are hashed and signed. Changing a type's fields is a breaking change that
//! needs a new `SCHEMA_VERSION`.

use crate::anomaly_events::{PaymentFlagged, PaymentReviewed};
use crate::controls::ControlsRunRecorded;
use crate::dlq::{
    DlqDecisionApproved, DlqDecisionProposed, DlqDecisionRejected, DlqItemViewed, DlqReleasePaused,
    DlqReleaseResumed, DlqRetryReleased,
};
use crate::key_events::{DataKeysRewrapped, KekRetired, KekRotated};
use crate::personal::{
    ChangeProposedSealed, PayeeAddedSealed, PaymentSubmittedSealed, RetentionApplied, SubjectErased,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use uuid::Uuid;

// Operator and approval payloads live in their own module; they are decoded here too.
use crate::operator_events::{
    ChallengeFailed, ChallengeIssued, ChallengePassed, ChangeApproved, ChangeExpired,
    ChangeProposed, ChangeRejected, MfaEnrolled, MfaEnrolmentStarted, MfaReset, MfaResetProposed,
    OperatorCreated, OperatorLocked, OperatorUnlocked, RecoveryCodeUsed, RecoveryCodesAcknowledged,
    RecoveryCodesIssued, SessionRevoked, SessionStarted, StepUpGranted,
};

/// A payload type with a fixed event type name and schema version.
pub trait EventPayload: Serialize + DeserializeOwned {
    /// Dotted event type name, such as `payment.submitted`.
    const EVENT_TYPE: &'static str;
    /// Schema version of this payload type.
    const SCHEMA_VERSION: u16;

    /// Encodes the payload with postcard.
    fn encode(&self) -> Vec<u8> {
        // Postcard serialisation of these plain structs has no failure path
        // except allocation, which aborts anyway.
        postcard::to_allocvec(self).expect("postcard encoding of an event payload")
    }

    /// Decodes a payload.
    ///
    /// # Errors
    /// Returns [`PayloadError`] if the bytes are not a valid encoding of `Self`.
    fn decode(bytes: &[u8]) -> Result<Self, PayloadError> {
        let (value, rest) =
            postcard::take_from_bytes(bytes).map_err(|e| PayloadError::Invalid {
                event_type: Self::EVENT_TYPE,
                reason: e.to_string(),
            })?;
        if !rest.is_empty() {
            return Err(PayloadError::Invalid {
                event_type: Self::EVENT_TYPE,
                reason: format!("{} trailing bytes", rest.len()),
            });
        }
        Ok(value)
    }
}

/// A payload could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    /// The bytes are not a valid encoding of the payload type.
    #[error("invalid {event_type} payload: {reason}")]
    Invalid {
        /// Event type.
        event_type: &'static str,
        /// Decoder message.
        reason: String,
    },
    /// The event type or schema version is not known to this build.
    #[error("unknown event type {event_type} schema version {schema_version}")]
    Unknown {
        /// Event type.
        event_type: String,
        /// Schema version.
        schema_version: u16,
    },
}

macro_rules! payload {
    ($ty:ident, $name:literal, $version:literal) => {
        impl EventPayload for $ty {
            const EVENT_TYPE: &'static str = $name;
            const SCHEMA_VERSION: u16 = $version;
        }
    };
}

/// Genesis: the ledger exists and names its first signing key.
///
/// Field order is part of the ledger format: an independent verifier reads the
/// public key from this payload (see `docs/ledger-format.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerCreated {
    /// Signature algorithm identifier of `public_key` (1 = Ed25519).
    pub key_algorithm: u8,
    /// The signing public key.
    pub public_key: [u8; 32],
    /// Tenant the ledger belongs to.
    pub tenant: String,
}
payload!(LedgerCreated, "ledger.created", 1);

/// The signing key changes. Sealed and signed by the old key; every later event
/// is signed by the new one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerKeyRotated {
    /// Signature algorithm identifier of `new_public_key` (1 = Ed25519).
    pub key_algorithm: u8,
    /// The new signing public key.
    pub new_public_key: [u8; 32],
    /// Reason for the rotation (scheduled, suspected compromise, ...).
    pub reason: String,
}
payload!(LedgerKeyRotated, "ledger.key_rotated", 1);

/// A signing key version is compromised: events it signed from `from_position` on are no
/// longer trusted. Recorded after a rotation away from it, so a trusted key signs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerKeyRevoked {
    /// Signature algorithm identifier of `public_key` (1 = Ed25519).
    pub key_algorithm: u8,
    /// The revoked public key.
    pub public_key: [u8; 32],
    /// First position whose signature by this key is not trusted.
    pub from_position: u64,
    /// Why (suspected compromise, ...).
    pub reason: String,
}
payload!(LedgerKeyRevoked, "ledger.key_revoked", 1);

/// Bank account of a payee.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PayeeAccount {
    /// Australian account: six-digit BSB (no dash) and account number (digits, leading zeros kept).
    Bsb {
        /// Six digits, no separator.
        bsb: String,
        /// Account number digits as given, leading zeros kept.
        account: String,
    },
    /// International Bank Account Number in electronic format (upper case, no spaces).
    Iban {
        /// The IBAN.
        iban: String,
    },
    /// The account cannot be shown: erased, or sealed and read without the KMS. Never
    /// stored in an event; readers build it from a sealed `payee.added` (version 2).
    Unavailable {
        /// `[erased]` or `[encrypted]`.
        why: String,
        /// The payee, so two unavailable accounts never look like one.
        payee_id: Uuid,
    },
}

/// A payee was added to the tenant's allow-list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayeeAdded {
    /// Payee id.
    pub payee_id: Uuid,
    /// Name as given.
    pub name: String,
    /// Name after NFKC normalisation, case folding and whitespace collapsing.
    pub normalized_name: String,
    /// Bank account.
    pub account: PayeeAccount,
    /// Existing payees whose names look like this one (flagged, not blocked).
    pub lookalike_of: Vec<Uuid>,
}
payload!(PayeeAdded, "payee.added", 1);

/// A payee was removed from the allow-list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayeeRemoved {
    /// Payee id.
    pub payee_id: Uuid,
    /// Why.
    pub reason: String,
}
payload!(PayeeRemoved, "payee.removed", 1);

/// Origin of a payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentSource {
    /// A single `POST .../payments`.
    Api,
    /// A detail record of an ABA file.
    AbaFile {
        /// Batch id.
        batch_id: Uuid,
        /// 1-based line number of the detail record.
        line: u32,
    },
}

/// A payment was accepted for dispatch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentSubmitted {
    /// Payment id.
    pub payment_id: Uuid,
    /// Allow-listed payee paid.
    pub payee_id: Uuid,
    /// Amount in minor units (cents), greater than zero.
    pub amount_minor: u64,
    /// ISO 4217 currency code.
    pub currency: String,
    /// Payee account at submission time.
    pub account: PayeeAccount,
    /// Payee name sent to the bank.
    pub payee_name: String,
    /// Reference text shown to the payee (ABA lodgement reference).
    pub reference: String,
    /// Key sent to the bank, derived from the ledger and payment ids.
    pub bank_idempotency_key: String,
    /// Origin.
    pub source: PaymentSource,
}
payload!(PaymentSubmitted, "payment.submitted", 1);

/// A payment request broke a business rule and was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRejected {
    /// Payment id that was allocated to the request.
    pub payment_id: Uuid,
    /// Payee the request named (not necessarily on the allow-list).
    pub payee_id: Uuid,
    /// Amount requested, in minor units (already checked to be a positive integer).
    pub amount_minor: u64,
    /// Currency code as requested.
    pub currency: String,
    /// Stable rejection code, as returned by the API.
    pub code: String,
    /// Human-readable reason.
    pub detail: String,
}
payload!(PaymentRejected, "payment.rejected", 1);

/// An ABA file was imported; its payments follow in the same append.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbaBatchImported {
    /// Batch id.
    pub batch_id: Uuid,
    /// blake3 of the file bytes.
    pub file_blake3: [u8; 32],
    /// Number of detail records.
    pub detail_count: u32,
    /// Sum of credit amounts in cents.
    pub credit_total_minor: u64,
    /// Sum of debit amounts in cents.
    pub debit_total_minor: u64,
    /// Name of the user's financial institution from the descriptive record.
    pub user_name: String,
    /// Processing date from the descriptive record (DDMMYY).
    pub processing_date: String,
}
payload!(AbaBatchImported, "aba.batch_imported", 1);

/// The dispatcher is about to call the bank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatchAttempted {
    /// Payment id.
    pub payment_id: Uuid,
    /// 1-based attempt number.
    pub attempt: u32,
    /// Idempotency key sent to the bank (the same on every attempt).
    pub bank_idempotency_key: String,
}
payload!(DispatchAttempted, "payment.dispatch_attempted", 1);

/// A bank call failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatchFailed {
    /// Payment id.
    pub payment_id: Uuid,
    /// Attempt that failed.
    pub attempt: u32,
    /// Failure class: `timeout`, `connect`, `tls`, `http_5xx`, `http_4xx`, `breaker_open`, `invalid_response`.
    pub error_kind: String,
    /// Failure detail, with no secrets.
    pub detail: String,
    /// Whether another attempt will follow.
    pub will_retry: bool,
    /// Delay before the next attempt, in milliseconds.
    pub retry_in_ms: Option<u64>,
}
payload!(DispatchFailed, "payment.dispatch_failed", 1);

/// The bank accepted the payment and returned a receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptRecorded {
    /// Payment id.
    pub payment_id: Uuid,
    /// Attempt that succeeded.
    pub attempt: u32,
    /// Bank's reference for the payment.
    pub bank_reference: String,
    /// HTTP status of the bank's response.
    pub response_status: u16,
    /// blake3 of the bank's raw response body.
    pub response_blake3: [u8; 32],
}
payload!(ReceiptRecorded, "payment.receipt_recorded", 1);

/// The payment failed its last attempt and waits in the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentDeadLettered {
    /// Payment id.
    pub payment_id: Uuid,
    /// Attempts made.
    pub attempts: u32,
    /// Last failure class.
    pub last_error_kind: String,
    /// Last failure detail.
    pub last_error: String,
}
payload!(PaymentDeadLettered, "payment.dead_lettered", 1);

/// The bank circuit breaker changed state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerStateChanged {
    /// Previous state: `closed`, `open` or `half_open`.
    pub from: String,
    /// New state.
    pub to: String,
    /// Why.
    pub reason: String,
}
payload!(BreakerStateChanged, "bank.breaker_state_changed", 1);

/// Every payload type known to this build, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[allow(missing_docs)] // Each variant carries the payload type of the same name.
pub enum DomainEvent {
    LedgerCreated(LedgerCreated),
    LedgerKeyRotated(LedgerKeyRotated),
    LedgerKeyRevoked(LedgerKeyRevoked),
    KekRotated(crate::key_events::KekRotated),
    DataKeysRewrapped(crate::key_events::DataKeysRewrapped),
    KekRetired(crate::key_events::KekRetired),
    PayeeAdded(PayeeAdded),
    PayeeAddedSealed(crate::personal::PayeeAddedSealed),
    SubjectErased(crate::personal::SubjectErased),
    RetentionApplied(crate::personal::RetentionApplied),
    PayeeRemoved(PayeeRemoved),
    PaymentSubmitted(PaymentSubmitted),
    PaymentSubmittedSealed(PaymentSubmittedSealed),
    PaymentRejected(PaymentRejected),
    AbaBatchImported(AbaBatchImported),
    DispatchAttempted(DispatchAttempted),
    DispatchFailed(DispatchFailed),
    ReceiptRecorded(ReceiptRecorded),
    PaymentDeadLettered(PaymentDeadLettered),
    BreakerStateChanged(BreakerStateChanged),
    ControlsRunRecorded(ControlsRunRecorded),
    OperatorCreated(OperatorCreated),
    SessionStarted(SessionStarted),
    SessionRevoked(SessionRevoked),
    MfaEnrolmentStarted(MfaEnrolmentStarted),
    RecoveryCodesIssued(RecoveryCodesIssued),
    RecoveryCodesAcknowledged(RecoveryCodesAcknowledged),
    MfaEnrolled(MfaEnrolled),
    ChallengeIssued(ChallengeIssued),
    ChallengePassed(ChallengePassed),
    ChallengeFailed(ChallengeFailed),
    OperatorLocked(OperatorLocked),
    OperatorUnlocked(OperatorUnlocked),
    RecoveryCodeUsed(RecoveryCodeUsed),
    StepUpGranted(StepUpGranted),
    MfaResetProposed(MfaResetProposed),
    MfaReset(MfaReset),
    ChangeProposed(ChangeProposed),
    ChangeProposedSealed(ChangeProposedSealed),
    ChangeApproved(ChangeApproved),
    ChangeRejected(ChangeRejected),
    ChangeExpired(ChangeExpired),
    DlqItemViewed(DlqItemViewed),
    DlqDecisionProposed(DlqDecisionProposed),
    DlqDecisionApproved(DlqDecisionApproved),
    DlqDecisionRejected(DlqDecisionRejected),
    DlqRetryReleased(DlqRetryReleased),
    DlqReleasePaused(DlqReleasePaused),
    DlqReleaseResumed(DlqReleaseResumed),
    PaymentFlagged(PaymentFlagged),
    PaymentReviewed(PaymentReviewed),
}

impl DomainEvent {
    /// Decodes a payload by event type and schema version.
    ///
    /// # Errors
    /// [`PayloadError::Unknown`] for a type or version this build does not know,
    /// [`PayloadError::Invalid`] for bytes that do not decode.
    pub fn decode(
        event_type: &str,
        schema_version: u16,
        payload: &[u8],
    ) -> Result<Self, PayloadError> {
        macro_rules! try_decode {
            ($($ty:ident),*) => {
                $(if event_type == $ty::EVENT_TYPE && schema_version == $ty::SCHEMA_VERSION {
                    return $ty::decode(payload).map(DomainEvent::$ty);
                })*
            };
        }
        try_decode!(
            LedgerCreated,
            LedgerKeyRotated,
            LedgerKeyRevoked,
            KekRotated,
            DataKeysRewrapped,
            KekRetired,
            PayeeAdded,
            PayeeAddedSealed,
            SubjectErased,
            RetentionApplied,
            PayeeRemoved,
            PaymentSubmitted,
            PaymentSubmittedSealed,
            PaymentRejected,
            AbaBatchImported,
            DispatchAttempted,
            DispatchFailed,
            ReceiptRecorded,
            PaymentDeadLettered,
            BreakerStateChanged,
            ControlsRunRecorded,
            OperatorCreated,
            SessionStarted,
            SessionRevoked,
            MfaEnrolmentStarted,
            RecoveryCodesIssued,
            RecoveryCodesAcknowledged,
            MfaEnrolled,
            ChallengeIssued,
            ChallengePassed,
            ChallengeFailed,
            OperatorLocked,
            OperatorUnlocked,
            RecoveryCodeUsed,
            StepUpGranted,
            MfaResetProposed,
            MfaReset,
            ChangeProposed,
            ChangeProposedSealed,
            ChangeApproved,
            ChangeRejected,
            ChangeExpired,
            DlqItemViewed,
            DlqDecisionProposed,
            DlqDecisionApproved,
            DlqDecisionRejected,
            DlqRetryReleased,
            DlqReleasePaused,
            DlqReleaseResumed,
            PaymentFlagged,
            PaymentReviewed
        );
        Err(PayloadError::Unknown {
            event_type: event_type.to_owned(),
            schema_version,
        })
    }

    /// The event as a reader without the KMS sees it: a sealed `payee.added` becomes the
    /// plain payload with `[encrypted]` fields; other events are unchanged.
    pub fn without_keys(self) -> Self {
        match self {
            DomainEvent::PayeeAddedSealed(sealed) => {
                DomainEvent::PayeeAdded(sealed.unreadable(crate::personal::Unreadable::Sealed))
            }
            DomainEvent::ChangeProposedSealed(sealed) => {
                DomainEvent::ChangeProposed(sealed.unreadable(crate::personal::Unreadable::Sealed))
            }
            DomainEvent::PaymentSubmittedSealed(sealed) => DomainEvent::PaymentSubmitted(
                sealed.unreadable(crate::personal::Unreadable::Sealed),
            ),
            other => other,
        }
    }

    /// Encodes a payload into an event draft's type, schema version and bytes.
    pub fn encode<P: EventPayload>(payload: &P) -> (&'static str, u16, Vec<u8>) {
        (P::EVENT_TYPE, P::SCHEMA_VERSION, payload.encode())
    }
}
