//! Operators: the people who run Folio for a tenant. Their scopes and roles, and the
//! allow-list proposals they make and approve.
//!
//! Operators are distinct from API clients: only an operator who has passed a second
//! factor can approve a change, and never their own.

pub mod approvals;
mod scopes;

pub use approvals::{
    content_hash, AllowListChange, ApprovalError, Proposal, ProposalBook, ProposalStatus,
};
pub use scopes::{OperatorScope, Role};
