//! What the anomaly rules know about a ledger's past: payees with the time they were
//! added and when their account last changed, and recent payments per payee.
//!
//! The history is an aggregate rebuilt from the ledger's events in position order, with
//! the time each event was recorded. Nothing comes from a read model or the clock, so
//! two processes that apply the same events hold the same history.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use uuid::Uuid;

use crate::events::{DomainEvent, PayeeAccount, PayeeAdded, PaymentSubmitted};
use crate::operator_events::{ChangeApproved, ChangeProposed};
use crate::operators::AllowListChange;
use crate::payments::lookalike_key;

/// Payments kept per payee, newest last; older ones fall out of the median and the
/// burst count, which keeps memory bounded on a busy ledger.
pub const PAYMENTS_PER_PAYEE: usize = 1_000;

/// A payee as the rules see it, removed payees included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayeeRecord {
    /// Payee id.
    pub payee_id: Uuid,
    /// Name as given.
    pub name: String,
    /// Key from [`lookalike_key`].
    pub lookalike_key: String,
    /// Bank account.
    pub account: PayeeAccount,
    /// When the first payee of its lineage was added, microseconds since the Unix epoch.
    pub first_added_at_micros: i64,
    /// Whether the payee is on the allow-list.
    pub active: bool,
    /// Id of the first payee of the chain of approved changes this payee continues; its
    /// own id for a payee added fresh. Payments to every payee of a lineage count as
    /// this payee's history.
    pub lineage: Uuid,
    /// The last change of bank account in the lineage, if any.
    pub account_change: Option<AccountChange>,
}

/// A payee's bank account was replaced by an approved change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountChange {
    /// Time the change was approved, microseconds since the Unix epoch.
    pub changed_at_micros: i64,
    /// The account before the change.
    pub previous_account: PayeeAccount,
}

/// One past payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PastPayment {
    /// Payment id.
    pub payment_id: Uuid,
    /// Time it was submitted, microseconds since the Unix epoch.
    pub at_micros: i64,
    /// Amount in minor units.
    pub amount_minor: u64,
    /// ISO 4217 currency code.
    pub currency: String,
    /// A reviewer rejected it, so it is not part of the payee's usual amounts.
    pub rejected_in_review: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FlaggedPayment {
    lineage: Uuid,
    had_lookalike: bool,
}

/// The history the anomaly rules read, rebuilt from events.
#[derive(Debug, Clone, Default)]
pub struct History {
    payees: BTreeMap<Uuid, PayeeRecord>,
    payments: HashMap<Uuid, VecDeque<PastPayment>>,
    flagged: HashMap<Uuid, FlaggedPayment>,
    lookalike_released: BTreeSet<Uuid>,
    proposals: HashMap<Uuid, AllowListChange>,
    position: Option<u64>,
}

impl History {
    /// Creates an empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Last ledger position applied, `None` before the first event.
    pub fn position(&self) -> Option<u64> {
        self.position
    }

    /// Moves past an event at `position` that the rules do not read (one whose type
    /// this build does not know).
    ///
    /// # Panics
    /// As [`History::apply`].
    pub fn skip(&mut self, position: u64) {
        let expected = self.position.map_or(0, |last| last + 1);
        assert_eq!(position, expected, "anomaly history applied out of order");
        self.position = Some(position);
    }

    /// Applies one event recorded at `position` and `at_micros`.
    ///
    /// # Panics
    /// If `position` does not follow the last one applied: the history would no longer
    /// be the one a replay builds.
    pub fn apply(&mut self, position: u64, at_micros: i64, event: &DomainEvent) {
        let expected = self.position.map_or(0, |last| last + 1);
        assert_eq!(position, expected, "anomaly history applied out of order");
        self.position = Some(position);
        match event {
            DomainEvent::PayeeAdded(added) => self.added(added, at_micros),
            DomainEvent::PayeeRemoved(removed) => {
                if let Some(payee) = self.payees.get_mut(&removed.payee_id) {
                    payee.active = false;
                }
            }
            DomainEvent::ChangeProposed(proposed) => self.proposed(proposed),
            DomainEvent::ChangeApproved(approved) => self.approved(approved, at_micros),
            DomainEvent::ChangeRejected(rejected) => {
                self.proposals.remove(&rejected.proposal_id);
            }
            DomainEvent::ChangeExpired(expired) => {
                self.proposals.remove(&expired.proposal_id);
            }
            DomainEvent::PaymentSubmitted(submitted) => self.submitted(submitted, at_micros),
            DomainEvent::PaymentFlagged(flagged) => {
                let had_lookalike = (flagged.findings.iter())
                    .any(|finding| finding.rule == super::RULE_LOOKALIKE_NAME);
                if let Some(lineage) = self.lineage_of(flagged.payee_id) {
                    let entry = FlaggedPayment {
                        lineage,
                        had_lookalike,
                    };
                    self.flagged.insert(flagged.payment_id, entry);
                }
            }
            DomainEvent::PaymentReviewed(reviewed) => self.reviewed(reviewed),
            _ => {}
        }
    }

    fn added(&mut self, added: &PayeeAdded, at_micros: i64) {
        let record = PayeeRecord {
            payee_id: added.payee_id,
            name: added.name.clone(),
            lookalike_key: lookalike_key(&added.name),
            account: added.account.clone(),
            first_added_at_micros: at_micros,
            active: true,
            lineage: added.payee_id,
            account_change: None,
        };
        self.payees.insert(added.payee_id, record);
    }

    fn proposed(&mut self, proposed: &ChangeProposed) {
        self.proposals
            .insert(proposed.proposal_id, proposed.change.clone());
    }

    /// Links the payee an approved change added to the payee it replaced. The approval
    /// follows the removal and the addition in the same append.
    fn approved(&mut self, approved: &ChangeApproved, at_micros: i64) {
        let change = self.proposals.remove(&approved.proposal_id);
        let Some(AllowListChange::Change {
            payee_id: old_id,
            new_payee_id,
            ..
        }) = change
        else {
            return;
        };
        let Some(old) = self.payees.get(&old_id).cloned() else {
            return;
        };
        let Some(new) = self.payees.get_mut(&new_payee_id) else {
            return;
        };
        new.lineage = old.lineage;
        new.first_added_at_micros = old.first_added_at_micros;
        new.account_change = if new.account == old.account {
            old.account_change
        } else {
            Some(AccountChange {
                changed_at_micros: at_micros,
                previous_account: old.account,
            })
        };
    }

    fn submitted(&mut self, submitted: &PaymentSubmitted, at_micros: i64) {
        let Some(lineage) = self.lineage_of(submitted.payee_id) else {
            return;
        };
        let payments = self.payments.entry(lineage).or_default();
        if payments.len() == PAYMENTS_PER_PAYEE {
            payments.pop_front();
        }
        payments.push_back(PastPayment {
            payment_id: submitted.payment_id,
            at_micros,
            amount_minor: submitted.amount_minor,
            currency: submitted.currency.clone(),
            rejected_in_review: false,
        });
        assert!(
            payments.len() <= PAYMENTS_PER_PAYEE,
            "payment history over its bound"
        );
    }

    fn reviewed(&mut self, reviewed: &crate::anomaly_events::PaymentReviewed) {
        use crate::anomaly_events::ReviewDecision;
        let Some(flagged) = self.flagged.remove(&reviewed.payment_id) else {
            return;
        };
        match reviewed.decision {
            ReviewDecision::Release if flagged.had_lookalike => {
                self.lookalike_released.insert(flagged.lineage);
            }
            ReviewDecision::Release => {}
            ReviewDecision::Reject => {
                let payments = self.payments.get_mut(&flagged.lineage);
                let found = payments.and_then(|payments| {
                    (payments.iter_mut()).find(|p| p.payment_id == reviewed.payment_id)
                });
                if let Some(payment) = found {
                    payment.rejected_in_review = true;
                }
            }
        }
    }

    fn lineage_of(&self, payee_id: Uuid) -> Option<Uuid> {
        self.payees.get(&payee_id).map(|payee| payee.lineage)
    }

    /// Returns a payee, active or removed.
    pub fn payee(&self, payee_id: Uuid) -> Option<&PayeeRecord> {
        self.payees.get(&payee_id)
    }

    /// Returns the active payees in id order.
    pub fn active_payees(&self) -> impl Iterator<Item = &PayeeRecord> {
        self.payees.values().filter(|payee| payee.active)
    }

    /// Returns the kept payments of a payee's lineage, oldest first.
    pub fn payments_of(&self, payee_id: Uuid) -> impl Iterator<Item = &PastPayment> {
        let lineage = self.lineage_of(payee_id);
        lineage
            .and_then(|lineage| self.payments.get(&lineage))
            .into_iter()
            .flatten()
    }

    /// Returns whether a reviewer released a payment of this payee's lineage that had
    /// been flagged for a look-alike name.
    pub fn lookalike_released(&self, payee_id: Uuid) -> bool {
        self.lineage_of(payee_id)
            .is_some_and(|lineage| self.lookalike_released.contains(&lineage))
    }
}
