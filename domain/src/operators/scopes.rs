//! Operator permissions: scopes, and roles that bundle them.

use std::collections::BTreeSet;
use std::str::FromStr;

/// One permission of an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OperatorScope {
    /// Read ledgers, payments, the allow-list and the audit trail.
    View,
    /// Submit payments.
    PaymentsSubmit,
    /// Propose allow-list additions, changes and removals.
    AllowListPropose,
    /// Approve or reject another operator's allow-list proposal.
    AllowListApprove,
    /// Read the dead-letter queue.
    DlqRead,
    /// Retry dead-lettered payments.
    DlqRetry,
    /// Ignore dead-lettered payments.
    DlqIgnore,
    /// Export evidence.
    EvidenceExport,
    /// Create operators, release locks and reset second factors.
    Administer,
    /// Release or reject payments held by the anomaly rules.
    AnomalyReview,
}

impl OperatorScope {
    /// Every scope, in display order.
    pub const ALL: [OperatorScope; 10] = [
        OperatorScope::View,
        OperatorScope::PaymentsSubmit,
        OperatorScope::AllowListPropose,
        OperatorScope::AllowListApprove,
        OperatorScope::DlqRead,
        OperatorScope::DlqRetry,
        OperatorScope::DlqIgnore,
        OperatorScope::EvidenceExport,
        OperatorScope::Administer,
        OperatorScope::AnomalyReview,
    ];

    /// Wire name, such as `allowlist:approve`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::View => "view",
            Self::PaymentsSubmit => "payments:submit",
            Self::AllowListPropose => "allowlist:propose",
            Self::AllowListApprove => "allowlist:approve",
            Self::DlqRead => "dlq:read",
            Self::DlqRetry => "dlq:retry",
            Self::DlqIgnore => "dlq:ignore",
            Self::EvidenceExport => "evidence:export",
            Self::Administer => "admin",
            Self::AnomalyReview => "anomalies:review",
        }
    }
}

impl FromStr for OperatorScope {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|scope| scope.as_str() == text)
            .ok_or_else(|| {
                let known: Vec<&str> = Self::ALL.iter().map(|s| s.as_str()).collect();
                format!(
                    "unknown operator scope {text:?}; known: {}",
                    known.join(", ")
                )
            })
    }
}

/// A named bundle of scopes given to an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Every scope.
    Admin,
    /// View, approve or reject proposals, and review payments held as anomalies.
    Approver,
    /// View, submit payments and propose allow-list changes.
    Proposer,
    /// View, read the dead-letter queue, retry and ignore parked payments.
    DlqOperator,
    /// View only.
    Viewer,
    /// View and export evidence bundles: the compliance staff who hand evidence to auditors.
    Compliance,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 6] = [
        Role::Admin,
        Role::Approver,
        Role::Proposer,
        Role::DlqOperator,
        Role::Viewer,
        Role::Compliance,
    ];

    /// Wire name, such as `approver`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Approver => "approver",
            Self::Proposer => "proposer",
            Self::DlqOperator => "dlq-operator",
            Self::Viewer => "viewer",
            Self::Compliance => "compliance",
        }
    }

    /// Returns the scopes of the role.
    pub fn scopes(self) -> BTreeSet<OperatorScope> {
        use OperatorScope as S;
        let scopes: &[OperatorScope] = match self {
            Self::Admin => &OperatorScope::ALL,
            Self::Approver => &[S::View, S::AllowListApprove, S::AnomalyReview],
            Self::Proposer => &[S::View, S::PaymentsSubmit, S::AllowListPropose],
            Self::DlqOperator => &[S::View, S::DlqRead, S::DlqRetry, S::DlqIgnore],
            Self::Viewer => &[S::View],
            Self::Compliance => &[S::View, S::EvidenceExport],
        };
        scopes.iter().copied().collect()
    }

    /// Returns the union of the scopes of several roles.
    pub fn scopes_of(roles: &[Role]) -> BTreeSet<OperatorScope> {
        roles.iter().flat_map(|role| role.scopes()).collect()
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|role| role.as_str() == text)
            .ok_or_else(|| {
                let known: Vec<&str> = Self::ALL.iter().map(|r| r.as_str()).collect();
                format!("unknown role {text:?}; known roles: {}", known.join(", "))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for scope in OperatorScope::ALL {
            assert_eq!(scope.as_str().parse::<OperatorScope>(), Ok(scope));
        }
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("root".parse::<Role>().unwrap_err().contains("approver"));
    }

    #[test]
    fn proposer_cannot_approve_and_approver_cannot_propose() {
        assert!(!Role::Proposer
            .scopes()
            .contains(&OperatorScope::AllowListApprove));
        assert!(!Role::Approver
            .scopes()
            .contains(&OperatorScope::AllowListPropose));
        assert_eq!(Role::Admin.scopes().len(), OperatorScope::ALL.len());
    }
}
