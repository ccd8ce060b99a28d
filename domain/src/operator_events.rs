//! Event payloads of operators, their second factors and allow-list approvals.
//!
//! Each decision about a person carries an [`AuthContext`]: who acted, in which
//! session, with which factor and when that factor was verified. No payload contains a
//! password, a TOTP secret, a one-time code or a recovery code.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::events::EventPayload;
use crate::operators::AllowListChange;

macro_rules! operator_payload {
    ($ty:ident, $name:literal) => {
        impl EventPayload for $ty {
            const EVENT_TYPE: &'static str = $name;
            const SCHEMA_VERSION: u16 = 1;
        }
    };
}

/// The authentication behind a decision by an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthContext {
    /// Operator who acted.
    pub operator_id: Uuid,
    /// Session the operator acted in.
    pub session_id: Uuid,
    /// Newest factor verified in the session: `password`, `totp` or `recovery_code`.
    pub factor: String,
    /// When that factor was verified, microseconds since the Unix epoch.
    pub factor_verified_at_micros: i64,
}

/// An operator account was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorCreated {
    /// New operator.
    pub operator_id: Uuid,
    /// User name, unique per ledger.
    pub username: String,
    /// Roles given.
    pub roles: Vec<String>,
    /// Administrator who created the account; `None` for the command-line bootstrap.
    pub created_by: Option<AuthContext>,
}
operator_payload!(OperatorCreated, "operator.created");

/// An operator signed in with their password; the session is not usable until a second
/// factor passes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStarted {
    /// Password-only authentication of the new session.
    pub auth: AuthContext,
    /// Client binding of the session: `bearer-secret+user-agent`.
    pub binding: String,
}
operator_payload!(SessionStarted, "operator.session_started");

/// A session ended before it expired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRevoked {
    /// Operator of the session.
    pub operator_id: Uuid,
    /// The session.
    pub session_id: Uuid,
    /// Why: `sign_out`, `mfa_reset` ...
    pub reason: String,
}
operator_payload!(SessionRevoked, "operator.session_revoked");

/// An operator started enrolling an authenticator app; the secret was shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MfaEnrolmentStarted {
    /// Who enrols.
    pub auth: AuthContext,
}
operator_payload!(MfaEnrolmentStarted, "operator.mfa_enrolment_started");

/// A new set of recovery codes was issued, voiding every earlier one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryCodesIssued {
    /// Who asked.
    pub auth: AuthContext,
    /// Codes in the set.
    pub count: u32,
    /// Generation of the set, one more than the set it voids.
    pub generation: u32,
}
operator_payload!(RecoveryCodesIssued, "operator.recovery_codes_issued");

/// The operator entered one of the downloaded recovery codes back, proving they kept them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryCodesAcknowledged {
    /// Who acknowledged.
    pub auth: AuthContext,
    /// Generation acknowledged.
    pub generation: u32,
}
operator_payload!(
    RecoveryCodesAcknowledged,
    "operator.recovery_codes_acknowledged"
);

/// Enrolment is active: a TOTP code passed and the recovery codes were acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MfaEnrolled {
    /// The enrolment's own TOTP verification.
    pub auth: AuthContext,
    /// Factor enrolled: `totp`.
    pub method: String,
}
operator_payload!(MfaEnrolled, "operator.mfa_enrolled");

/// A second factor was asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeIssued {
    /// Operator asked.
    pub operator_id: Uuid,
    /// Session asked.
    pub session_id: Uuid,
    /// `sign_in` or `step_up`.
    pub purpose: String,
}
operator_payload!(ChallengeIssued, "operator.challenge_issued");

/// A second factor passed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengePassed {
    /// The verification, with its factor and time.
    pub auth: AuthContext,
    /// `sign_in`, `step_up` or `enrolment`.
    pub purpose: String,
    /// The accepted TOTP time step (30-second steps since the Unix epoch), for a TOTP code;
    /// the controls check that no operator had one step accepted twice.
    pub totp_step: Option<u64>,
}
operator_payload!(ChallengePassed, "operator.challenge_passed");

/// A second factor failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeFailed {
    /// Operator.
    pub operator_id: Uuid,
    /// Session; the nil UUID for a wrong password, which fails before a session exists.
    pub session_id: Uuid,
    /// Factor tried: `password`, `totp` or `recovery_code`.
    pub factor: String,
    /// Why: `malformed`, `mismatch`, `replayed`, `wait`, `locked`.
    pub reason: String,
    /// Failures counted in the last 15 minutes, this one included.
    pub failures_in_window: u32,
}
operator_payload!(ChallengeFailed, "operator.challenge_failed");

/// Too many failures locked the operator out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorLocked {
    /// Operator locked.
    pub operator_id: Uuid,
    /// End of the lock, microseconds since the Unix epoch.
    pub until_micros: i64,
    /// Failures in the window that caused it.
    pub failures_in_window: u32,
}
operator_payload!(OperatorLocked, "operator.locked");

/// An administrator released a lock early.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorUnlocked {
    /// Operator released.
    pub operator_id: Uuid,
    /// Administrator, with step-up.
    pub by: AuthContext,
}
operator_payload!(OperatorUnlocked, "operator.unlocked");

/// A recovery code was used in place of a TOTP code; administrators are alerted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryCodeUsed {
    /// The verification (factor `recovery_code`).
    pub auth: AuthContext,
    /// Unused codes left.
    pub remaining: u32,
}
operator_payload!(RecoveryCodeUsed, "operator.recovery_code_used");

/// A session got a fresh second factor for sensitive commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepUpGranted {
    /// The verification.
    pub auth: AuthContext,
    /// Seconds the step-up lasts.
    pub max_age_seconds: u32,
}
operator_payload!(StepUpGranted, "operator.step_up_granted");

/// An administrator asked to reset another operator's second factor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MfaResetProposed {
    /// Operator whose factor is to be reset.
    pub operator_id: Uuid,
    /// Why.
    pub reason: String,
    /// Administrator who asked, with step-up.
    pub auth: AuthContext,
}
operator_payload!(MfaResetProposed, "operator.mfa_reset_proposed");

/// A second administrator approved a reset: the TOTP secret, recovery codes and
/// sessions of the operator are gone, and they must enrol again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MfaReset {
    /// Operator reset.
    pub operator_id: Uuid,
    /// Administrator who asked.
    pub proposed_by: Uuid,
    /// Approving administrator, with step-up.
    pub auth: AuthContext,
}
operator_payload!(MfaReset, "operator.mfa_reset");

/// A change to the allow-list was proposed, or a proposal was edited (a new revision).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeProposed {
    /// Proposal id.
    pub proposal_id: Uuid,
    /// Revision, from 1.
    pub revision: u32,
    /// The change.
    pub change: AllowListChange,
    /// Hash an approval must name (see `operators::content_hash`).
    pub content_hash: [u8; 32],
    /// When the proposal expires, microseconds since the Unix epoch.
    pub expires_at_micros: i64,
    /// Proposer, with step-up.
    pub auth: AuthContext,
}
operator_payload!(ChangeProposed, "allowlist.change_proposed");

/// A second operator approved a proposal; the payee events follow in the same append.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeApproved {
    /// Proposal id.
    pub proposal_id: Uuid,
    /// Revision approved.
    pub revision: u32,
    /// Hash approved.
    pub content_hash: [u8; 32],
    /// Payee added by the change, if any.
    pub payee_id: Option<Uuid>,
    /// When that payee may first be paid (end of the cooling-off period).
    pub payable_from_micros: i64,
    /// Approver, with step-up.
    pub auth: AuthContext,
}
operator_payload!(ChangeApproved, "allowlist.change_approved");

/// A proposal was rejected by an approver or withdrawn by its proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRejected {
    /// Proposal id.
    pub proposal_id: Uuid,
    /// Revision rejected.
    pub revision: u32,
    /// Why.
    pub reason: String,
    /// Operator who rejected, with step-up.
    pub auth: AuthContext,
}
operator_payload!(ChangeRejected, "allowlist.change_rejected");

/// A proposal expired without a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeExpired {
    /// Proposal id.
    pub proposal_id: Uuid,
    /// Revision that expired.
    pub revision: u32,
    /// When it expired.
    pub expired_at_micros: i64,
}
operator_payload!(ChangeExpired, "allowlist.change_expired");
