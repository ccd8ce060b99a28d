//! Operator analytics, folded from a ledger's events: how long parked payments wait,
//! what each operator did, how long approvals take, and what reviewers decided.
//!
//! Like every other view, the report is a pure function of the events in position
//! order, so the same ledger always gives the same report.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use uuid::Uuid;

use crate::anomaly_events::ReviewDecision;
use crate::events::DomainEvent;
use crate::record::{Actor, ActorKind};

const MICROS_PER_SECOND: i64 = 1_000_000;

/// Durations kept per measure for the median; later ones still count in `count`, `max`
/// and `total`, which keeps memory bounded on a long ledger.
pub const DURATIONS_KEPT: usize = 100_000;

/// Count, median and maximum of a set of durations, in whole seconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DurationStats {
    /// Durations measured.
    pub count: u64,
    /// Median of the kept durations (the lower middle one for an even count).
    pub median_seconds: Option<i64>,
    /// Longest duration.
    pub max_seconds: Option<i64>,
    /// Sum of every duration, for a mean.
    pub total_seconds: i64,
}

#[derive(Debug, Clone, Default)]
struct Durations {
    kept: Vec<i64>,
    count: u64,
    max: Option<i64>,
    total: i64,
}

impl Durations {
    fn add(&mut self, from_micros: i64, to_micros: i64) {
        let seconds = to_micros.saturating_sub(from_micros).max(0) / MICROS_PER_SECOND;
        if self.kept.len() < DURATIONS_KEPT {
            self.kept.push(seconds);
        }
        self.count += 1;
        self.max = Some(self.max.map_or(seconds, |max| max.max(seconds)));
        self.total = self.total.saturating_add(seconds);
    }

    fn stats(&self) -> DurationStats {
        let mut sorted = self.kept.clone();
        sorted.sort_unstable();
        let median = (!sorted.is_empty()).then(|| sorted[(sorted.len() - 1) / 2]);
        DurationStats {
            count: self.count,
            median_seconds: median,
            max_seconds: self.max,
            total_seconds: self.total,
        }
    }
}

/// Actions of one operator.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OperatorActions {
    /// Operator id.
    pub operator_id: String,
    /// User name, when the ledger records the operator's creation.
    pub username: Option<String>,
    /// Events recorded with the operator as actor.
    pub actions: u64,
    /// The same, by event type.
    pub by_event_type: BTreeMap<String, u64>,
}

/// Dead-letter queue: parked payments and the time to their resolution.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeadLetterAnalytics {
    /// Payments parked, counting a payment again if it is parked again after a retry.
    pub parked: u64,
    /// Parkings resolved: the payment was attempted again or receipted.
    pub resolved: u64,
    /// Payments parked now.
    pub open: u64,
    /// Time from parking to resolution.
    pub time_to_resolution: DurationStats,
}

/// Allow-list proposals: decisions and the time from proposal to approval.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ApprovalAnalytics {
    /// Proposals made (first revisions).
    pub proposed: u64,
    /// Proposals approved.
    pub approved: u64,
    /// Proposals rejected or withdrawn.
    pub rejected: u64,
    /// Proposals that expired.
    pub expired: u64,
    /// Time from the first revision to the approval.
    pub turnaround: DurationStats,
}

/// Decisions of one reviewer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReviewerDecisions {
    /// Payments released.
    pub released: u64,
    /// Payments rejected.
    pub rejected: u64,
}

/// Anomaly review: flags, decisions and the time a payment waited for one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AnomalyAnalytics {
    /// Payments held.
    pub flagged: u64,
    /// Held payments released.
    pub released: u64,
    /// Held payments rejected.
    pub rejected: u64,
    /// Held payments waiting for a decision.
    pub pending: u64,
    /// Findings per rule id.
    pub findings_by_rule: BTreeMap<String, u64>,
    /// Decisions per reviewer (operator id).
    pub by_reviewer: BTreeMap<String, ReviewerDecisions>,
    /// Time from the flag to the decision.
    pub time_to_decision: DurationStats,
}

/// The analytics of one ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AnalyticsReport {
    /// Last ledger position folded in, `None` for no events.
    pub as_of_position: Option<u64>,
    /// Dead-letter queue.
    pub dead_letters: DeadLetterAnalytics,
    /// Operators, by operator id.
    pub operators: Vec<OperatorActions>,
    /// Allow-list approvals.
    pub approvals: ApprovalAnalytics,
    /// Anomaly review.
    pub anomalies: AnomalyAnalytics,
}

/// The sealed fields of an event that the fold reads besides its payload.
#[derive(Debug, Clone, Copy)]
pub struct EventMeta<'a> {
    /// Ledger position.
    pub position: u64,
    /// Time recorded, microseconds since the Unix epoch.
    pub at_micros: i64,
    /// Who acted.
    pub actor: &'a Actor,
    /// Dotted event type.
    pub event_type: &'a str,
}

/// Folds events into an [`AnalyticsReport`].
#[derive(Debug, Clone, Default)]
pub struct Analytics {
    position: Option<u64>,
    parked_at: HashMap<Uuid, i64>,
    dead_letters: DeadLetterAnalytics,
    parked_durations: Durations,
    operators: BTreeMap<String, OperatorActions>,
    usernames: HashMap<String, String>,
    proposed_at: HashMap<Uuid, i64>,
    approvals: ApprovalAnalytics,
    approval_durations: Durations,
    flagged_at: HashMap<Uuid, i64>,
    anomalies: AnomalyAnalytics,
    decision_durations: Durations,
}

impl Analytics {
    /// Creates an empty fold.
    pub fn new() -> Self {
        Self::default()
    }

    /// Last position folded in.
    pub fn position(&self) -> Option<u64> {
        self.position
    }

    /// Moves past an event at `position` whose type this build does not know.
    ///
    /// # Panics
    /// As [`Analytics::apply`].
    pub fn skip(&mut self, position: u64) {
        let expected = self.position.map_or(0, |last| last + 1);
        assert_eq!(position, expected, "analytics folded out of order");
        self.position = Some(position);
    }

    /// Folds one event.
    ///
    /// # Panics
    /// If the event's position does not follow the last one folded in.
    pub fn apply(&mut self, meta: &EventMeta<'_>, event: &DomainEvent) {
        let expected = self.position.map_or(0, |last| last + 1);
        assert_eq!(meta.position, expected, "analytics folded out of order");
        self.position = Some(meta.position);
        let at_micros = meta.at_micros;
        if meta.actor.kind == ActorKind::Operator {
            self.count_action(meta.actor, meta.event_type);
        }
        self.apply_dead_letters(at_micros, event);
        self.apply_approvals(at_micros, event);
        self.apply_anomalies(at_micros, event);
    }

    fn count_action(&mut self, actor: &Actor, event_type: &str) {
        let entry = self.operators.entry(actor.id.clone()).or_default();
        entry.operator_id.clone_from(&actor.id);
        entry.actions += 1;
        *entry
            .by_event_type
            .entry(event_type.to_owned())
            .or_default() += 1;
    }

    fn apply_dead_letters(&mut self, at_micros: i64, event: &DomainEvent) {
        let payment_id = match event {
            DomainEvent::PaymentDeadLettered(parked) => {
                self.parked_at.insert(parked.payment_id, at_micros);
                self.dead_letters.parked += 1;
                return;
            }
            DomainEvent::DispatchAttempted(attempted) => attempted.payment_id,
            DomainEvent::ReceiptRecorded(receipt) => receipt.payment_id,
            // TODO(dlq decisions): when the DLQ retry and ignore events exist, end a parking
            // at the operator's decision and count decisions by kind. An ignore ends it, and
            // a retry ends it at the decision rather than at the next attempt.
            _ => return,
        };
        if let Some(parked_at) = self.parked_at.remove(&payment_id) {
            self.dead_letters.resolved += 1;
            self.parked_durations.add(parked_at, at_micros);
        }
    }

    fn apply_approvals(&mut self, at_micros: i64, event: &DomainEvent) {
        match event {
            DomainEvent::ChangeProposed(proposed) if proposed.revision == 1 => {
                self.proposed_at.insert(proposed.proposal_id, at_micros);
                self.approvals.proposed += 1;
            }
            DomainEvent::ChangeApproved(approved) => {
                self.approvals.approved += 1;
                if let Some(at) = self.proposed_at.remove(&approved.proposal_id) {
                    self.approval_durations.add(at, at_micros);
                }
            }
            DomainEvent::ChangeRejected(rejected) => {
                self.approvals.rejected += 1;
                self.proposed_at.remove(&rejected.proposal_id);
            }
            DomainEvent::ChangeExpired(expired) => {
                self.approvals.expired += 1;
                self.proposed_at.remove(&expired.proposal_id);
            }
            DomainEvent::OperatorCreated(created) => {
                let id = created.operator_id.to_string();
                self.usernames.insert(id, created.username.clone());
            }
            _ => {}
        }
    }

    fn apply_anomalies(&mut self, at_micros: i64, event: &DomainEvent) {
        match event {
            DomainEvent::PaymentFlagged(flagged) => {
                self.flagged_at.insert(flagged.payment_id, at_micros);
                self.anomalies.flagged += 1;
                for finding in &flagged.findings {
                    *(self.anomalies.findings_by_rule)
                        .entry(finding.rule.clone())
                        .or_default() += 1;
                }
            }
            DomainEvent::PaymentReviewed(reviewed) => {
                let reviewer = reviewed.auth.operator_id.to_string();
                let decisions = self.anomalies.by_reviewer.entry(reviewer).or_default();
                match reviewed.decision {
                    ReviewDecision::Release => {
                        self.anomalies.released += 1;
                        decisions.released += 1;
                    }
                    ReviewDecision::Reject => {
                        self.anomalies.rejected += 1;
                        decisions.rejected += 1;
                    }
                }
                if let Some(at) = self.flagged_at.remove(&reviewed.payment_id) {
                    self.decision_durations.add(at, at_micros);
                }
            }
            _ => {}
        }
    }

    /// Returns the report as of the last event folded in.
    pub fn report(&self) -> AnalyticsReport {
        let mut dead_letters = self.dead_letters.clone();
        dead_letters.open = self.parked_at.len() as u64;
        dead_letters.time_to_resolution = self.parked_durations.stats();
        let mut approvals = self.approvals.clone();
        approvals.turnaround = self.approval_durations.stats();
        let mut anomalies = self.anomalies.clone();
        anomalies.pending = self.flagged_at.len() as u64;
        anomalies.time_to_decision = self.decision_durations.stats();
        let operators = (self.operators.values())
            .map(|actions| OperatorActions {
                username: self.usernames.get(&actions.operator_id).cloned(),
                ..actions.clone()
            })
            .collect();
        assert!(
            anomalies.released + anomalies.rejected + anomalies.pending <= anomalies.flagged,
            "more anomaly decisions than flags"
        );
        AnalyticsReport {
            as_of_position: self.position,
            dead_letters,
            operators,
            approvals,
            anomalies,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anomaly_events::{AnomalyFinding, PaymentFlagged, PaymentReviewed};
    use crate::events::{DispatchAttempted, PaymentDeadLettered};
    use crate::operator_events::{AuthContext, ChangeApproved, ChangeProposed, OperatorCreated};
    use crate::operators::AllowListChange;

    const SECOND: i64 = 1_000_000;
    const ALICE: Uuid = Uuid::from_u128(0xa11ce);
    const BOB: Uuid = Uuid::from_u128(0xb0b);

    fn operator(id: Uuid) -> Actor {
        Actor {
            kind: ActorKind::Operator,
            id: id.to_string(),
            credential: "session".into(),
        }
    }

    fn auth(id: Uuid) -> AuthContext {
        AuthContext {
            operator_id: id,
            session_id: Uuid::from_u128(1),
            factor: "totp".into(),
            factor_verified_at_micros: 0,
        }
    }

    struct Given(Analytics, u64);

    impl Given {
        fn at(mut self, seconds: i64, actor: &Actor, kind: &str, event: DomainEvent) -> Self {
            let meta = EventMeta {
                position: self.1,
                at_micros: seconds * SECOND,
                actor,
                event_type: kind,
            };
            self.0.apply(&meta, &event);
            self.1 += 1;
            self
        }
    }

    fn flag(payment: u128) -> DomainEvent {
        let finding = AnomalyFinding {
            rule: "amount_above_usual".into(),
            measures: Vec::new(),
            explanation: String::new(),
            related_payee_id: None,
        };
        DomainEvent::PaymentFlagged(PaymentFlagged {
            payment_id: Uuid::from_u128(payment),
            payee_id: Uuid::from_u128(9),
            amount_minor: 1,
            currency: "AUD".into(),
            findings: vec![finding],
            history_position: 0,
            evaluated_at_micros: 0,
            time_zone: "UTC".into(),
        })
    }

    fn parked(payment: u128) -> DomainEvent {
        DomainEvent::PaymentDeadLettered(PaymentDeadLettered {
            payment_id: Uuid::from_u128(payment),
            attempts: 3,
            last_error_kind: "timeout".into(),
            last_error: String::new(),
        })
    }

    #[test]
    fn report_counts_and_times_each_part() {
        let system = Actor::system("dispatcher");
        let proposal_id = Uuid::from_u128(0x9);
        let change = AllowListChange::Remove {
            payee_id: Uuid::from_u128(8),
            reason: "closed".into(),
        };
        let created = OperatorCreated {
            operator_id: ALICE,
            username: "alice".into(),
            roles: vec!["admin".into()],
            created_by: None,
        };
        let proposed = ChangeProposed {
            proposal_id,
            revision: 1,
            change,
            content_hash: [0; 32],
            expires_at_micros: 0,
            auth: auth(ALICE),
        };
        let approved = ChangeApproved {
            proposal_id,
            revision: 1,
            content_hash: [0; 32],
            payee_id: None,
            payable_from_micros: 0,
            auth: auth(BOB),
        };
        let retried = DispatchAttempted {
            payment_id: Uuid::from_u128(1),
            attempt: 4,
            bank_idempotency_key: String::new(),
        };
        let released = PaymentReviewed {
            payment_id: Uuid::from_u128(3),
            flag_event_id: Uuid::from_u128(30),
            decision: ReviewDecision::Release,
            reason: "known supplier".into(),
            auth: auth(BOB),
        };
        let given = Given(Analytics::new(), 0)
            .at(
                0,
                &system,
                "operator.created",
                DomainEvent::OperatorCreated(created),
            )
            .at(
                10,
                &operator(ALICE),
                "allowlist.change_proposed",
                DomainEvent::ChangeProposed(proposed),
            )
            .at(
                100,
                &operator(BOB),
                "allowlist.change_approved",
                DomainEvent::ChangeApproved(approved),
            )
            .at(200, &system, "payment.dead_lettered", parked(1))
            .at(
                800,
                &system,
                "payment.dispatch_attempted",
                DomainEvent::DispatchAttempted(retried),
            )
            .at(900, &system, "payment.dead_lettered", parked(2))
            .at(1_000, &system, "payment.flagged", flag(3))
            .at(
                1_120,
                &operator(BOB),
                "payment.reviewed",
                DomainEvent::PaymentReviewed(released),
            )
            .at(1_200, &system, "payment.flagged", flag(4));
        let report = given.0.report();

        assert_eq!(report.as_of_position, Some(8));
        assert_eq!(report.approvals.proposed, 1);
        assert_eq!(report.approvals.approved, 1);
        assert_eq!(report.approvals.turnaround.median_seconds, Some(90));
        assert_eq!(report.dead_letters.parked, 2);
        assert_eq!(report.dead_letters.resolved, 1);
        assert_eq!(report.dead_letters.open, 1);
        assert_eq!(
            report.dead_letters.time_to_resolution.max_seconds,
            Some(600)
        );
        assert_eq!(report.anomalies.flagged, 2);
        assert_eq!(report.anomalies.released, 1);
        assert_eq!(report.anomalies.pending, 1);
        assert_eq!(report.anomalies.time_to_decision.total_seconds, 120);
        assert_eq!(report.anomalies.findings_by_rule["amount_above_usual"], 2);
        assert_eq!(report.anomalies.by_reviewer[&BOB.to_string()].released, 1);

        let names: Vec<(Option<&str>, u64)> = (report.operators.iter())
            .map(|o| (o.username.as_deref(), o.actions))
            .collect();
        // Sorted by operator id: 0xa11ce after 0xb0b.
        assert_eq!(names, [(None, 2), (Some("alice"), 1)]);
    }

    #[test]
    fn median_takes_the_lower_middle() {
        let mut durations = Durations::default();
        for seconds in [30, 10, 20, 40] {
            durations.add(0, seconds * SECOND);
        }
        let stats = durations.stats();
        assert_eq!(stats.count, 4);
        assert_eq!(stats.median_seconds, Some(20));
        assert_eq!(stats.max_seconds, Some(40));
        assert_eq!(stats.total_seconds, 100);
    }
}
