//! Dead-letter queue decisions: viewing a parked payment, and retrying or ignoring parked
//! payments once a second operator approves.
//!
//! A decision names an explicit list of payments, so an approver reviews exactly what is
//! retried or ignored. A filter is resolved to such a list before it is proposed. The
//! approval is bound to a hash over the ledger, the decision, its action, reason and
//! payment list, and the proposer can never approve their own decision. An approved retry
//! is released to the dispatcher in paced batches (`dlq.retry_released` on each payment's
//! stream), and the release can be paused and resumed.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::events::{DomainEvent, EventPayload};
use crate::operator_events::AuthContext;

/// Stream holding a ledger's DLQ decisions, written with exact expected versions so two
/// decisions on one payment cannot both pass their checks.
pub const DLQ_STREAM: &str = "dlq";

/// Stream holding the record of who viewed which parked payment.
pub const DLQ_VIEWS_STREAM: &str = "dlq-views";

/// Key-derivation context of [`decision_hash`].
const DECISION_HASH_CONTEXT: &str = "folio dlq decision v1";

macro_rules! dlq_payload {
    ($ty:ident, $name:literal) => {
        impl EventPayload for $ty {
            const EVENT_TYPE: &'static str = $name;
            const SCHEMA_VERSION: u16 = 1;
        }
    };
}

/// Why a parked payment is ignored: a fixed list, so reports can count them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum IgnoreReason {
    /// The payment duplicates another one that was paid.
    Duplicate,
    /// The beneficiary's account is closed.
    BeneficiaryClosed,
    /// The client cancelled the payment.
    CancelledByClient,
    /// The payment was made by other means.
    PaidOutsideFolio,
    /// Anything else, explained in the free text.
    Other,
}

impl IgnoreReason {
    /// Every reason code.
    pub const ALL: [IgnoreReason; 5] = [
        IgnoreReason::Duplicate,
        IgnoreReason::BeneficiaryClosed,
        IgnoreReason::CancelledByClient,
        IgnoreReason::PaidOutsideFolio,
        IgnoreReason::Other,
    ];

    /// Wire name, such as `beneficiary_closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Duplicate => "duplicate",
            Self::BeneficiaryClosed => "beneficiary_closed",
            Self::CancelledByClient => "cancelled_by_client",
            Self::PaidOutsideFolio => "paid_outside_folio",
            Self::Other => "other",
        }
    }
}

impl FromStr for IgnoreReason {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|reason| reason.as_str() == text)
            .ok_or_else(|| {
                let known: Vec<&str> = Self::ALL.iter().map(|r| r.as_str()).collect();
                format!(
                    "unknown ignore reason_code {text:?}; use one of {}",
                    known.join(", ")
                )
            })
    }
}

/// Action of a decision on its payments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DlqAction {
    /// Send the payments to the bank again, with their original idempotency keys.
    Retry,
    /// Close the payments without paying them.
    Ignore {
        /// Why.
        reason_code: IgnoreReason,
    },
}

impl DlqAction {
    /// Returns `retry` or `ignore`.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Retry => "retry",
            Self::Ignore { .. } => "ignore",
        }
    }

    /// Returns the reason code of an ignore.
    pub fn reason_code(self) -> Option<IgnoreReason> {
        match self {
            Self::Retry => None,
            Self::Ignore { reason_code } => Some(reason_code),
        }
    }
}

/// A parked payment's full detail was read; the sealed event's actor names the reader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DlqItemViewed {
    /// Payment viewed.
    pub payment_id: Uuid,
    /// Read-model position the detail was read at.
    pub as_of_position: u64,
}
dlq_payload!(DlqItemViewed, "dlq.item_viewed");

/// An operator proposed to retry or ignore parked payments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DlqDecisionProposed {
    /// Decision id.
    pub decision_id: Uuid,
    /// Retry or ignore.
    pub action: DlqAction,
    /// Payments concerned, sorted, without repeats.
    pub payment_ids: Vec<Uuid>,
    /// Free-text reason, required.
    pub reason: String,
    /// Hash an approval must name (see [`decision_hash`]).
    pub content_hash: [u8; 32],
    /// When the proposal expires, microseconds since the Unix epoch.
    pub expires_at_micros: i64,
    /// Proposer, with step-up.
    pub auth: AuthContext,
}
dlq_payload!(DlqDecisionProposed, "dlq.decision_proposed");

/// A second operator approved a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DlqDecisionApproved {
    /// Decision id.
    pub decision_id: Uuid,
    /// Hash approved.
    pub content_hash: [u8; 32],
    /// Approver, with step-up.
    pub auth: AuthContext,
}
dlq_payload!(DlqDecisionApproved, "dlq.decision_approved");

/// A decision was rejected by an approver or withdrawn by its proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DlqDecisionRejected {
    /// Decision id.
    pub decision_id: Uuid,
    /// Why.
    pub reason: String,
    /// Operator who rejected, with step-up.
    pub auth: AuthContext,
}
dlq_payload!(DlqDecisionRejected, "dlq.decision_rejected");

/// The dispatcher took one payment of an approved retry back into dispatch. Recorded on
/// the payment's stream by the system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DlqRetryReleased {
    /// Decision that approved the retry.
    pub decision_id: Uuid,
    /// Payment released.
    pub payment_id: Uuid,
    /// Release batch of the decision, from 1.
    pub batch: u32,
}
dlq_payload!(DlqRetryReleased, "dlq.retry_released");

/// An operator paused the release of an approved retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DlqReleasePaused {
    /// Decision id.
    pub decision_id: Uuid,
    /// Why.
    pub reason: String,
    /// Operator, with step-up.
    pub auth: AuthContext,
}
dlq_payload!(DlqReleasePaused, "dlq.release_paused");

/// An operator resumed the release of an approved retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DlqReleaseResumed {
    /// Decision id.
    pub decision_id: Uuid,
    /// Operator, with step-up.
    pub auth: AuthContext,
}
dlq_payload!(DlqReleaseResumed, "dlq.release_resumed");

#[derive(Serialize)]
struct HashedDecision<'a> {
    ledger_id: Uuid,
    decision_id: Uuid,
    action: DlqAction,
    payment_ids: &'a [Uuid],
    reason: &'a str,
}

/// Returns the hash an approval is bound to: blake3 in key-derivation mode with the
/// context `folio dlq decision v1` over the postcard encoding of the ledger id, the
/// decision id, the action, the payment ids and the reason.
pub fn decision_hash(
    ledger_id: Uuid,
    decision_id: Uuid,
    action: DlqAction,
    payment_ids: &[Uuid],
    reason: &str,
) -> [u8; 32] {
    let content = HashedDecision {
        ledger_id,
        decision_id,
        action,
        payment_ids,
        reason,
    };
    // Postcard encoding of plain structs fails only on allocation failure, which aborts.
    let bytes = postcard::to_allocvec(&content).expect("postcard encoding of a decision");
    blake3::derive_key(DECISION_HASH_CONTEXT, &bytes)
}

/// Status of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionStatus {
    /// Waiting for a second operator.
    Pending,
    /// Approved: an ignore is final, a retry is being released.
    Approved,
    /// Rejected or withdrawn.
    Rejected,
}

impl DecisionStatus {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
        }
    }
}

/// A decision as rebuilt from the `dlq` stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Decision id.
    pub decision_id: Uuid,
    /// Retry or ignore.
    pub action: DlqAction,
    /// Payments concerned.
    pub payment_ids: Vec<Uuid>,
    /// Free-text reason.
    pub reason: String,
    /// Hash of the content.
    pub content_hash: [u8; 32],
    /// Proposer.
    pub proposer: Uuid,
    /// When the proposal expires, microseconds since the Unix epoch.
    pub expires_at_micros: i64,
    /// Status.
    pub status: DecisionStatus,
    /// Approver, once approved.
    pub approver: Option<Uuid>,
    /// Whether the release of an approved retry is paused.
    pub paused: bool,
}

/// A DLQ decision broke a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DlqDecisionError {
    /// No such decision.
    #[error("DLQ decision {decision_id} does not exist on this ledger")]
    NotFound {
        /// The id.
        decision_id: Uuid,
    },
    /// The decision was already decided.
    #[error("DLQ decision {decision_id} is {status}, not pending; propose it again")]
    NotPending {
        /// The id.
        decision_id: Uuid,
        /// Its status.
        status: &'static str,
    },
    /// The decision expired.
    #[error("DLQ decision {decision_id} expired; propose it again")]
    Expired {
        /// The id.
        decision_id: Uuid,
    },
    /// The approver reviewed other content.
    #[error(
        "DLQ decision {decision_id} has content hash {current}; review it and approve that hash"
    )]
    HashMismatch {
        /// The id.
        decision_id: Uuid,
        /// Current hash, hex.
        current: String,
    },
    /// The proposer tried to approve.
    #[error(
        "operator {operator_id} proposed DLQ decision {decision_id} and cannot approve it; a \
         different operator must approve"
    )]
    SelfApproval {
        /// The id.
        decision_id: Uuid,
        /// The operator.
        operator_id: Uuid,
    },
    /// A payment is already part of a decision that is pending or being carried out.
    #[error(
        "payment {payment_id} is already in DLQ decision {decision_id}; approve or reject that \
         one first"
    )]
    AlreadyDecided {
        /// The payment.
        payment_id: Uuid,
        /// The decision holding it.
        decision_id: Uuid,
    },
    /// Pause and resume apply to approved retries only.
    #[error(
        "DLQ decision {decision_id} is not an approved retry, so its release cannot be {verb}"
    )]
    NotARelease {
        /// The id.
        decision_id: Uuid,
        /// `paused` or `resumed`.
        verb: &'static str,
    },
}

impl DlqDecisionError {
    /// Returns the stable snake_case code of the rejection.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "dlq_decision_not_found",
            Self::NotPending { .. } => "dlq_decision_not_pending",
            Self::Expired { .. } => "dlq_decision_expired",
            Self::HashMismatch { .. } => "dlq_decision_hash_mismatch",
            Self::SelfApproval { .. } => "self_approval",
            Self::AlreadyDecided { .. } => "dlq_payment_already_decided",
            Self::NotARelease { .. } => "dlq_decision_not_a_release",
        }
    }
}

/// Every DLQ decision of a ledger, rebuilt from the `dlq` stream.
#[derive(Debug, Clone, Default)]
pub struct DlqBook {
    decisions: BTreeMap<Uuid, Decision>,
    /// Latest decision naming each payment, with the position of its approval once
    /// approved.
    claims: BTreeMap<Uuid, Uuid>,
    approved_at: BTreeMap<Uuid, u64>,
}

impl DlqBook {
    /// Applies one event of the `dlq` stream at `position`; other events are ignored.
    pub fn apply(&mut self, position: u64, event: &DomainEvent) {
        match event {
            DomainEvent::DlqDecisionProposed(e) => self.proposed(e),
            DomainEvent::DlqDecisionApproved(e) => {
                self.approved_at.insert(e.decision_id, position);
                if let Some(decision) = self.decisions.get_mut(&e.decision_id) {
                    decision.status = DecisionStatus::Approved;
                    decision.approver = Some(e.auth.operator_id);
                }
            }
            DomainEvent::DlqDecisionRejected(e) => {
                if let Some(decision) = self.decisions.get_mut(&e.decision_id) {
                    decision.status = DecisionStatus::Rejected;
                }
            }
            DomainEvent::DlqReleasePaused(e) => self.set_paused(e.decision_id, true),
            DomainEvent::DlqReleaseResumed(e) => self.set_paused(e.decision_id, false),
            _ => {}
        }
    }

    fn proposed(&mut self, e: &DlqDecisionProposed) {
        let decision = Decision {
            decision_id: e.decision_id,
            action: e.action,
            payment_ids: e.payment_ids.clone(),
            reason: e.reason.clone(),
            content_hash: e.content_hash,
            proposer: e.auth.operator_id,
            expires_at_micros: e.expires_at_micros,
            status: DecisionStatus::Pending,
            approver: None,
            paused: false,
        };
        for payment_id in &e.payment_ids {
            self.claims.insert(*payment_id, e.decision_id);
        }
        self.decisions.insert(e.decision_id, decision);
    }

    fn set_paused(&mut self, decision_id: Uuid, paused: bool) {
        if let Some(decision) = self.decisions.get_mut(&decision_id) {
            decision.paused = paused;
        }
    }

    /// Returns a decision.
    pub fn get(&self, decision_id: Uuid) -> Option<&Decision> {
        self.decisions.get(&decision_id)
    }

    /// Iterates over decisions in id order (oldest first, ids are UUIDv7).
    pub fn iter(&self) -> impl Iterator<Item = &Decision> {
        self.decisions.values()
    }

    /// Checks that a parked payment, dead-lettered last at `parked_position`, is free for
    /// a new decision: no decision holds it, or the last one was rejected, expired, or was
    /// a retry that ended in the dead-letter queue again.
    ///
    /// # Errors
    /// [`DlqDecisionError::AlreadyDecided`] naming the decision that holds it.
    pub fn check_free(
        &self,
        payment_id: Uuid,
        parked_position: u64,
        now_micros: i64,
    ) -> Result<(), DlqDecisionError> {
        let Some(decision_id) = self.claims.get(&payment_id).copied() else {
            return Ok(());
        };
        let Some(decision) = self.decisions.get(&decision_id) else {
            return Ok(());
        };
        let holds = match decision.status {
            DecisionStatus::Rejected => false,
            DecisionStatus::Pending => now_micros < decision.expires_at_micros,
            DecisionStatus::Approved => match decision.action {
                DlqAction::Ignore { .. } => true,
                // A payment parked again after the retry's approval is free for a new decision.
                DlqAction::Retry => self
                    .approved_at
                    .get(&decision_id)
                    .is_some_and(|approved| *approved > parked_position),
            },
        };
        if holds {
            return Err(DlqDecisionError::AlreadyDecided {
                payment_id,
                decision_id,
            });
        }
        Ok(())
    }

    /// Returns the pending, unexpired decision, or why it cannot be decided.
    ///
    /// # Errors
    /// [`DlqDecisionError::NotFound`], [`DlqDecisionError::NotPending`] or
    /// [`DlqDecisionError::Expired`].
    pub fn open(&self, decision_id: Uuid, now_micros: i64) -> Result<&Decision, DlqDecisionError> {
        let decision = self
            .get(decision_id)
            .ok_or(DlqDecisionError::NotFound { decision_id })?;
        if decision.status != DecisionStatus::Pending {
            return Err(DlqDecisionError::NotPending {
                decision_id,
                status: decision.status.as_str(),
            });
        }
        if now_micros >= decision.expires_at_micros {
            return Err(DlqDecisionError::Expired { decision_id });
        }
        Ok(decision)
    }

    /// Checks that `approver` may approve the decision, identified by `hash`.
    ///
    /// # Errors
    /// Those of [`DlqBook::open`], then [`DlqDecisionError::SelfApproval`] and
    /// [`DlqDecisionError::HashMismatch`].
    pub fn check_approval(
        &self,
        decision_id: Uuid,
        approver: Uuid,
        hash: &[u8; 32],
        now_micros: i64,
    ) -> Result<&Decision, DlqDecisionError> {
        let decision = self.open(decision_id, now_micros)?;
        if decision.proposer == approver {
            return Err(DlqDecisionError::SelfApproval {
                decision_id,
                operator_id: approver,
            });
        }
        if &decision.content_hash != hash {
            return Err(DlqDecisionError::HashMismatch {
                decision_id,
                current: hex::encode(decision.content_hash),
            });
        }
        Ok(decision)
    }

    /// Returns the approved retry whose release is paused or resumed.
    ///
    /// # Errors
    /// [`DlqDecisionError::NotFound`] or [`DlqDecisionError::NotARelease`].
    pub fn release(
        &self,
        decision_id: Uuid,
        verb: &'static str,
    ) -> Result<&Decision, DlqDecisionError> {
        let decision = self
            .get(decision_id)
            .ok_or(DlqDecisionError::NotFound { decision_id })?;
        if decision.status != DecisionStatus::Approved || decision.action != DlqAction::Retry {
            return Err(DlqDecisionError::NotARelease { decision_id, verb });
        }
        Ok(decision)
    }
}

/// Sorts payment ids and drops repeats, the canonical order of a decision's list.
pub fn canonical_payment_ids(ids: impl IntoIterator<Item = Uuid>) -> Vec<Uuid> {
    ids.into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEDGER: Uuid = Uuid::from_u128(9);

    fn auth(operator: u128) -> AuthContext {
        AuthContext {
            operator_id: Uuid::from_u128(operator),
            session_id: Uuid::from_u128(100 + operator),
            factor: "totp".into(),
            factor_verified_at_micros: 0,
        }
    }

    fn propose(book: &mut DlqBook, id: u128, action: DlqAction, payments: &[u128]) -> [u8; 32] {
        let decision_id = Uuid::from_u128(id);
        let payment_ids = canonical_payment_ids(payments.iter().map(|p| Uuid::from_u128(*p)));
        let content_hash = decision_hash(LEDGER, decision_id, action, &payment_ids, "bank back");
        book.apply(
            1,
            &DomainEvent::DlqDecisionProposed(DlqDecisionProposed {
                decision_id,
                action,
                payment_ids,
                reason: "bank back".into(),
                content_hash,
                expires_at_micros: 1_000,
                auth: auth(1),
            }),
        );
        content_hash
    }

    #[test]
    fn hash_depends_on_every_part() {
        let (id, payments) = (Uuid::from_u128(1), [Uuid::from_u128(5)]);
        let base = decision_hash(LEDGER, id, DlqAction::Retry, &payments, "r");
        let ignore = DlqAction::Ignore {
            reason_code: IgnoreReason::Duplicate,
        };
        assert_ne!(base, decision_hash(LEDGER, id, ignore, &payments, "r"));
        assert_ne!(base, decision_hash(LEDGER, id, DlqAction::Retry, &[], "r"));
        assert_ne!(
            base,
            decision_hash(LEDGER, id, DlqAction::Retry, &payments, "s")
        );
        assert_ne!(
            base,
            decision_hash(Uuid::nil(), id, DlqAction::Retry, &payments, "r")
        );
        assert_eq!(
            base,
            decision_hash(LEDGER, id, DlqAction::Retry, &payments, "r")
        );
    }

    #[test]
    fn proposer_cannot_approve_and_hash_must_match() {
        let mut book = DlqBook::default();
        let hash = propose(&mut book, 1, DlqAction::Retry, &[5]);
        let id = Uuid::from_u128(1);
        let own = book.check_approval(id, Uuid::from_u128(1), &hash, 0);
        assert_eq!(own.unwrap_err().code(), "self_approval");
        let wrong = book.check_approval(id, Uuid::from_u128(2), &[0; 32], 0);
        assert_eq!(wrong.unwrap_err().code(), "dlq_decision_hash_mismatch");
        let late = book.check_approval(id, Uuid::from_u128(2), &hash, 1_000);
        assert_eq!(late.unwrap_err().code(), "dlq_decision_expired");
        assert!(book
            .check_approval(id, Uuid::from_u128(2), &hash, 0)
            .is_ok());
    }

    #[test]
    fn payment_in_one_open_decision_at_a_time() {
        let mut book = DlqBook::default();
        let payment = Uuid::from_u128(5);
        assert!(book.check_free(payment, 1, 0).is_ok());
        propose(&mut book, 1, DlqAction::Retry, &[5]);
        let held = book.check_free(payment, 1, 0).unwrap_err();
        assert_eq!(held.code(), "dlq_payment_already_decided");
        assert!(book.check_free(payment, 1, 1_000).is_ok(), "expired");

        book.apply(
            3,
            &DomainEvent::DlqDecisionApproved(DlqDecisionApproved {
                decision_id: Uuid::from_u128(1),
                content_hash: [0; 32],
                auth: auth(2),
            }),
        );
        assert!(book.check_free(payment, 1, 0).is_err(), "released later");
        assert!(
            book.check_free(payment, 9, 0).is_ok(),
            "parked again after retry"
        );
        assert!(book.release(Uuid::from_u128(1), "paused").is_ok());

        let ignore = DlqAction::Ignore {
            reason_code: IgnoreReason::Other,
        };
        propose(&mut book, 2, ignore, &[6]);
        assert_eq!(
            book.release(Uuid::from_u128(2), "paused")
                .unwrap_err()
                .code(),
            "dlq_decision_not_a_release"
        );
    }

    #[test]
    fn reason_codes_round_trip() {
        for reason in IgnoreReason::ALL {
            assert_eq!(reason.as_str().parse::<IgnoreReason>(), Ok(reason));
        }
        assert!("lost"
            .parse::<IgnoreReason>()
            .unwrap_err()
            .contains("paid_outside_folio"));
    }
}
