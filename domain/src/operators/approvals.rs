//! Allow-list proposals and their approval by a second operator.
//!
//! A change to the allow-list is first proposed. It takes effect only when a different
//! operator approves the exact content they reviewed, which a hash over the ledger, the
//! proposal, its revision and the change identifies. Editing a
//! proposal makes a new revision with a new hash, so an approval given for an earlier
//! revision cannot be replayed onto the edited one.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::events::{DomainEvent, PayeeAccount};
use crate::operator_events::{ChangeApproved, ChangeExpired, ChangeProposed};

/// Key-derivation context of [`content_hash`].
const CONTENT_HASH_CONTEXT: &str = "folio allow-list change v1";

/// A proposed change to the allow-list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AllowListChange {
    /// Add a payee under a new id.
    Add {
        /// Id the payee gets.
        payee_id: Uuid,
        /// Name as given.
        name: String,
        /// Bank account.
        account: PayeeAccount,
    },
    /// Replace a payee's name or account: the old payee is removed and the new details
    /// are added under a new id, so a payment can only reach an account that was
    /// approved under the id it names.
    Change {
        /// Payee replaced.
        payee_id: Uuid,
        /// Id of the replacement.
        new_payee_id: Uuid,
        /// New name.
        name: String,
        /// New account.
        account: PayeeAccount,
    },
    /// Remove a payee.
    Remove {
        /// Payee removed.
        payee_id: Uuid,
        /// Why.
        reason: String,
    },
    /// Erase a removed payee's personal fields by destroying its data keys.
    Erase {
        /// Payee erased; no longer on the allow-list.
        payee_id: Uuid,
        /// Why (the request or rule behind it).
        reason: String,
    },
}

impl AllowListChange {
    /// Returns the payee that becomes payable when the change is approved, if any.
    pub fn payee_added(&self) -> Option<Uuid> {
        match self {
            Self::Add { payee_id, .. } => Some(*payee_id),
            Self::Change { new_payee_id, .. } => Some(*new_payee_id),
            Self::Remove { .. } | Self::Erase { .. } => None,
        }
    }

    /// Returns the kind as a word: `add`, `change`, `remove` or `erase`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Add { .. } => "add",
            Self::Change { .. } => "change",
            Self::Remove { .. } => "remove",
            Self::Erase { .. } => "erase",
        }
    }
}

#[derive(Serialize)]
struct HashedContent<'a> {
    ledger_id: Uuid,
    proposal_id: Uuid,
    revision: u32,
    change: &'a AllowListChange,
}

/// Returns the hash an approval is bound to: blake3 in key-derivation mode with the
/// context `folio allow-list change v1` over the postcard encoding of the ledger id,
/// the proposal id, the revision and the change.
pub fn content_hash(
    ledger_id: Uuid,
    proposal_id: Uuid,
    revision: u32,
    change: &AllowListChange,
) -> [u8; 32] {
    let content = HashedContent {
        ledger_id,
        proposal_id,
        revision,
        change,
    };
    // Postcard encoding of plain structs fails only on allocation failure, which aborts.
    let bytes = postcard::to_allocvec(&content).expect("postcard encoding of a change");
    blake3::derive_key(CONTENT_HASH_CONTEXT, &bytes)
}

/// Status of a proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProposalStatus {
    /// Waiting for a second operator.
    Pending,
    /// Approved and applied.
    Approved,
    /// Rejected or withdrawn.
    Rejected,
    /// Expired before anyone approved it.
    Expired,
}

impl ProposalStatus {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Expired => "expired",
        }
    }
}

/// A proposal as rebuilt from its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// Proposal id.
    pub proposal_id: Uuid,
    /// Revision, 1 for the first version, one more for each edit.
    pub revision: u32,
    /// The change in its latest revision.
    pub change: AllowListChange,
    /// Hash of the latest revision.
    pub content_hash: [u8; 32],
    /// Every operator who wrote a revision; none of them may approve.
    pub authors: BTreeSet<Uuid>,
    /// Operator of the latest revision.
    pub proposer: Uuid,
    /// When the proposal expires, microseconds since the Unix epoch.
    pub expires_at_micros: i64,
    /// Current status.
    pub status: ProposalStatus,
    /// Approver, once approved.
    pub approver: Option<Uuid>,
    /// When the payee becomes payable, once approved.
    pub payable_from_micros: Option<i64>,
}

/// A decision on a proposal broke a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApprovalError {
    /// No such proposal.
    #[error("proposal {proposal_id} does not exist on this ledger")]
    NotFound {
        /// The id.
        proposal_id: Uuid,
    },
    /// The proposal was already decided.
    #[error("proposal {proposal_id} is {status}, not pending; propose the change again")]
    NotPending {
        /// The id.
        proposal_id: Uuid,
        /// Its status.
        status: &'static str,
    },
    /// The proposal has expired.
    #[error("proposal {proposal_id} expired; propose the change again")]
    Expired {
        /// The id.
        proposal_id: Uuid,
    },
    /// The approver reviewed other content than the current revision.
    #[error(
        "proposal {proposal_id} is now at revision {revision} with content hash {current}; \
         review the current revision and approve that hash"
    )]
    HashMismatch {
        /// The id.
        proposal_id: Uuid,
        /// Current revision.
        revision: u32,
        /// Current hash, hex.
        current: String,
    },
    /// The approver wrote a revision of the proposal.
    #[error(
        "operator {operator_id} wrote a revision of proposal {proposal_id} and cannot approve \
         it; a different operator must approve"
    )]
    SelfApproval {
        /// The id.
        proposal_id: Uuid,
        /// The operator.
        operator_id: Uuid,
    },
}

impl ApprovalError {
    /// Returns the stable snake_case code of the rejection.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "proposal_not_found",
            Self::NotPending { .. } => "proposal_not_pending",
            Self::Expired { .. } => "proposal_expired",
            Self::HashMismatch { .. } => "proposal_hash_mismatch",
            Self::SelfApproval { .. } => "self_approval",
        }
    }
}

/// Every allow-list proposal of a ledger, rebuilt from its events.
#[derive(Debug, Clone, Default)]
pub struct ProposalBook {
    proposals: BTreeMap<Uuid, Proposal>,
}

impl ProposalBook {
    /// Applies one event; other events are ignored.
    pub fn apply(&mut self, event: &DomainEvent) {
        match event {
            DomainEvent::ChangeProposed(e) => self.proposed(e),
            DomainEvent::ChangeApproved(e) => self.approved(e),
            DomainEvent::ChangeRejected(e) => self.closed(e.proposal_id, ProposalStatus::Rejected),
            DomainEvent::ChangeExpired(ChangeExpired { proposal_id, .. }) => {
                self.closed(*proposal_id, ProposalStatus::Expired)
            }
            _ => {}
        }
    }

    fn proposed(&mut self, e: &ChangeProposed) {
        let entry = self
            .proposals
            .entry(e.proposal_id)
            .or_insert_with(|| Proposal {
                proposal_id: e.proposal_id,
                revision: 0,
                change: e.change.clone(),
                content_hash: e.content_hash,
                authors: BTreeSet::new(),
                proposer: e.auth.operator_id,
                expires_at_micros: e.expires_at_micros,
                status: ProposalStatus::Pending,
                approver: None,
                payable_from_micros: None,
            });
        assert_eq!(
            e.revision,
            entry.revision + 1,
            "proposal revisions must follow each other"
        );
        entry.revision = e.revision;
        entry.change = e.change.clone();
        entry.content_hash = e.content_hash;
        entry.authors.insert(e.auth.operator_id);
        entry.proposer = e.auth.operator_id;
        entry.expires_at_micros = e.expires_at_micros;
    }

    fn approved(&mut self, e: &ChangeApproved) {
        if let Some(proposal) = self.proposals.get_mut(&e.proposal_id) {
            proposal.status = ProposalStatus::Approved;
            proposal.approver = Some(e.auth.operator_id);
            proposal.payable_from_micros = Some(e.payable_from_micros);
        }
    }

    fn closed(&mut self, proposal_id: Uuid, status: ProposalStatus) {
        if let Some(proposal) = self.proposals.get_mut(&proposal_id) {
            proposal.status = status;
        }
    }

    /// Returns a proposal.
    pub fn get(&self, proposal_id: Uuid) -> Option<&Proposal> {
        self.proposals.get(&proposal_id)
    }

    /// Iterates over proposals in id order (oldest first, ids are UUIDv7).
    pub fn iter(&self) -> impl Iterator<Item = &Proposal> {
        self.proposals.values()
    }

    /// Returns the pending, unexpired proposal, or why it cannot be decided.
    ///
    /// # Errors
    /// [`ApprovalError::NotFound`], [`ApprovalError::NotPending`] or
    /// [`ApprovalError::Expired`].
    pub fn open(&self, proposal_id: Uuid, now_micros: i64) -> Result<&Proposal, ApprovalError> {
        let proposal = self
            .get(proposal_id)
            .ok_or(ApprovalError::NotFound { proposal_id })?;
        if proposal.status != ProposalStatus::Pending {
            return Err(ApprovalError::NotPending {
                proposal_id,
                status: proposal.status.as_str(),
            });
        }
        if now_micros >= proposal.expires_at_micros {
            return Err(ApprovalError::Expired { proposal_id });
        }
        Ok(proposal)
    }

    /// Checks that `approver` may approve the current revision, identified by `hash`.
    ///
    /// # Errors
    /// Those of [`ProposalBook::open`], then [`ApprovalError::SelfApproval`] and
    /// [`ApprovalError::HashMismatch`].
    pub fn check_approval(
        &self,
        proposal_id: Uuid,
        approver: Uuid,
        hash: &[u8; 32],
        now_micros: i64,
    ) -> Result<&Proposal, ApprovalError> {
        let proposal = self.open(proposal_id, now_micros)?;
        if proposal.authors.contains(&approver) {
            return Err(ApprovalError::SelfApproval {
                proposal_id,
                operator_id: approver,
            });
        }
        if &proposal.content_hash != hash {
            return Err(ApprovalError::HashMismatch {
                proposal_id,
                revision: proposal.revision,
                current: hex::encode(proposal.content_hash),
            });
        }
        Ok(proposal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator_events::{AuthContext, ChangeRejected};

    const LEDGER: Uuid = Uuid::from_u128(9);

    fn auth(operator: u128) -> AuthContext {
        AuthContext {
            operator_id: Uuid::from_u128(operator),
            session_id: Uuid::from_u128(100 + operator),
            factor: "totp".into(),
            factor_verified_at_micros: 0,
        }
    }

    fn add(name: &str) -> AllowListChange {
        AllowListChange::Add {
            payee_id: Uuid::from_u128(7),
            name: name.into(),
            account: PayeeAccount::Bsb {
                bsb: "062000".into(),
                account: "12345678".into(),
            },
        }
    }

    fn propose(book: &mut ProposalBook, revision: u32, change: AllowListChange, by: u128) {
        let proposal_id = Uuid::from_u128(1);
        let content_hash = content_hash(LEDGER, proposal_id, revision, &change);
        book.apply(&DomainEvent::ChangeProposed(ChangeProposed {
            proposal_id,
            revision,
            change,
            content_hash,
            expires_at_micros: 1_000,
            auth: auth(by),
        }));
    }

    #[test]
    fn hash_depends_on_every_part() {
        let id = Uuid::from_u128(1);
        let base = content_hash(LEDGER, id, 1, &add("Acme"));
        assert_ne!(base, content_hash(LEDGER, id, 1, &add("Acme2")));
        assert_ne!(base, content_hash(LEDGER, id, 2, &add("Acme")));
        assert_ne!(base, content_hash(Uuid::from_u128(8), id, 1, &add("Acme")));
        assert_eq!(base, content_hash(LEDGER, id, 1, &add("Acme")));
    }

    #[test]
    fn approval_rules() {
        let mut book = ProposalBook::default();
        propose(&mut book, 1, add("Acme"), 1);
        let id = Uuid::from_u128(1);
        let first_hash = book.get(id).unwrap().content_hash;

        let own = book.check_approval(id, Uuid::from_u128(1), &first_hash, 0);
        assert_eq!(own.unwrap_err().code(), "self_approval");
        assert!(book
            .check_approval(id, Uuid::from_u128(2), &first_hash, 0)
            .is_ok());
        let late = book.check_approval(id, Uuid::from_u128(2), &first_hash, 1_000);
        assert_eq!(late.unwrap_err().code(), "proposal_expired");

        // An edit by a third operator: the old hash no longer approves, and the editor
        // joins the authors who may not approve.
        propose(&mut book, 2, add("Acme Pty"), 3);
        let stale = book.check_approval(id, Uuid::from_u128(2), &first_hash, 0);
        assert_eq!(stale.unwrap_err().code(), "proposal_hash_mismatch");
        let new_hash = book.get(id).unwrap().content_hash;
        for author in [1, 3] {
            let error = book.check_approval(id, Uuid::from_u128(author), &new_hash, 0);
            assert_eq!(error.unwrap_err().code(), "self_approval");
        }
        assert!(book
            .check_approval(id, Uuid::from_u128(2), &new_hash, 0)
            .is_ok());
    }

    #[test]
    fn decided_proposal_is_closed() {
        let mut book = ProposalBook::default();
        propose(&mut book, 1, add("Acme"), 1);
        let id = Uuid::from_u128(1);
        book.apply(&DomainEvent::ChangeRejected(ChangeRejected {
            proposal_id: id,
            revision: 1,
            reason: "wrong account".into(),
            auth: auth(2),
        }));
        let error = book.open(id, 0).unwrap_err();
        assert_eq!(error.code(), "proposal_not_pending");
        assert_eq!(
            book.open(Uuid::from_u128(5), 0).unwrap_err().code(),
            "proposal_not_found"
        );
    }
}
