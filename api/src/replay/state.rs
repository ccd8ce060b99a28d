//! Point-in-time state: the allow-list, operators, payments, dead-letter queue and signing
//! keys, rebuilt in memory from verified events. The live read models are never touched.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use anyhow::anyhow;
use domain::anomaly_events::ReviewDecision;
use domain::events::{DomainEvent, PayeeAccount};
use domain::operator_events::{ChangeApproved, ChangeProposed, OperatorCreated};
use domain::operators::{AllowListChange, Role};
use domain::payments::AllowList;
use domain::record::SealedEvent;
use serde::Serialize;
use uuid::Uuid;

use super::event_view::format_micros;

/// The point of a state: the last event applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Point {
    /// Position of the last event applied.
    pub position: u64,
    /// When that event was recorded, RFC 3339 UTC.
    pub recorded_at: String,
    /// Hash of that event, hex: the chain up to it verified.
    pub hash: String,
}

/// Proposer and approver of an allow-list change, with the positions of both events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Approval {
    /// Proposal id.
    pub proposal_id: Uuid,
    /// Operator who proposed the change.
    pub proposed_by: Uuid,
    /// Position of the proposal event (its last revision).
    pub proposed_at: u64,
    /// Operator who approved it.
    pub approved_by: Uuid,
    /// Position of the approval event.
    pub approved_at: u64,
}

/// A payee on the allow-list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PayeeState {
    /// Payee id.
    pub payee_id: Uuid,
    /// Name as given.
    pub name: String,
    /// Bank account.
    pub account: PayeeAccount,
    /// Position of the `payee.added` event.
    pub added_at: u64,
    /// End of the cooling-off period, microseconds since the Unix epoch, once approved.
    pub payable_from_micros: Option<i64>,
    /// Approval that added the payee; `None` for a payee added before approvals existed.
    pub approval: Option<Approval>,
}

/// A payee taken off the allow-list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemovedPayee {
    /// The payee as it was when removed.
    pub payee: PayeeState,
    /// Position of the `payee.removed` event.
    pub removed_at: u64,
    /// Reason recorded.
    pub reason: String,
    /// Approval that removed the payee, if any.
    pub approval: Option<Approval>,
}

/// An operator account with its roles and the scopes they give.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OperatorState {
    /// Operator id.
    pub operator_id: Uuid,
    /// User name.
    pub username: String,
    /// Roles, as recorded.
    pub roles: Vec<String>,
    /// Scopes the roles give, sorted.
    pub scopes: Vec<String>,
    /// Position of the `operator.created` event.
    pub created_at: u64,
    /// Administrator who created the account; `None` for the command-line bootstrap.
    pub created_by: Option<Uuid>,
    /// Whether an authenticator app is enrolled.
    pub mfa_enrolled: bool,
    /// End of the last lock-out, microseconds since the Unix epoch, if any.
    pub locked_until_micros: Option<i64>,
}

/// A payment and the status its events give it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PaymentState {
    /// Payment id.
    pub payment_id: Uuid,
    /// Payee paid.
    pub payee_id: Uuid,
    /// Amount in minor units.
    pub amount_minor: u64,
    /// ISO 4217 currency code.
    pub currency: String,
    /// Status, with the names of the payments read model (`submitted`, `dispatching`,
    /// `receipted`, `failed_retrying`, `dead_lettered`, `rejected`, `held_for_review`,
    /// `review_rejected`).
    pub status: String,
    /// Bank attempts started.
    pub attempts: u32,
    /// Failure class of the last failed attempt.
    pub last_error_kind: Option<String>,
    /// Position of the event that created the payment.
    pub submitted_at: u64,
    /// Position of the event that set the status.
    pub status_at: u64,
}

impl PaymentState {
    /// Creates a payment recorded at `position` with `status`; the caller fills in the
    /// payee, amount and currency from the event.
    fn new(payment_id: Uuid, position: u64, status: &str) -> Self {
        PaymentState {
            payment_id,
            payee_id: Uuid::nil(),
            amount_minor: 0,
            currency: String::new(),
            status: status.to_owned(),
            attempts: 0,
            last_error_kind: None,
            submitted_at: position,
            status_at: position,
        }
    }
}

/// A decision on parked payments: who proposed it, who approved or rejected it, and
/// which payments an approved retry has released so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DlqDecisionState {
    /// Decision id.
    pub decision_id: Uuid,
    /// `retry` or `ignore`.
    pub action: String,
    /// Reason code of an ignore.
    pub reason_code: Option<String>,
    /// Free-text reason.
    pub reason: String,
    /// Payments concerned.
    pub payment_ids: Vec<Uuid>,
    /// Operator who proposed it.
    pub proposed_by: Uuid,
    /// Position of the proposal.
    pub proposed_at: u64,
    /// `pending`, `approved` or `rejected`.
    pub status: String,
    /// Operator who approved or rejected it.
    pub decided_by: Option<Uuid>,
    /// Position of the approval or rejection.
    pub decided_at: Option<u64>,
    /// Payments of an approved retry released to the dispatcher, in release order.
    pub released: Vec<Uuid>,
    /// Whether the release is paused.
    pub paused: bool,
}

/// A payment held by the anomaly rules, with the findings and the decision on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnomalyReviewState {
    /// Payment held.
    pub payment_id: Uuid,
    /// Event id of the flag.
    pub flag_event_id: Uuid,
    /// Position of the flag.
    pub flagged_at: u64,
    /// Rule ids that fired, in rule order.
    pub rules: Vec<String>,
    /// The explanations the reviewer was shown, in rule order.
    pub explanations: Vec<String>,
    /// `pending`, `released` or `rejected`.
    pub status: String,
    /// Reviewer.
    pub decided_by: Option<Uuid>,
    /// Position of the decision.
    pub decided_at: Option<u64>,
    /// The reviewer's reason.
    pub reason: Option<String>,
}

/// A signing key named by the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyState {
    /// Ed25519 public key, hex.
    pub public_key: String,
    /// Position of the event that named it (genesis or rotation).
    pub named_at: u64,
    /// Reason for a rotation; empty for the genesis key.
    pub reason: String,
}

/// The read models of one ledger at one point, in a canonical order (every list sorted by
/// id, every key order fixed), so the same point always gives the same bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerState {
    /// Ledger id.
    pub ledger_id: Uuid,
    /// Last event applied.
    pub as_of: Point,
    /// Active payees.
    pub allow_list: Vec<PayeeState>,
    /// Payees removed at or before this point.
    pub removed_payees: Vec<RemovedPayee>,
    /// Operator accounts.
    pub operators: Vec<OperatorState>,
    /// Payments, accepted and rejected.
    pub payments: Vec<PaymentState>,
    /// Ids of the payments parked in the dead-letter queue and not ignored.
    pub dlq: Vec<Uuid>,
    /// Decisions on parked payments.
    pub dlq_decisions: Vec<DlqDecisionState>,
    /// Payments held by the anomaly rules, pending or decided, by payment id.
    pub anomaly_reviews: Vec<AnomalyReviewState>,
    /// Signing keys, oldest first; the last is the active one.
    pub signing_keys: Vec<KeyState>,
}

/// A proposal as far as the replay needs it.
#[derive(Debug, Clone)]
struct PendingChange {
    change: AllowListChange,
    proposed_by: Uuid,
    proposed_at: u64,
}

/// Applies events in order and produces [`LedgerState`] snapshots.
#[derive(Debug, Clone, Default)]
pub struct Replayer {
    ledger_id: Option<Uuid>,
    point: Option<Point>,
    /// The domain's own allow-list, applied alongside as a consistency check.
    domain_allow_list: AllowList,
    payees: BTreeMap<Uuid, PayeeState>,
    removed: BTreeMap<Uuid, RemovedPayee>,
    proposals: HashMap<Uuid, PendingChange>,
    approvals_adding: HashMap<Uuid, Approval>,
    approvals_removing: HashMap<Uuid, Approval>,
    operators: BTreeMap<Uuid, OperatorState>,
    payments: BTreeMap<Uuid, PaymentState>,
    dlq_decisions: BTreeMap<Uuid, DlqDecisionState>,
    ignored: std::collections::BTreeSet<Uuid>,
    reviews: BTreeMap<Uuid, AnomalyReviewState>,
    keys: Vec<KeyState>,
    /// Events whose sealed fields the caller opened, by position.
    opened: HashMap<u64, DomainEvent>,
}

impl Replayer {
    /// Creates a replayer that expects the genesis event first.
    pub fn new() -> Self {
        Self::default()
    }

    /// A replayer that takes the events at the positions of `opened` in their opened
    /// form (sealed personal fields opened by the KMS).
    pub fn with_opened(opened: HashMap<u64, DomainEvent>) -> Self {
        Replayer {
            opened,
            ..Self::default()
        }
    }

    /// Applies one event.
    ///
    /// # Errors
    /// Fails when a payload cannot be decoded or contradicts the state so far (a payee
    /// removed twice, for example), naming the event's position.
    pub fn apply(&mut self, event: &SealedEvent) -> anyhow::Result<()> {
        let position = event.position;
        let expected = self.point.as_ref().map_or(0, |point| point.position + 1);
        assert_eq!(
            position, expected,
            "replay fed a verified chain out of order"
        );
        let decoded = DomainEvent::decode(&event.event_type, event.schema_version, &event.payload);
        let decoded = match self.opened.remove(&position) {
            Some(opened) => Ok(opened),
            None => decoded,
        };
        match decoded {
            // Replay reads an export offline, without the KMS: sealed payee fields show as
            // `[encrypted]`.
            Ok(domain_event) => {
                let domain_event = domain_event.without_keys();
                self.apply_review(event, &domain_event);
                self.apply_decoded(position, &domain_event)?
            }
            // Event types this build does not know change none of these read models.
            Err(domain::events::PayloadError::Unknown { .. }) => {}
            Err(error) => return Err(anyhow!("event at position {position}: {error}")),
        }
        self.ledger_id.get_or_insert(event.ledger_id);
        self.point = Some(Point {
            position,
            recorded_at: format_micros(event.recorded_at_micros),
            hash: hex::encode(event.hash),
        });
        Ok(())
    }

    fn apply_decoded(&mut self, position: u64, event: &DomainEvent) -> anyhow::Result<()> {
        self.domain_allow_list
            .apply(event)
            .map_err(|error| anyhow!("event at position {position}: {error}"))?;
        match event {
            DomainEvent::LedgerCreated(created) => self.keys.push(KeyState {
                public_key: hex::encode(created.public_key),
                named_at: position,
                reason: String::new(),
            }),
            DomainEvent::LedgerKeyRotated(rotated) => self.keys.push(KeyState {
                public_key: hex::encode(rotated.new_public_key),
                named_at: position,
                reason: rotated.reason.clone(),
            }),
            DomainEvent::PayeeAdded(added) => {
                let payee = PayeeState {
                    payee_id: added.payee_id,
                    name: added.name.clone(),
                    account: added.account.clone(),
                    added_at: position,
                    payable_from_micros: None,
                    approval: None,
                };
                self.payees.insert(added.payee_id, payee);
            }
            DomainEvent::PayeeRemoved(removed) => self.remove_payee(position, removed)?,
            DomainEvent::ChangeProposed(proposed) => self.propose(position, proposed),
            DomainEvent::ChangeApproved(approved) => self.approve(position, approved)?,
            DomainEvent::OperatorCreated(created) => self.create_operator(position, created),
            DomainEvent::SubjectErased(erased) => self.erase(&erased.subject),
            _ => self.apply_operator_or_payment(position, event),
        }
        Ok(())
    }

    /// From an erasure on, the payee's fields read `[erased]`, as the live read models
    /// show them, even where this offline replay could only show `[encrypted]` before.
    fn erase(&mut self, subject: &str) {
        let erased = domain::personal::ERASED;
        let matches = |payee_id: Uuid| domain::personal::payee_subject(payee_id) == subject;
        let payees =
            (self.payees.values_mut()).chain(self.removed.values_mut().map(|r| &mut r.payee));
        for payee in payees.filter(|payee| matches(payee.payee_id)) {
            payee.name = erased.to_owned();
            payee.account = domain::events::PayeeAccount::Unavailable {
                why: erased.to_owned(),
                payee_id: payee.payee_id,
            };
        }
        for pending in self.proposals.values_mut() {
            match &mut pending.change {
                AllowListChange::Add {
                    payee_id,
                    name,
                    account,
                }
                | AllowListChange::Change {
                    new_payee_id: payee_id,
                    name,
                    account,
                    ..
                } if matches(*payee_id) => {
                    *name = erased.to_owned();
                    *account = domain::events::PayeeAccount::Unavailable {
                        why: erased.to_owned(),
                        payee_id: *payee_id,
                    };
                }
                _ => {}
            }
        }
    }

    fn remove_payee(
        &mut self,
        position: u64,
        removed: &domain::events::PayeeRemoved,
    ) -> anyhow::Result<()> {
        // The domain allow-list above already rejected a removal of an inactive payee.
        let payee = self.payees.remove(&removed.payee_id).ok_or_else(|| {
            anyhow!(
                "event at position {position} removes payee {}",
                removed.payee_id
            )
        })?;
        let entry = RemovedPayee {
            payee,
            removed_at: position,
            reason: removed.reason.clone(),
            approval: None,
        };
        self.removed.insert(removed.payee_id, entry);
        Ok(())
    }

    fn propose(&mut self, position: u64, proposed: &ChangeProposed) {
        let pending = PendingChange {
            change: proposed.change.clone(),
            proposed_by: proposed.auth.operator_id,
            proposed_at: position,
        };
        self.proposals.insert(proposed.proposal_id, pending);
    }

    fn approve(&mut self, position: u64, approved: &ChangeApproved) -> anyhow::Result<()> {
        let Some(pending) = self.proposals.get(&approved.proposal_id) else {
            return Err(anyhow!(
                "event at position {position} approves proposal {}, which was never proposed",
                approved.proposal_id
            ));
        };
        let approval = Approval {
            proposal_id: approved.proposal_id,
            proposed_by: pending.proposed_by,
            proposed_at: pending.proposed_at,
            approved_by: approved.auth.operator_id,
            approved_at: position,
        };
        match &pending.change {
            AllowListChange::Add { payee_id, .. } => {
                self.approvals_adding.insert(*payee_id, approval);
            }
            AllowListChange::Change {
                payee_id,
                new_payee_id,
                ..
            } => {
                self.approvals_adding
                    .insert(*new_payee_id, approval.clone());
                self.approvals_removing.insert(*payee_id, approval);
            }
            AllowListChange::Remove { payee_id, .. } => {
                self.approvals_removing.insert(*payee_id, approval);
            }
            // An erasure changes no payee's place on the allow-list.
            AllowListChange::Erase { .. } => {}
        }
        if let Some(payee_id) = approved.payee_id {
            if let Some(payee) = self.payees.get_mut(&payee_id) {
                payee.payable_from_micros = Some(approved.payable_from_micros);
            }
        }
        Ok(())
    }

    fn create_operator(&mut self, position: u64, created: &OperatorCreated) {
        let roles: Vec<Role> = created
            .roles
            .iter()
            .filter_map(|role| Role::from_str(role).ok())
            .collect();
        let scopes = Role::scopes_of(&roles)
            .into_iter()
            .map(|scope| scope.as_str().to_owned())
            .collect();
        let operator = OperatorState {
            operator_id: created.operator_id,
            username: created.username.clone(),
            roles: created.roles.clone(),
            scopes,
            created_at: position,
            created_by: created.created_by.as_ref().map(|auth| auth.operator_id),
            mfa_enrolled: false,
            locked_until_micros: None,
        };
        self.operators.insert(created.operator_id, operator);
    }

    fn apply_operator_or_payment(&mut self, position: u64, event: &DomainEvent) {
        match event {
            DomainEvent::MfaEnrolled(enrolled) => {
                if let Some(operator) = self.operators.get_mut(&enrolled.auth.operator_id) {
                    operator.mfa_enrolled = true;
                }
            }
            DomainEvent::MfaReset(reset) => {
                if let Some(operator) = self.operators.get_mut(&reset.operator_id) {
                    operator.mfa_enrolled = false;
                }
            }
            DomainEvent::OperatorLocked(locked) => {
                if let Some(operator) = self.operators.get_mut(&locked.operator_id) {
                    operator.locked_until_micros = Some(locked.until_micros);
                }
            }
            _ => self.apply_payment(position, event),
        }
    }

    fn apply_dlq(&mut self, position: u64, event: &DomainEvent) {
        match event {
            DomainEvent::DlqDecisionProposed(proposed) => {
                let decision = DlqDecisionState {
                    decision_id: proposed.decision_id,
                    action: proposed.action.kind().to_owned(),
                    reason_code: (proposed.action.reason_code()).map(|c| c.as_str().to_owned()),
                    reason: proposed.reason.clone(),
                    payment_ids: proposed.payment_ids.clone(),
                    proposed_by: proposed.auth.operator_id,
                    proposed_at: position,
                    status: "pending".to_owned(),
                    decided_by: None,
                    decided_at: None,
                    released: Vec::new(),
                    paused: false,
                };
                self.dlq_decisions.insert(proposed.decision_id, decision);
            }
            DomainEvent::DlqDecisionApproved(approved) => {
                let decided = (approved.decision_id, approved.auth.operator_id);
                if let Some(decision) = self.decide(decided, position, "approved") {
                    if decision.action == "ignore" {
                        let ids = decision.payment_ids.clone();
                        self.ignored.extend(ids);
                    }
                }
            }
            DomainEvent::DlqDecisionRejected(rejected) => {
                let decided = (rejected.decision_id, rejected.auth.operator_id);
                self.decide(decided, position, "rejected");
            }
            DomainEvent::DlqRetryReleased(released) => {
                if let Some(decision) = self.dlq_decisions.get_mut(&released.decision_id) {
                    decision.released.push(released.payment_id);
                }
            }
            DomainEvent::DlqReleasePaused(paused) => self.set_paused(paused.decision_id, true),
            DomainEvent::DlqReleaseResumed(resumed) => {
                self.set_paused(resumed.decision_id, false);
            }
            _ => {}
        }
    }

    fn decide(
        &mut self,
        (decision_id, by): (Uuid, Uuid),
        position: u64,
        status: &str,
    ) -> Option<&DlqDecisionState> {
        let decision = self.dlq_decisions.get_mut(&decision_id)?;
        decision.status = status.to_owned();
        decision.decided_by = Some(by);
        decision.decided_at = Some(position);
        Some(decision)
    }

    fn set_paused(&mut self, decision_id: Uuid, paused: bool) {
        if let Some(decision) = self.dlq_decisions.get_mut(&decision_id) {
            decision.paused = paused;
        }
    }

    fn apply_payment(&mut self, position: u64, event: &DomainEvent) {
        let (payment_id, status) = match event {
            DomainEvent::PaymentSubmitted(submitted) => {
                let payment = PaymentState {
                    payee_id: submitted.payee_id,
                    amount_minor: submitted.amount_minor,
                    currency: submitted.currency.clone(),
                    ..PaymentState::new(submitted.payment_id, position, "submitted")
                };
                self.payments.insert(payment.payment_id, payment);
                return;
            }
            DomainEvent::PaymentRejected(rejected) => {
                let payment = PaymentState {
                    payee_id: rejected.payee_id,
                    amount_minor: rejected.amount_minor,
                    currency: rejected.currency.clone(),
                    ..PaymentState::new(rejected.payment_id, position, "rejected")
                };
                self.payments.insert(payment.payment_id, payment);
                return;
            }
            DomainEvent::DispatchAttempted(attempted) => {
                if let Some(payment) = self.payments.get_mut(&attempted.payment_id) {
                    payment.attempts = attempted.attempt;
                }
                (attempted.payment_id, "dispatching")
            }
            DomainEvent::DispatchFailed(failed) => {
                if let Some(payment) = self.payments.get_mut(&failed.payment_id) {
                    payment.last_error_kind = Some(failed.error_kind.clone());
                }
                (failed.payment_id, "failed_retrying")
            }
            DomainEvent::ReceiptRecorded(receipt) => (receipt.payment_id, "receipted"),
            DomainEvent::PaymentDeadLettered(parked) => {
                self.ignored.remove(&parked.payment_id);
                (parked.payment_id, "dead_lettered")
            }
            DomainEvent::PaymentFlagged(flagged) => (flagged.payment_id, "held_for_review"),
            DomainEvent::PaymentReviewed(reviewed) => match reviewed.decision {
                ReviewDecision::Release => (reviewed.payment_id, "submitted"),
                ReviewDecision::Reject => (reviewed.payment_id, "review_rejected"),
            },
            _ => return self.apply_dlq(position, event),
        };
        if let Some(payment) = self.payments.get_mut(&payment_id) {
            payment.status = status.to_owned();
            payment.status_at = position;
        }
    }

    /// Records flags and review decisions.
    fn apply_review(&mut self, event: &SealedEvent, decoded: &DomainEvent) {
        match decoded {
            DomainEvent::PaymentFlagged(flagged) => {
                let review = AnomalyReviewState {
                    payment_id: flagged.payment_id,
                    flag_event_id: event.event_id,
                    flagged_at: event.position,
                    rules: flagged.findings.iter().map(|f| f.rule.clone()).collect(),
                    explanations: (flagged.findings.iter())
                        .map(|f| f.explanation.clone())
                        .collect(),
                    status: "pending".to_owned(),
                    decided_by: None,
                    decided_at: None,
                    reason: None,
                };
                self.reviews.insert(flagged.payment_id, review);
            }
            DomainEvent::PaymentReviewed(reviewed) => {
                if let Some(review) = self.reviews.get_mut(&reviewed.payment_id) {
                    review.status = match reviewed.decision {
                        ReviewDecision::Release => "released",
                        ReviewDecision::Reject => "rejected",
                    }
                    .to_owned();
                    review.decided_by = Some(reviewed.auth.operator_id);
                    review.decided_at = Some(event.position);
                    review.reason = Some(reviewed.reason.clone());
                }
            }
            _ => {}
        }
    }

    /// Returns the state after the last event applied, or `None` before the first.
    pub fn snapshot(&self) -> Option<LedgerState> {
        let (ledger_id, as_of) = (self.ledger_id?, self.point.clone()?);
        let allow_list = self
            .payees
            .values()
            .map(|payee| self.with_approval(payee))
            .collect();
        let removed_payees = self
            .removed
            .iter()
            .map(|(payee_id, removed)| RemovedPayee {
                payee: self.with_approval(&removed.payee),
                approval: self.approvals_removing.get(payee_id).cloned(),
                ..removed.clone()
            })
            .collect();
        let dlq = self
            .payments
            .values()
            .filter(|payment| payment.status == "dead_lettered")
            .filter(|payment| !self.ignored.contains(&payment.payment_id))
            .map(|payment| payment.payment_id)
            .collect();
        Some(LedgerState {
            ledger_id,
            as_of,
            allow_list,
            removed_payees,
            operators: self.operators.values().cloned().collect(),
            payments: self.payments.values().cloned().collect(),
            dlq,
            dlq_decisions: self.dlq_decisions.values().cloned().collect(),
            anomaly_reviews: self.reviews.values().cloned().collect(),
            signing_keys: self.keys.clone(),
        })
    }

    fn with_approval(&self, payee: &PayeeState) -> PayeeState {
        PayeeState {
            approval: self.approvals_adding.get(&payee.payee_id).cloned(),
            ..payee.clone()
        }
    }
}

/// Replays `events` from genesis and returns the state after the last one.
///
/// # Errors
/// As [`Replayer::apply`], or when `events` is empty.
pub fn replay(events: &[SealedEvent]) -> anyhow::Result<LedgerState> {
    replay_opened(events, HashMap::new())
}

/// Replays like [`replay`], taking the events at the positions of `opened` in their
/// opened form (sealed personal fields opened by the KMS).
///
/// # Errors
/// As [`replay`].
pub fn replay_opened(
    events: &[SealedEvent],
    opened: HashMap<u64, DomainEvent>,
) -> anyhow::Result<LedgerState> {
    let mut replayer = Replayer::with_opened(opened);
    for event in events {
        replayer.apply(event)?;
    }
    replayer
        .snapshot()
        .ok_or_else(|| anyhow!("no events to replay"))
}
