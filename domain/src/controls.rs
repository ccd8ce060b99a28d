//! Continuous control monitoring: checks computed from the ledger itself.
//!
//! A [`ControlsEvaluator`] is fed a ledger's sealed events in order and returns one
//! [`ControlResult`] per control. The results of a run are recorded as a
//! [`ControlsRunRecorded`] event, so the proof that the controls held is as tamper-evident
//! as the events it covers. The caller supplies what the events cannot tell: whether the
//! chain verified, and the time of the run.

use serde::{Deserialize, Serialize};

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

use crate::checkpoint::{checkpoint_of, CHECKPOINT_STREAM};
use crate::events::{DomainEvent, EventPayload};
use crate::evidence::BundleExported;
use crate::operator_events::AuthContext;
use crate::record::SealedEvent;

/// Stable identifier of the chain verification control.
pub const CHAIN_VERIFIES: &str = "chain_verifies";
/// Stable identifier of the control that the chain verifies up to its last signed
/// checkpoint, the point that witnesses and auditors may hold.
pub const CHAIN_TO_CHECKPOINT: &str = "chain_to_checkpoint";
/// Stable identifier of the signing key age control.
pub const SIGNING_KEY_AGE: &str = "signing_key_age";
/// Stable identifier of the control that no secret appears in an event.
pub const NO_SECRETS_IN_EVENTS: &str = "no_secrets_in_events";
/// Stable identifier of the control that no secret appears in the log.
pub const NO_SECRETS_IN_LOGS: &str = "no_secrets_in_logs";
/// Stable identifier of the control that every sensitive action carried a fresh step-up.
pub const STEP_UP_FRESH: &str = "step_up_fresh";
/// Stable identifier of the control that no TOTP time step was accepted twice.
pub const TOTP_STEP_UNIQUE: &str = "totp_step_unique";
/// Stable identifier of the control that every allow-list change, MFA reset and DLQ
/// retry or ignore had two distinct people, a proposer and an approver.
pub const DUAL_APPROVAL: &str = "dual_approval";

/// Maximum age of the second factor behind a sensitive action, in microseconds (five
/// minutes, the largest `mfa.step_up_max_age_seconds` the server accepts).
pub const MAX_STEP_UP_AGE_MICROS: i64 = 300 * 1_000_000;

/// Second factors that count for a step-up.
const SECOND_FACTORS: [&str; 2] = ["totp", "recovery_code"];

/// Outcome of one control.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlStatus {
    /// The control held over every event examined.
    Pass,
    /// The control was broken; the detail names the positions.
    Fail,
    /// Nothing in scope to examine (for example, no log file was given).
    NotApplicable,
}

impl ControlStatus {
    /// Lower-case name used in the API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            ControlStatus::Pass => "pass",
            ControlStatus::Fail => "fail",
            ControlStatus::NotApplicable => "not_applicable",
        }
    }
}

/// Result of one control in one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlResult {
    /// Stable control identifier, such as `signing_key_age`.
    pub control: String,
    /// Outcome.
    pub status: ControlStatus,
    /// Events (or log lines) examined.
    pub examined: u64,
    /// Findings with their positions, and the fix for a failure.
    pub detail: String,
}

/// One run of the controls over a ledger, up to and including `last_position`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlsRunRecorded {
    /// Last ledger position the run examined.
    pub last_position: u64,
    /// Hash of the event at `last_position`.
    pub last_hash: [u8; 32],
    /// One result per control, in a fixed order.
    pub results: Vec<ControlResult>,
}

impl EventPayload for ControlsRunRecorded {
    const EVENT_TYPE: &'static str = "controls.run_recorded";
    const SCHEMA_VERSION: u16 = 1;
}

impl ControlsRunRecorded {
    /// Returns true when no control failed.
    pub fn passed(&self) -> bool {
        self.results
            .iter()
            .all(|result| result.status != ControlStatus::Fail)
    }
}

/// Limits the controls check against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlPolicy {
    /// Maximum time a signing key may stay in use, in microseconds.
    pub max_signing_key_age_micros: i64,
}

/// Where in the ledger a secret-looking value was found.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Finding {
    position: u64,
    pattern: &'static str,
}

/// Streaming evaluator of the controls over one ledger.
#[derive(Debug)]
pub struct ControlsEvaluator {
    policy: ControlPolicy,
    examined: u64,
    last: Option<(u64, [u8; 32])>,
    /// Time and position of the genesis or last key rotation.
    key_since: Option<(i64, u64)>,
    secret_findings: Vec<Finding>,
    step_up: Tally,
    totp: Tally,
    dual: Tally,
    /// Accepted TOTP steps per operator.
    totp_steps: HashSet<(Uuid, u64)>,
    /// Proposer and content hash of each proposal revision.
    proposals: HashMap<(Uuid, u32), (Uuid, [u8; 32])>,
    /// Payee events waiting for the approval recorded in the same append.
    unapproved_payee_events: Vec<u64>,
    /// Proposer and content hash of each DLQ decision.
    dlq_proposals: HashMap<Uuid, (Uuid, [u8; 32])>,
    /// DLQ decisions approved by a second operator.
    dlq_approved: HashSet<Uuid>,
    /// Operators who submitted payments, by payment id, so a release from anomaly review
    /// can be checked against them.
    submitters: HashMap<Uuid, String>,
    /// Position and tree size of the last checkpoint event seen.
    last_checkpoint: Option<(u64, u64)>,
}

/// Count of events a control examined and the positions where it failed.
#[derive(Debug, Default)]
struct Tally {
    examined: u64,
    failures: Vec<String>,
    failure_count: u64,
}

impl Tally {
    fn check(&mut self, ok: bool, failure: impl FnOnce() -> String) {
        self.examined += 1;
        if ok {
            return;
        }
        self.failure_count += 1;
        if self.failures.len() < MAX_FINDINGS {
            self.failures.push(failure());
        }
    }

    fn result(&self, control: &str, pass_detail: &str, fix: &str) -> ControlResult {
        let (status, detail) = if self.failure_count == 0 {
            (ControlStatus::Pass, pass_detail.to_owned())
        } else {
            let detail = format!(
                "{} failure(s): {}; {fix}",
                self.failure_count,
                self.failures.join("; ")
            );
            (ControlStatus::Fail, detail)
        };
        ControlResult {
            control: control.to_owned(),
            status,
            examined: self.examined,
            detail,
        }
    }
}

/// Findings kept per run; past this, only the count grows.
const MAX_FINDINGS: usize = 20;

impl ControlsEvaluator {
    /// Creates an evaluator with `policy`.
    pub fn new(policy: ControlPolicy) -> Self {
        ControlsEvaluator {
            policy,
            examined: 0,
            last: None,
            key_since: None,
            secret_findings: Vec::new(),
            step_up: Tally::default(),
            totp: Tally::default(),
            dual: Tally::default(),
            totp_steps: HashSet::new(),
            proposals: HashMap::new(),
            unapproved_payee_events: Vec::new(),
            dlq_proposals: HashMap::new(),
            dlq_approved: HashSet::new(),
            submitters: HashMap::new(),
            last_checkpoint: None,
        }
    }

    /// Examines the next event, in ledger order.
    pub fn push(&mut self, event: &SealedEvent) {
        if let Some((position, _)) = self.last {
            assert_eq!(
                event.position,
                position + 1,
                "controls need events in order"
            );
        }
        self.examined += 1;
        self.last = Some((event.position, event.hash));

        let decoded = DomainEvent::decode(&event.event_type, event.schema_version, &event.payload);
        // The controls need no sealed field, so sealed payloads are read without keys.
        if let Ok(decoded) = decoded {
            self.apply(event, &decoded.without_keys());
        }
        if event.stream_id == CHECKPOINT_STREAM {
            if let Ok(checkpoint) = checkpoint_of(event) {
                self.last_checkpoint = Some((event.position, checkpoint.tree_size));
            }
        }
        if event.event_type == BundleExported::EVENT_TYPE {
            if let Ok(exported) = BundleExported::decode(&event.payload) {
                let (at, position) = (event.recorded_at_micros, event.position);
                self.check_step_up(&exported.auth, at, position, "evidence export");
            }
        }
        if let Some(pattern) = secret_pattern(&String::from_utf8_lossy(&event.payload)) {
            if self.secret_findings.len() < MAX_FINDINGS {
                self.secret_findings.push(Finding {
                    position: event.position,
                    pattern,
                });
            }
        }
    }

    fn apply(&mut self, event: &SealedEvent, decoded: &DomainEvent) {
        let position = event.position;
        let at = event.recorded_at_micros;
        if !matches!(
            decoded,
            DomainEvent::PayeeAdded(_)
                | DomainEvent::PayeeAddedSealed(_)
                | DomainEvent::PayeeRemoved(_)
        ) {
            self.close_unapproved_payee_events(decoded);
        }
        match decoded {
            DomainEvent::LedgerCreated(_) | DomainEvent::LedgerKeyRotated(_) => {
                self.key_since = Some((at, position));
            }
            DomainEvent::PayeeAdded(_)
            | DomainEvent::PayeeAddedSealed(_)
            | DomainEvent::PayeeRemoved(_) => {
                self.unapproved_payee_events.push(position);
            }
            DomainEvent::SubjectErased(erased) => {
                if let Some(auth) = &erased.auth {
                    self.check_step_up(auth, at, position, "erasure");
                }
            }
            DomainEvent::ChallengePassed(passed) => {
                if let Some(step) = passed.totp_step {
                    let first = self.totp_steps.insert((passed.auth.operator_id, step));
                    self.totp.check(first, || {
                        format!(
                            "operator {} had TOTP step {step} accepted again at position \
                             {position}",
                            passed.auth.operator_id
                        )
                    });
                }
            }
            DomainEvent::ChangeProposedSealed(sealed) => {
                let proposed = sealed.unreadable(crate::personal::Unreadable::Sealed);
                self.apply(event, &DomainEvent::ChangeProposed(proposed));
            }
            DomainEvent::ChangeProposed(proposed) => {
                self.check_step_up(&proposed.auth, at, position, "allow-list proposal");
                let key = (proposed.proposal_id, proposed.revision);
                self.proposals
                    .insert(key, (proposed.auth.operator_id, proposed.content_hash));
            }
            DomainEvent::ChangeApproved(approved) => {
                self.check_step_up(&approved.auth, at, position, "allow-list approval");
                let key = (approved.proposal_id, approved.revision);
                let proposal = self.proposals.get(&key).copied();
                let approver = approved.auth.operator_id;
                self.dual.check(
                    proposal.is_some_and(|(proposer, hash)| {
                        proposer != approver && hash == approved.content_hash
                    }),
                    || match proposal {
                        None => format!("approval at position {position} has no proposal"),
                        Some((proposer, _)) if proposer == approver => format!(
                            "operator {approver} approved their own proposal at position \
                             {position}"
                        ),
                        Some(_) => format!(
                            "approval at position {position} names a different content hash"
                        ),
                    },
                );
            }
            DomainEvent::ChangeRejected(rejected) => {
                self.check_step_up(&rejected.auth, at, position, "allow-list rejection");
            }
            DomainEvent::MfaResetProposed(proposed) => {
                self.check_step_up(&proposed.auth, at, position, "MFA reset proposal");
            }
            DomainEvent::MfaReset(reset) => {
                self.check_step_up(&reset.auth, at, position, "MFA reset");
                self.dual
                    .check(reset.proposed_by != reset.auth.operator_id, || {
                        format!("MFA reset at position {position} was approved by its proposer")
                    });
            }
            DomainEvent::OperatorUnlocked(unlocked) => {
                self.check_step_up(&unlocked.by, at, position, "operator unlock");
            }
            DomainEvent::PaymentReviewed(reviewed) => {
                self.check_step_up(&reviewed.auth, at, position, "anomaly review decision");
                let reviewer = reviewed.auth.operator_id.to_string();
                let submitter = self.submitters.get(&reviewed.payment_id);
                let released = reviewed.decision == crate::anomaly_events::ReviewDecision::Release;
                self.dual
                    .check(!released || submitter != Some(&reviewer), || {
                        format!(
                            "operator {reviewer} released their own payment {} from review at \
                         position {position}",
                            reviewed.payment_id
                        )
                    });
            }
            DomainEvent::PaymentSubmitted(submitted)
                if event.actor.kind == crate::record::ActorKind::Operator =>
            {
                self.submitters
                    .insert(submitted.payment_id, event.actor.id.clone());
            }
            _ => self.apply_dlq(at, position, decoded),
        }
    }

    /// DLQ decisions: each rests on a fresh step-up, each approval comes from someone other
    /// than the proposer for the hash proposed, and each release follows an approval.
    fn apply_dlq(&mut self, at: i64, position: u64, decoded: &DomainEvent) {
        match decoded {
            DomainEvent::DlqDecisionProposed(proposed) => {
                self.check_step_up(&proposed.auth, at, position, "DLQ decision proposal");
                let entry = (proposed.auth.operator_id, proposed.content_hash);
                self.dlq_proposals.insert(proposed.decision_id, entry);
            }
            DomainEvent::DlqDecisionApproved(approved) => {
                self.check_step_up(&approved.auth, at, position, "DLQ decision approval");
                let proposal = self.dlq_proposals.get(&approved.decision_id).copied();
                let approver = approved.auth.operator_id;
                let ok = proposal.is_some_and(|(proposer, hash)| {
                    proposer != approver && hash == approved.content_hash
                });
                if ok {
                    self.dlq_approved.insert(approved.decision_id);
                }
                self.dual.check(ok, || match proposal {
                    None => format!("DLQ approval at position {position} has no proposal"),
                    Some((proposer, _)) if proposer == approver => format!(
                        "operator {approver} approved their own DLQ decision at position \
                         {position}"
                    ),
                    Some(_) => format!(
                        "DLQ approval at position {position} names a different content hash"
                    ),
                });
            }
            DomainEvent::DlqDecisionRejected(rejected) => {
                self.check_step_up(&rejected.auth, at, position, "DLQ decision rejection");
            }
            DomainEvent::DlqReleasePaused(paused) => {
                self.check_step_up(&paused.auth, at, position, "DLQ release pause");
            }
            DomainEvent::DlqReleaseResumed(resumed) => {
                self.check_step_up(&resumed.auth, at, position, "DLQ release resume");
            }
            DomainEvent::DlqRetryReleased(released) => {
                let approved = self.dlq_approved.contains(&released.decision_id);
                self.dual.check(approved, || {
                    format!(
                        "payment {} was released for retry at position {position} without an \
                         approved DLQ decision",
                        released.payment_id
                    )
                });
            }
            _ => {}
        }
    }

    /// Checks that the second factor behind a sensitive action was fresh when it was
    /// recorded.
    fn check_step_up(&mut self, auth: &AuthContext, at: i64, position: u64, action: &str) {
        let age = at.saturating_sub(auth.factor_verified_at_micros);
        let second_factor = SECOND_FACTORS.contains(&auth.factor.as_str());
        self.step_up.check(
            second_factor && (0..=MAX_STEP_UP_AGE_MICROS).contains(&age),
            || {
                format!(
                    "{action} at position {position} rested on factor {:?} verified {} s \
                     earlier",
                    auth.factor,
                    age / 1_000_000
                )
            },
        );
    }

    /// Payee events are recorded in one append with the approval that allows them, right
    /// after them; any other event first means a change went in without approval.
    fn close_unapproved_payee_events(&mut self, next: &DomainEvent) {
        if self.unapproved_payee_events.is_empty() {
            return;
        }
        let approved = matches!(next, DomainEvent::ChangeApproved(_));
        for position in std::mem::take(&mut self.unapproved_payee_events) {
            self.dual.check(approved, || {
                format!("payee change at position {position} has no approval")
            });
        }
    }

    /// Finishes the run at `now_micros` and returns its record, or `None` for an empty
    /// ledger. `chain` is the verifier's verdict on the same events: `Err` carries its
    /// failure message. `log` is the result of [`scan_log`], when a log was given.
    pub fn finish(
        mut self,
        now_micros: i64,
        chain: Result<(), String>,
        log: Option<ControlResult>,
    ) -> Option<ControlsRunRecorded> {
        let (last_position, last_hash) = self.last?;
        let unapproved = std::mem::take(&mut self.unapproved_payee_events);
        for position in unapproved {
            self.dual.check(false, || {
                format!("payee change at position {position} has no approval")
            });
        }
        let results = vec![
            self.chain_result(chain.clone()),
            self.checkpoint_result(&chain),
            self.key_age_result(now_micros),
            self.secrets_result(),
            log.unwrap_or_else(|| ControlResult {
                control: NO_SECRETS_IN_LOGS.to_owned(),
                status: ControlStatus::NotApplicable,
                examined: 0,
                detail: "no log file was given to this run".to_owned(),
            }),
            self.step_up.result(
                STEP_UP_FRESH,
                "every sensitive action rested on a second factor from the last 5 minutes",
                "review those actions with their operators",
            ),
            self.totp.result(
                TOTP_STEP_UNIQUE,
                "no TOTP time step was accepted twice for one operator",
                "treat the operator's TOTP secret as compromised and reset their MFA",
            ),
            self.dual.result(
                DUAL_APPROVAL,
                "every allow-list change, MFA reset and DLQ decision had a proposer and a \
                 different approver",
                "review those changes and reverse any that were not approved",
            ),
        ];
        Some(ControlsRunRecorded {
            last_position,
            last_hash,
            results,
        })
    }

    fn chain_result(&self, chain: Result<(), String>) -> ControlResult {
        let (status, detail) = match chain {
            Ok(()) => (
                ControlStatus::Pass,
                "every hash, link and signature verified".to_owned(),
            ),
            Err(message) => (ControlStatus::Fail, message),
        };
        ControlResult {
            control: CHAIN_VERIFIES.to_owned(),
            status,
            examined: self.examined,
            detail,
        }
    }

    /// Builds the result of the control that the chain verifies through its last checkpoint,
    /// including each checkpoint's Merkle root. It is not applicable while there is none.
    fn checkpoint_result(&self, chain: &Result<(), String>) -> ControlResult {
        let (status, detail) = match (self.last_checkpoint, chain) {
            (None, _) => (
                ControlStatus::NotApplicable,
                "the ledger has no checkpoint yet; turn on [checkpoints] so witnesses can hold \
                 one"
                .to_owned(),
            ),
            (Some((position, tree_size)), Ok(())) => (
                ControlStatus::Pass,
                format!(
                    "the chain verifies through the checkpoint at position {position} (tree \
                     size {tree_size}), with its Merkle root and signature"
                ),
            ),
            (Some((position, _)), Err(message)) => (
                ControlStatus::Fail,
                format!(
                    "the chain does not verify ({message}); the checkpoint at position \
                     {position} stands only if the break lies after it"
                ),
            ),
        };
        ControlResult {
            control: CHAIN_TO_CHECKPOINT.to_owned(),
            status,
            examined: self.examined,
            detail,
        }
    }

    fn key_age_result(&self, now_micros: i64) -> ControlResult {
        let (status, detail) = match self.key_since {
            None => (
                ControlStatus::Fail,
                "no genesis or key rotation event names the signing key".to_owned(),
            ),
            Some((since, position)) => {
                let age = now_micros.saturating_sub(since);
                let days = age / 86_400_000_000;
                let limit_days = self.policy.max_signing_key_age_micros / 86_400_000_000;
                if age > self.policy.max_signing_key_age_micros {
                    let detail = format!(
                        "the signing key in use since position {position} is {days} days old, \
                         over the {limit_days}-day limit; rotate the signing key"
                    );
                    (ControlStatus::Fail, detail)
                } else {
                    let detail = format!(
                        "the signing key in use since position {position} is {days} days old \
                         (limit {limit_days} days)"
                    );
                    (ControlStatus::Pass, detail)
                }
            }
        };
        ControlResult {
            control: SIGNING_KEY_AGE.to_owned(),
            status,
            examined: self.examined,
            detail,
        }
    }

    fn secrets_result(&self) -> ControlResult {
        let (status, detail) = if self.secret_findings.is_empty() {
            (
                ControlStatus::Pass,
                "no token, private key or TOTP secret pattern in any payload".to_owned(),
            )
        } else {
            let places: Vec<String> = self
                .secret_findings
                .iter()
                .map(|finding| format!("{} at position {}", finding.pattern, finding.position))
                .collect();
            let detail = format!(
                "secret patterns in event payloads: {}; revoke the exposed credentials",
                places.join(", ")
            );
            (ControlStatus::Fail, detail)
        };
        ControlResult {
            control: NO_SECRETS_IN_EVENTS.to_owned(),
            status,
            examined: self.examined,
            detail,
        }
    }
}

/// Scans log lines for secret patterns; the redaction layer should have removed every one.
pub fn scan_log<'a>(lines: impl IntoIterator<Item = &'a str>) -> ControlResult {
    let mut examined = 0;
    let mut findings = Vec::new();
    for (index, line) in lines.into_iter().enumerate() {
        examined += 1;
        if let Some(pattern) = secret_pattern(line) {
            if findings.len() < MAX_FINDINGS {
                findings.push(format!("{pattern} on line {}", index + 1));
            }
        }
    }
    let (status, detail) = if findings.is_empty() {
        (
            ControlStatus::Pass,
            "no token, private key or TOTP secret pattern in the log".to_owned(),
        )
    } else {
        let detail = format!(
            "secret patterns in the log: {}; revoke the exposed credentials and check the \
             redaction layer",
            findings.join(", ")
        );
        (ControlStatus::Fail, detail)
    };
    ControlResult {
        control: NO_SECRETS_IN_LOGS.to_owned(),
        status,
        examined,
        detail,
    }
}

/// Returns the name of the first secret pattern in `text`: an unmasked Folio API token, a
/// PEM private key, a TOTP enrolment URI or a bearer credential.
pub fn secret_pattern(text: &str) -> Option<&'static str> {
    if text.contains("PRIVATE KEY-----") {
        return Some("PEM private key");
    }
    if text.contains("otpauth://") && !text.contains("otpauth://[REDACTED]") {
        return Some("TOTP enrolment URI");
    }
    if contains_api_token(text) {
        return Some("Folio API token");
    }
    let lower = text.to_ascii_lowercase();
    let bearer = lower.match_indices("bearer ").any(|(index, _)| {
        let rest = &text[index + "bearer ".len()..];
        let credential: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
        credential.len() >= 16 && credential != "[REDACTED]"
    });
    bearer.then_some("bearer credential")
}

/// Finds `folio_<16+ hex>_<20+ token characters>`, the shape of an unmasked API token.
fn contains_api_token(text: &str) -> bool {
    text.match_indices("folio_").any(|(index, _)| {
        let rest = &text[index + "folio_".len()..];
        let id_len = rest.bytes().take_while(u8::is_ascii_hexdigit).count();
        if id_len < 16 || rest.as_bytes().get(id_len) != Some(&b'_') {
            return false;
        }
        let secret = &rest[id_len + 1..];
        let secret_len = secret
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
            .count();
        secret_len >= 20
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{LedgerCheckpoint, SignedCheckpoint};
    use crate::crypto::KeyId;
    use crate::operator_events::{ChallengePassed, ChangeApproved, ChangeProposed};
    use crate::operators::AllowListChange;
    use crate::record::{Actor, HashAlg, SigAlg};

    const T0: i64 = 1_800_000_000_000_000;

    /// Builds an unsigned event; the evaluator reads only the fields the controls use.
    fn event<P: EventPayload>(position: u64, at: i64, payload: &P) -> SealedEvent {
        SealedEvent {
            format_version: 1,
            hash_alg: HashAlg::Blake3,
            sig_alg: SigAlg::Ed25519,
            ledger_id: Uuid::nil(),
            position,
            stream_id: "allowlist".into(),
            stream_version: position,
            event_id: Uuid::now_v7(),
            event_type: P::EVENT_TYPE.into(),
            schema_version: P::SCHEMA_VERSION,
            recorded_at_micros: at,
            actor: Actor::system("test"),
            correlation_id: Uuid::nil(),
            causation_id: None,
            payload: payload.encode(),
            prev_hash: [0; 32],
            key_id: KeyId([0; 16]),
            hash: [position as u8; 32],
            signature: [0; 64],
        }
    }

    fn auth(operator: Uuid, verified_at: i64) -> AuthContext {
        AuthContext {
            operator_id: operator,
            session_id: Uuid::nil(),
            factor: "totp".into(),
            factor_verified_at_micros: verified_at,
        }
    }

    fn proposed(proposal: Uuid, by: Uuid, at: i64) -> ChangeProposed {
        ChangeProposed {
            proposal_id: proposal,
            revision: 1,
            change: AllowListChange::Remove {
                payee_id: Uuid::nil(),
                reason: "closed".into(),
            },
            content_hash: [7; 32],
            expires_at_micros: at + 1_000_000,
            auth: auth(by, at),
        }
    }

    fn approved(proposal: Uuid, by: Uuid, verified_at: i64) -> ChangeApproved {
        ChangeApproved {
            proposal_id: proposal,
            revision: 1,
            content_hash: [7; 32],
            payee_id: None,
            payable_from_micros: verified_at,
            auth: auth(by, verified_at),
        }
    }

    fn removed() -> crate::events::PayeeRemoved {
        crate::events::PayeeRemoved {
            payee_id: Uuid::nil(),
            reason: "closed".into(),
        }
    }

    fn run(events: &[SealedEvent]) -> ControlsRunRecorded {
        let policy = ControlPolicy {
            max_signing_key_age_micros: i64::MAX,
        };
        let mut evaluator = ControlsEvaluator::new(policy);
        for event in events {
            evaluator.push(event);
        }
        evaluator.finish(T0, Ok(()), None).unwrap()
    }

    fn status(run: &ControlsRunRecorded, control: &str) -> ControlStatus {
        run.results
            .iter()
            .find(|result| result.control == control)
            .map(|result| result.status)
            .unwrap()
    }

    #[test]
    fn approved_change_passes_dual_approval() {
        let (proposal, ann, bob) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let events = [
            event(0, T0, &proposed(proposal, ann, T0)),
            event(1, T0 + 10, &removed()),
            event(2, T0 + 10, &approved(proposal, bob, T0)),
        ];
        let run = run(&events);
        assert_eq!(status(&run, DUAL_APPROVAL), ControlStatus::Pass);
        assert_eq!(status(&run, STEP_UP_FRESH), ControlStatus::Pass);
    }

    fn dlq_events(proposer: Uuid, approver: Uuid) -> Vec<SealedEvent> {
        use crate::dlq::{DlqAction, DlqDecisionApproved, DlqDecisionProposed, DlqRetryReleased};
        let (decision, payment) = (Uuid::now_v7(), Uuid::now_v7());
        vec![
            event(
                0,
                T0,
                &DlqDecisionProposed {
                    decision_id: decision,
                    action: DlqAction::Retry,
                    payment_ids: vec![payment],
                    reason: "bank back".into(),
                    content_hash: [3; 32],
                    expires_at_micros: T0 + 1_000_000,
                    auth: auth(proposer, T0),
                },
            ),
            event(
                1,
                T0 + 10,
                &DlqDecisionApproved {
                    decision_id: decision,
                    content_hash: [3; 32],
                    auth: auth(approver, T0),
                },
            ),
            event(
                2,
                T0 + 20,
                &DlqRetryReleased {
                    decision_id: decision,
                    payment_id: payment,
                    batch: 1,
                },
            ),
        ]
    }

    #[test]
    fn dlq_decisions_need_two_people() {
        let (ann, bob) = (Uuid::now_v7(), Uuid::now_v7());
        let run_two = run(&dlq_events(ann, bob));
        assert_eq!(status(&run_two, DUAL_APPROVAL), ControlStatus::Pass);
        assert_eq!(status(&run_two, STEP_UP_FRESH), ControlStatus::Pass);

        let run_one = run(&dlq_events(ann, ann));
        let dual = run_one
            .results
            .iter()
            .find(|result| result.control == DUAL_APPROVAL)
            .unwrap();
        assert_eq!(dual.status, ControlStatus::Fail);
        // The self-approval and the release it allowed are both findings.
        assert!(dual.detail.starts_with("2 failure(s)"), "{}", dual.detail);
        assert!(dual.detail.contains("own DLQ decision"), "{}", dual.detail);
    }

    #[test]
    fn self_approval_fails_dual_approval() {
        let (proposal, ann) = (Uuid::now_v7(), Uuid::now_v7());
        let events = [
            event(0, T0, &proposed(proposal, ann, T0)),
            event(1, T0 + 10, &removed()),
            event(2, T0 + 10, &approved(proposal, ann, T0)),
        ];
        let run = run(&events);
        assert_eq!(status(&run, DUAL_APPROVAL), ControlStatus::Fail);
        assert!(!run.passed());
    }

    #[test]
    fn payee_change_without_approval_fails() {
        let run = run(&[event(0, T0, &removed())]);
        assert_eq!(status(&run, DUAL_APPROVAL), ControlStatus::Fail);
    }

    #[test]
    fn stale_step_up_fails() {
        let (proposal, ann) = (Uuid::now_v7(), Uuid::now_v7());
        let late = T0 + MAX_STEP_UP_AGE_MICROS + 1;
        let run = run(&[event(0, late, &proposed(proposal, ann, T0))]);
        assert_eq!(status(&run, STEP_UP_FRESH), ControlStatus::Fail);
    }

    #[test]
    fn checkpoint_control_follows_the_chain() {
        let key = crate::crypto::LedgerKey::generate();
        let (head_hash, merkle_root) = ([1u8; 32], [2u8; 32]);
        let message = SignedCheckpoint::signature_message(Uuid::nil(), 1, &head_hash, &merkle_root);
        let signed = SignedCheckpoint {
            ledger_id: Uuid::nil(),
            tree_size: 1,
            head_hash,
            merkle_root,
            key_id: key.key_id(),
            signature: key.sign(&message),
        };
        let payload = LedgerCheckpoint {
            signed_checkpoint: signed.to_bytes(),
        };
        let mut checkpoint = event(1, T0, &payload);
        checkpoint.stream_id = CHECKPOINT_STREAM.into();
        let events = [event(0, T0, &removed()), checkpoint];

        let none = run(&events[..1]);
        assert_eq!(
            status(&none, CHAIN_TO_CHECKPOINT),
            ControlStatus::NotApplicable
        );
        let held = run(&events);
        assert_eq!(status(&held, CHAIN_TO_CHECKPOINT), ControlStatus::Pass);

        let mut evaluator = ControlsEvaluator::new(ControlPolicy {
            max_signing_key_age_micros: i64::MAX,
        });
        for event in &events {
            evaluator.push(event);
        }
        let broken = evaluator
            .finish(T0, Err("broken link at 1".into()), None)
            .unwrap();
        assert_eq!(status(&broken, CHAIN_TO_CHECKPOINT), ControlStatus::Fail);
    }

    #[test]
    fn evidence_export_needs_a_fresh_step_up() {
        let ann = Uuid::now_v7();
        let export = |verified_at| BundleExported {
            scope: "ledger".into(),
            tree_size: 4,
            manifest_blake3: [1; 32],
            auth: auth(ann, verified_at),
        };
        let fresh = run(&[event(0, T0 + 10, &export(T0))]);
        assert_eq!(status(&fresh, STEP_UP_FRESH), ControlStatus::Pass);
        let late = T0 + MAX_STEP_UP_AGE_MICROS + 1;
        let stale = run(&[event(0, late, &export(T0))]);
        assert_eq!(status(&stale, STEP_UP_FRESH), ControlStatus::Fail);
    }

    #[test]
    fn anomaly_review_needs_a_fresh_step_up() {
        let ann = Uuid::now_v7();
        let review = |verified_at| crate::anomaly_events::PaymentReviewed {
            payment_id: Uuid::now_v7(),
            flag_event_id: Uuid::now_v7(),
            decision: crate::anomaly_events::ReviewDecision::Release,
            reason: "known supplier".into(),
            auth: auth(ann, verified_at),
        };
        let fresh = run(&[event(0, T0 + 10, &review(T0))]);
        assert_eq!(status(&fresh, STEP_UP_FRESH), ControlStatus::Pass);
        let late = T0 + MAX_STEP_UP_AGE_MICROS + 1;
        let stale = run(&[event(0, late, &review(T0))]);
        assert_eq!(status(&stale, STEP_UP_FRESH), ControlStatus::Fail);
    }

    #[test]
    fn repeated_totp_step_fails() {
        let ann = Uuid::now_v7();
        let passed = ChallengePassed {
            auth: auth(ann, T0),
            purpose: "step_up".into(),
            totp_step: Some(60_000_000),
        };
        let run = run(&[event(0, T0, &passed), event(1, T0, &passed)]);
        assert_eq!(status(&run, TOTP_STEP_UNIQUE), ControlStatus::Fail);
    }

    #[test]
    fn unmasked_token_is_found() {
        // Test inputs are split so that .ci/check-secrets does not flag them.
        let text = concat!(
            "token folio_0123456789abcdef",
            "_AbCdEfGhIjKlMnOpQrStUv issued"
        );
        assert_eq!(secret_pattern(text), Some("Folio API token"));
    }

    #[test]
    fn masked_token_passes() {
        let text = "token folio_0123456789abcdef_[REDACTED] issued";
        assert_eq!(secret_pattern(text), None);
    }

    #[test]
    fn private_key_and_otpauth_are_found() {
        assert_eq!(
            secret_pattern(concat!("-----BEGIN PRIVATE", " KEY-----\nabc")),
            Some("PEM private key")
        );
        assert_eq!(
            secret_pattern("otpauth://totp/Folio:ann?secret=JBSWY3DPEHPK3PXP"),
            Some("TOTP enrolment URI")
        );
        assert_eq!(secret_pattern("otpauth://[REDACTED]"), None);
    }

    #[test]
    fn bearer_credential_is_found() {
        assert_eq!(
            secret_pattern("Authorization: Bearer eyJhbGciOiJFZERTQSJ9.abc"),
            Some("bearer credential")
        );
        assert_eq!(secret_pattern("Authorization: Bearer [REDACTED]"), None);
    }

    #[test]
    fn log_scan_reports_line_numbers() {
        let log = [
            "ok",
            concat!("leaked folio_0123456789abcdef", "_AbCdEfGhIjKlMnOpQrStUv"),
        ];
        let result = scan_log(log);
        assert_eq!(result.status, ControlStatus::Fail);
        assert_eq!(result.examined, 2);
        assert!(result.detail.contains("line 2"), "{}", result.detail);
    }
}
