//! Differences between two point-in-time states of one ledger, each change linked to the
//! positions of the events that made it.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use uuid::Uuid;

use super::state::{
    Approval, DlqDecisionState, KeyState, LedgerState, OperatorState, PayeeState, PaymentState,
    Point, RemovedPayee,
};

/// Changes between two states of a ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StateDiff {
    /// Ledger id.
    pub ledger_id: Uuid,
    /// The earlier point.
    pub from: Point,
    /// The later point.
    pub to: Point,
    /// Allow-list changes.
    pub payees: PayeeChanges,
    /// Operator changes.
    pub operators: OperatorChanges,
    /// Payment changes.
    pub payments: PaymentChanges,
    /// Signing keys named between the two points.
    pub signing_keys_added: Vec<KeyState>,
    /// DLQ decisions proposed, decided or released from between the two points, as they
    /// stand at `to`.
    pub dlq_decisions: Vec<DlqDecisionState>,
}

/// Allow-list changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PayeeChanges {
    /// Payees active at `to` but not at `from`, with their approval.
    pub added: Vec<PayeeState>,
    /// Payees active at `from` and removed by `to`, with the removal's approval.
    pub removed: Vec<RemovedPayee>,
    /// Payees active at both points whose details differ.
    pub changed: Vec<PayeeChange>,
}

/// A payee whose details differ between the two points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PayeeChange {
    /// The payee at `from`.
    pub before: PayeeState,
    /// The payee at `to`.
    pub after: PayeeState,
}

/// Operator changes. Folio records roles only when it creates an account, so a role is
/// granted with a new account and no event revokes one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OperatorChanges {
    /// Accounts created between the two points, with the roles granted.
    pub added: Vec<OperatorState>,
    /// Accounts whose roles differ.
    pub roles_changed: Vec<RolesChange>,
}

/// Roles granted or revoked on an existing account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RolesChange {
    /// Operator id.
    pub operator_id: Uuid,
    /// User name.
    pub username: String,
    /// Roles held at `to` and not at `from`.
    pub granted: Vec<String>,
    /// Roles held at `from` and not at `to`.
    pub revoked: Vec<String>,
}

/// Payment changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PaymentChanges {
    /// Payments created between the two points, with their status at `to`.
    pub added: Vec<PaymentState>,
    /// Payments that existed at `from` and have another status at `to`.
    pub status_changed: Vec<StatusChange>,
    /// Number of payments per status at `from`.
    pub by_status_from: BTreeMap<String, u64>,
    /// Number of payments per status at `to`.
    pub by_status_to: BTreeMap<String, u64>,
}

/// A payment whose status changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusChange {
    /// Payment id.
    pub payment_id: Uuid,
    /// Status at `from`.
    pub before: String,
    /// Status at `to`.
    pub after: String,
    /// Position of the event that set the status at `to`.
    pub changed_at: u64,
}

/// Compares two states of the same ledger, `from` being the earlier.
///
/// # Panics
/// If the states belong to different ledgers or `from` is later than `to`; callers build
/// both from one verified read.
pub fn diff(from: &LedgerState, to: &LedgerState) -> StateDiff {
    assert_eq!(
        from.ledger_id, to.ledger_id,
        "diff of two different ledgers"
    );
    assert!(
        from.as_of.position <= to.as_of.position,
        "diff from a later point to an earlier one"
    );
    StateDiff {
        ledger_id: to.ledger_id,
        from: from.as_of.clone(),
        to: to.as_of.clone(),
        payees: diff_payees(from, to),
        operators: diff_operators(from, to),
        payments: diff_payments(from, to),
        signing_keys_added: to
            .signing_keys
            .iter()
            .filter(|key| key.named_at > from.as_of.position)
            .cloned()
            .collect(),
        dlq_decisions: to
            .dlq_decisions
            .iter()
            .filter(|decision| !from.dlq_decisions.contains(decision))
            .cloned()
            .collect(),
    }
}

fn diff_payees(from: &LedgerState, to: &LedgerState) -> PayeeChanges {
    let before: BTreeMap<Uuid, &PayeeState> =
        from.allow_list.iter().map(|p| (p.payee_id, p)).collect();
    let after: BTreeMap<Uuid, &PayeeState> =
        to.allow_list.iter().map(|p| (p.payee_id, p)).collect();
    let added = to
        .allow_list
        .iter()
        .filter(|payee| !before.contains_key(&payee.payee_id))
        .cloned()
        .collect();
    let removed = to
        .removed_payees
        .iter()
        .filter(|removed| before.contains_key(&removed.payee.payee_id))
        .cloned()
        .collect();
    let changed = before
        .iter()
        .filter_map(|(payee_id, old)| {
            let new = after.get(payee_id)?;
            (old != new).then(|| PayeeChange {
                before: (*old).clone(),
                after: (*new).clone(),
            })
        })
        .collect();
    PayeeChanges {
        added,
        removed,
        changed,
    }
}

fn diff_operators(from: &LedgerState, to: &LedgerState) -> OperatorChanges {
    let before: BTreeMap<Uuid, &OperatorState> =
        from.operators.iter().map(|o| (o.operator_id, o)).collect();
    let added = to
        .operators
        .iter()
        .filter(|operator| !before.contains_key(&operator.operator_id))
        .cloned()
        .collect();
    let roles_changed = to
        .operators
        .iter()
        .filter_map(|operator| {
            let old = before.get(&operator.operator_id)?;
            let old_roles: BTreeSet<&String> = old.roles.iter().collect();
            let new_roles: BTreeSet<&String> = operator.roles.iter().collect();
            let granted: Vec<String> = new_roles
                .difference(&old_roles)
                .map(|r| (*r).clone())
                .collect();
            let revoked: Vec<String> = old_roles
                .difference(&new_roles)
                .map(|r| (*r).clone())
                .collect();
            (!granted.is_empty() || !revoked.is_empty()).then(|| RolesChange {
                operator_id: operator.operator_id,
                username: operator.username.clone(),
                granted,
                revoked,
            })
        })
        .collect();
    OperatorChanges {
        added,
        roles_changed,
    }
}

fn diff_payments(from: &LedgerState, to: &LedgerState) -> PaymentChanges {
    let before: BTreeMap<Uuid, &PaymentState> =
        from.payments.iter().map(|p| (p.payment_id, p)).collect();
    let added = to
        .payments
        .iter()
        .filter(|payment| !before.contains_key(&payment.payment_id))
        .cloned()
        .collect();
    let status_changed = to
        .payments
        .iter()
        .filter_map(|payment| {
            let old = before.get(&payment.payment_id)?;
            (old.status != payment.status).then(|| StatusChange {
                payment_id: payment.payment_id,
                before: old.status.clone(),
                after: payment.status.clone(),
                changed_at: payment.status_at,
            })
        })
        .collect();
    PaymentChanges {
        added,
        status_changed,
        by_status_from: count_by_status(&from.payments),
        by_status_to: count_by_status(&to.payments),
    }
}

fn count_by_status(payments: &[PaymentState]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for payment in payments {
        *counts.entry(payment.status.clone()).or_insert(0) += 1;
    }
    counts
}

/// Returns the approval of a change, for callers that print one line per change.
pub fn approval_line(approval: Option<&Approval>) -> String {
    match approval {
        None => "no approval recorded".to_owned(),
        Some(approval) => format!(
            "proposed by {} at position {}, approved by {} at position {}",
            approval.proposed_by, approval.proposed_at, approval.approved_by, approval.approved_at
        ),
    }
}
