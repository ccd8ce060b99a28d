//! The bundle's views of its events: the scope filter, the readable JSON lines, the CSV
//! files and the HTML report. Export and `verify-bundle` both run this code over the same
//! events, so a CSV that disagrees with the sealed events is found by rebuilding it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{self, Write};

use domain::controls::ControlsRunRecorded;
use domain::events::{DomainEvent, EventPayload};
use domain::record::SealedEvent;
use uuid::Uuid;

/// The events a bundle is about. The bundle always carries the whole chain up to its
/// checkpoint, so the scope selects rows and proofs, not the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every event of the ledger (the tenant's whole ledger).
    Ledger,
    /// Positions `from..=to`.
    Positions {
        /// First position.
        from: u64,
        /// Last position.
        to: u64,
    },
    /// Events recorded at `from..to` microseconds since the Unix epoch (UTC).
    Time {
        /// Start, inclusive.
        from_micros: i64,
        /// End, exclusive.
        to_micros: i64,
    },
    /// Events of one payment.
    Payment(Uuid),
    /// Events of one payee and of the payments to it.
    Payee(Uuid),
}

impl Scope {
    /// Returns the one-line form written to `bag-info.txt` and read back by [`Scope::parse`].
    pub fn describe(&self) -> String {
        match self {
            Scope::Ledger => "ledger".to_owned(),
            Scope::Positions { from, to } => format!("positions {from} {to}"),
            Scope::Time {
                from_micros,
                to_micros,
            } => format!("time {from_micros} {to_micros}"),
            Scope::Payment(id) => format!("payment {id}"),
            Scope::Payee(id) => format!("payee {id}"),
        }
    }

    /// Parses the form [`Scope::describe`] writes.
    ///
    /// # Errors
    /// Names the text that is not a scope.
    pub fn parse(text: &str) -> anyhow::Result<Scope> {
        fn number<T: std::str::FromStr>(text: &str, what: &str) -> anyhow::Result<T> {
            text.parse()
                .map_err(|_| anyhow::anyhow!("{what} {text:?} is not a whole number in range"))
        }
        fn id(text: &str, what: &str) -> anyhow::Result<Uuid> {
            Uuid::parse_str(text).map_err(|_| anyhow::anyhow!("{what} id {text:?} is not a UUID"))
        }
        let parts: Vec<&str> = text.split(' ').collect();
        let scope = match parts.as_slice() {
            ["ledger"] => Scope::Ledger,
            ["positions", from, to] => Scope::Positions {
                from: number(from, "position")?,
                to: number(to, "position")?,
            },
            ["time", from, to] => Scope::Time {
                from_micros: number(from, "time")?,
                to_micros: number(to, "time")?,
            },
            ["payment", payment] => Scope::Payment(id(payment, "payment")?),
            ["payee", payee] => Scope::Payee(id(payee, "payee")?),
            _ => anyhow::bail!("{text:?} is not a bundle scope"),
        };
        scope.validate()?;
        Ok(scope)
    }

    /// Checks that a range is not empty by construction: `FROM <= TO` for positions (both
    /// inclusive) and `FROM < TO` for times (the end is exclusive).
    ///
    /// # Errors
    /// Names the reversed range.
    pub fn validate(&self) -> anyhow::Result<()> {
        match *self {
            Scope::Positions { from, to } if from > to => anyhow::bail!(
                "positions {from} {to} is reversed; FROM must be at most TO (both inclusive)"
            ),
            Scope::Time {
                from_micros,
                to_micros,
            } if from_micros >= to_micros => anyhow::bail!(
                "time {from_micros} {to_micros} is empty; FROM must be before TO (TO is exclusive)"
            ),
            _ => Ok(()),
        }
    }
}

/// Header of `audit.csv`.
pub const AUDIT_HEADER: &str =
    "position,recorded_at_micros,stream_id,stream_version,event_type,actor_kind,actor_id,actor_credential,event_id,hash\n";
/// Header of `payments.csv`.
pub const PAYMENTS_HEADER: &str =
    "position,payment_id,payee_id,outcome,amount_minor,currency,reference,code\n";
/// Header of `dlq_actions.csv`: one row per parking, full view, decision step and release,
/// for each payment concerned. `detail` is the last bank error of a parking and the
/// operator's reason of a decision step.
pub const DLQ_HEADER: &str =
    "position,payment_id,action,decision_id,actor_id,attempts,last_error_kind,detail\n";
/// Header of `controls.csv`: one row per control of each recorded controls run.
pub const CONTROLS_HEADER: &str =
    "position,recorded_at_micros,last_position,control,status,examined,detail\n";
/// Header of `anomaly_decisions.csv`: one row per review decision in scope, with the flag it
/// decided on and the explanations the reviewer was shown (rule ids joined by `;`,
/// explanations by ` | `).
pub const ANOMALY_HEADER: &str =
    "position,payment_id,decision,actor_id,reason,flag_event_id,flag_position,rules,explanations\n";

/// Outputs of the event-driven files: files on export, hashers on verification.
#[derive(Debug)]
pub struct Sinks<W: Write> {
    /// `events.jsonl`: a readable view of every event, one JSON object a line.
    pub events: W,
    /// `audit.csv`.
    pub audit: W,
    /// `payments.csv`.
    pub payments: W,
    /// `dlq_actions.csv`.
    pub dlq: W,
    /// `controls.csv`.
    pub controls: W,
}

/// The scope-dependent files, written one event at a time so memory stays flat.
#[derive(Debug)]
pub struct Content<W: Write> {
    scope: Scope,
    /// Payments to the scope's payee, so their later events are selected too.
    payee_payments: BTreeSet<Uuid>,
    /// The outputs.
    pub sinks: Sinks<W>,
    /// Number of events the scope selected.
    pub selected: u64,
    summary: ReportFacts,
    /// Flags not yet decided, by event id: position, rule ids and explanations. Kept for
    /// every flag, in scope or not, so a decision in scope can name what it decided on.
    open_flags: BTreeMap<Uuid, (u64, String, String)>,
    /// `anomaly_decisions.csv`, built in memory: one row per human decision.
    anomaly_csv: Vec<u8>,
    /// DLQ decisions by id: `retry` or `ignore`, and the payments named. Kept for every
    /// decision, in scope or not, so later steps know which payments they concern.
    dlq_decisions: BTreeMap<Uuid, (&'static str, Vec<Uuid>)>,
}

/// Facts the HTML report shows.
#[derive(Debug, Default)]
struct ReportFacts {
    by_type: BTreeMap<String, u64>,
    totals: BTreeMap<String, (u64, u128)>,
    actors: BTreeMap<(String, String), u64>,
}

impl<W: Write> Content<W> {
    /// Starts the files for `scope` by writing the CSV headers.
    ///
    /// # Errors
    /// A write error of a sink.
    pub fn new(scope: Scope, mut sinks: Sinks<W>) -> io::Result<Self> {
        sinks.audit.write_all(AUDIT_HEADER.as_bytes())?;
        sinks.payments.write_all(PAYMENTS_HEADER.as_bytes())?;
        sinks.dlq.write_all(DLQ_HEADER.as_bytes())?;
        sinks.controls.write_all(CONTROLS_HEADER.as_bytes())?;
        Ok(Content {
            scope,
            payee_payments: BTreeSet::new(),
            sinks,
            selected: 0,
            summary: ReportFacts::default(),
            open_flags: BTreeMap::new(),
            anomaly_csv: ANOMALY_HEADER.as_bytes().to_vec(),
            dlq_decisions: BTreeMap::new(),
        })
    }

    /// Adds one event, in position order, and returns whether the scope selects it.
    ///
    /// # Errors
    /// A write error of a sink.
    pub fn push(&mut self, event: &SealedEvent) -> io::Result<bool> {
        let decoded = DomainEvent::decode(&event.event_type, event.schema_version, &event.payload)
            .ok()
            .map(DomainEvent::without_keys);
        self.push_json(event, decoded.as_ref())?;
        let decision = self.follow_review(event, decoded.as_ref());
        if let Some(DomainEvent::DlqDecisionProposed(proposed)) = decoded.as_ref() {
            let entry = (proposed.action.kind(), proposed.payment_ids.clone());
            self.dlq_decisions.insert(proposed.decision_id, entry);
        }
        if !self.selects(event, decoded.as_ref()) {
            return Ok(false);
        }
        if let Some(row) = decision {
            push_row(&mut self.anomaly_csv, &row)?;
        }
        self.selected += 1;
        self.push_audit(event)?;
        *self
            .summary
            .by_type
            .entry(event.event_type.clone())
            .or_default() += 1;
        let actor = (event.actor.id.clone(), event.event_type.clone());
        *self.summary.actors.entry(actor).or_default() += 1;
        match decoded {
            Some(DomainEvent::PaymentSubmitted(p)) => {
                let total = self.summary.totals.entry(p.currency.clone()).or_default();
                total.0 += 1;
                total.1 += u128::from(p.amount_minor);
                let row = [
                    event.position.to_string(),
                    p.payment_id.to_string(),
                    p.payee_id.to_string(),
                    "submitted".into(),
                    p.amount_minor.to_string(),
                    p.currency,
                    p.reference,
                    String::new(),
                ];
                push_row(&mut self.sinks.payments, &row)?;
            }
            Some(DomainEvent::PaymentRejected(p)) => {
                let row = [
                    event.position.to_string(),
                    p.payment_id.to_string(),
                    p.payee_id.to_string(),
                    "rejected".into(),
                    p.amount_minor.to_string(),
                    p.currency,
                    String::new(),
                    p.code,
                ];
                push_row(&mut self.sinks.payments, &row)?;
            }
            Some(other) => self.push_dlq(event, &other)?,
            None => {}
        }
        if event.event_type == ControlsRunRecorded::EVENT_TYPE {
            // A run that does not decode is still in audit.csv and events.jsonl.
            if let Ok(run) = ControlsRunRecorded::decode(&event.payload) {
                for result in &run.results {
                    let row = [
                        event.position.to_string(),
                        event.recorded_at_micros.to_string(),
                        run.last_position.to_string(),
                        result.control.clone(),
                        result.status.as_str().to_owned(),
                        result.examined.to_string(),
                        result.detail.clone(),
                    ];
                    push_row(&mut self.sinks.controls, &row)?;
                }
            }
        }
        Ok(true)
    }

    /// Writes the `dlq_actions.csv` rows of a parking, a full view or a DLQ decision step.
    fn push_dlq(&mut self, event: &SealedEvent, decoded: &DomainEvent) -> io::Result<()> {
        let (decision_id, step, reason) = match decoded {
            DomainEvent::PaymentDeadLettered(d) => {
                let attempts = d.attempts.to_string();
                let cells = [attempts.as_str(), &d.last_error_kind, &d.last_error];
                return self.dlq_row(event, d.payment_id, "parked", None, cells);
            }
            DomainEvent::DlqItemViewed(v) => {
                let detail = format!("viewed as of position {}", v.as_of_position);
                return self.dlq_row(event, v.payment_id, "viewed", None, ["", "", &detail]);
            }
            DomainEvent::DlqRetryReleased(r) => {
                let detail = format!("release batch {}", r.batch);
                let decision = Some(r.decision_id);
                return self.dlq_row(
                    event,
                    r.payment_id,
                    "retry_released",
                    decision,
                    ["", "", &detail],
                );
            }
            DomainEvent::DlqDecisionProposed(p) => {
                let reason = match p.action.reason_code() {
                    Some(code) => format!("{}: {}", code.as_str(), p.reason),
                    None => p.reason.clone(),
                };
                (p.decision_id, "proposed", reason)
            }
            DomainEvent::DlqDecisionApproved(a) => (a.decision_id, "approved", String::new()),
            DomainEvent::DlqDecisionRejected(r) => (r.decision_id, "rejected", r.reason.clone()),
            DomainEvent::DlqReleasePaused(p) => (p.decision_id, "release_paused", p.reason.clone()),
            DomainEvent::DlqReleaseResumed(r) => (r.decision_id, "release_resumed", String::new()),
            _ => return Ok(()),
        };
        let Some((kind, payments)) = self.dlq_decisions.get(&decision_id).cloned() else {
            return Ok(());
        };
        let action = format!("{kind}_{step}");
        for payment_id in payments {
            if self.payment_in_scope(payment_id) {
                let cells = ["", "", reason.as_str()];
                self.dlq_row(event, payment_id, &action, Some(decision_id), cells)?;
            }
        }
        Ok(())
    }

    fn dlq_row(
        &mut self,
        event: &SealedEvent,
        payment_id: Uuid,
        action: &str,
        decision_id: Option<Uuid>,
        [attempts, error_kind, detail]: [&str; 3],
    ) -> io::Result<()> {
        let row = [
            event.position.to_string(),
            payment_id.to_string(),
            action.to_owned(),
            decision_id.map(|id| id.to_string()).unwrap_or_default(),
            event.actor.id.clone(),
            attempts.to_owned(),
            error_kind.to_owned(),
            detail.to_owned(),
        ];
        push_row(&mut self.sinks.dlq, &row)
    }

    /// Whether the scope covers a payment: every payment for the whole-ledger, position
    /// and time scopes, else the scope's payment or its payee's payments.
    fn payment_in_scope(&self, payment_id: Uuid) -> bool {
        match &self.scope {
            Scope::Payment(id) => *id == payment_id,
            Scope::Payee(_) => self.payee_payments.contains(&payment_id),
            _ => true,
        }
    }

    /// Whether a DLQ decision step names a payment the scope covers.
    fn decision_in_scope(&self, decoded: Option<&DomainEvent>) -> bool {
        let decision_id = match decoded {
            Some(DomainEvent::DlqDecisionProposed(d)) => d.decision_id,
            Some(DomainEvent::DlqDecisionApproved(d)) => d.decision_id,
            Some(DomainEvent::DlqDecisionRejected(d)) => d.decision_id,
            Some(DomainEvent::DlqReleasePaused(d)) => d.decision_id,
            Some(DomainEvent::DlqReleaseResumed(d)) => d.decision_id,
            _ => return false,
        };
        self.dlq_decisions
            .get(&decision_id)
            .is_some_and(|(_, payments)| payments.iter().any(|p| self.payment_in_scope(*p)))
    }

    /// Remembers flags and returns the `anomaly_decisions.csv` row of a decision.
    fn follow_review(
        &mut self,
        event: &SealedEvent,
        decoded: Option<&DomainEvent>,
    ) -> Option<[String; 9]> {
        match decoded? {
            DomainEvent::PaymentFlagged(flag) => {
                let rules: Vec<&str> = flag.findings.iter().map(|f| f.rule.as_str()).collect();
                let texts: Vec<&str> = (flag.findings.iter())
                    .map(|f| f.explanation.as_str())
                    .collect();
                let open = (event.position, rules.join(";"), texts.join(" | "));
                self.open_flags.insert(event.event_id, open);
                None
            }
            DomainEvent::PaymentReviewed(reviewed) => {
                let flag = self.open_flags.remove(&reviewed.flag_event_id);
                let (position, rules, texts) = flag.unwrap_or_default();
                Some([
                    event.position.to_string(),
                    reviewed.payment_id.to_string(),
                    reviewed.decision.as_str().to_owned(),
                    event.actor.id.clone(),
                    reviewed.reason.clone(),
                    reviewed.flag_event_id.to_string(),
                    position.to_string(),
                    rules,
                    texts,
                ])
            }
            _ => None,
        }
    }

    /// Returns the bytes of `anomaly_decisions.csv`.
    pub fn anomaly_csv(&self) -> Vec<u8> {
        self.anomaly_csv.clone()
    }

    fn selects(&mut self, event: &SealedEvent, decoded: Option<&DomainEvent>) -> bool {
        // Checkpoints are the bundle's anchors, not part of any scope.
        if event.stream_id == domain::checkpoint::CHECKPOINT_STREAM {
            return false;
        }
        match &self.scope {
            Scope::Ledger => true,
            Scope::Positions { from, to } => (*from..=*to).contains(&event.position),
            Scope::Time {
                from_micros,
                to_micros,
            } => (*from_micros..*to_micros).contains(&event.recorded_at_micros),
            Scope::Payment(id) => {
                payment_of(decoded) == Some(*id) || self.decision_in_scope(decoded)
            }
            Scope::Payee(id) => {
                let payee = *id;
                match decoded {
                    Some(DomainEvent::PayeeAdded(p)) => p.payee_id == payee,
                    Some(DomainEvent::PayeeAddedSealed(p)) => p.payee_id == payee,
                    Some(DomainEvent::SubjectErased(p)) => {
                        p.subject == domain::personal::payee_subject(payee)
                    }
                    Some(DomainEvent::PayeeRemoved(p)) => p.payee_id == payee,
                    Some(DomainEvent::PaymentSubmitted(p)) if p.payee_id == payee => {
                        self.payee_payments.insert(p.payment_id);
                        true
                    }
                    Some(DomainEvent::PaymentRejected(p)) => p.payee_id == payee,
                    other => {
                        payment_of(other).is_some_and(|p| self.payee_payments.contains(&p))
                            || self.decision_in_scope(other)
                    }
                }
            }
        }
    }

    fn push_json(&mut self, event: &SealedEvent, decoded: Option<&DomainEvent>) -> io::Result<()> {
        let line = serde_json::json!({
            "position": event.position,
            "stream_id": event.stream_id,
            "stream_version": event.stream_version,
            "event_id": event.event_id,
            "event_type": event.event_type,
            "schema_version": event.schema_version,
            "recorded_at_micros": event.recorded_at_micros,
            "actor_kind": event.actor.kind as u8,
            "actor_id": event.actor.id,
            "actor_credential": event.actor.credential,
            "correlation_id": event.correlation_id,
            "causation_id": event.causation_id,
            "payload_hex": hex::encode(&event.payload),
            "payload_decoded": decoded.map(|d| format!("{d:?}")),
            "prev_hash": hex::encode(event.prev_hash),
            "hash": hex::encode(event.hash),
            "key_id": event.key_id.to_hex(),
        });
        writeln!(self.sinks.events, "{line}")
    }

    fn push_audit(&mut self, event: &SealedEvent) -> io::Result<()> {
        let row = [
            event.position.to_string(),
            event.recorded_at_micros.to_string(),
            event.stream_id.clone(),
            event.stream_version.to_string(),
            event.event_type.clone(),
            (event.actor.kind as u8).to_string(),
            event.actor.id.clone(),
            event.actor.credential.clone(),
            event.event_id.to_string(),
            hex::encode(event.hash),
        ];
        push_row(&mut self.sinks.audit, &row)
    }

    /// Renders the HTML report: counts, totals per currency in minor units, who did what,
    /// and the chain status line given by the caller.
    pub fn report_html(&self, ledger_id: Uuid, chain_status: &str) -> String {
        let mut html = String::from("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">");
        let _ = writeln!(
            html,
            "<title>Folio evidence for ledger {ledger_id}</title></head><body>"
        );
        let _ = write!(
            html,
            "<h1>Evidence bundle</h1>\n<p>Ledger {ledger_id}, scope {}.</p>\n",
            escape(&self.scope.describe())
        );
        let _ = writeln!(html, "<p>Chain status: {}</p>", escape(chain_status));
        let _ = write!(
            html,
            "<h2>Events in scope: {}</h2>\n<table>\n",
            self.selected
        );
        for (event_type, count) in &self.summary.by_type {
            let _ = writeln!(
                html,
                "<tr><td>{}</td><td>{count}</td></tr>",
                escape(event_type)
            );
        }
        html.push_str("</table>\n<h2>Payments submitted, totals in minor units</h2>\n<table>\n");
        for (currency, (count, total)) in &self.summary.totals {
            let _ = writeln!(
                html,
                "<tr><td>{}</td><td>{count}</td><td>{total}</td></tr>",
                escape(currency)
            );
        }
        html.push_str("</table>\n<h2>Who did what</h2>\n<table>\n");
        for ((actor, event_type), count) in &self.summary.actors {
            let _ = writeln!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{count}</td></tr>",
                escape(actor),
                escape(event_type)
            );
        }
        html.push_str("</table>\n</body></html>\n");
        html
    }
}

impl<W: Write> Content<W> {
    /// Renders the report as plain text lines, the same facts as the HTML report, for the PDF.
    pub fn report_lines(&self, ledger_id: Uuid, chain_status: &str) -> Vec<String> {
        let mut lines = vec![
            "Folio evidence bundle".to_owned(),
            format!("Ledger {ledger_id}, scope {}.", self.scope.describe()),
            format!("Chain status: {chain_status}"),
            String::new(),
            format!("Events in scope: {}", self.selected),
        ];
        for (event_type, count) in &self.summary.by_type {
            lines.push(format!("  {event_type}: {count}"));
        }
        lines.push(String::new());
        lines.push("Payments submitted, totals in minor units".to_owned());
        for (currency, (count, total)) in &self.summary.totals {
            lines.push(format!("  {currency}: {count} payments, {total}"));
        }
        lines.push(String::new());
        lines.push("Who did what".to_owned());
        for ((actor, event_type), count) in &self.summary.actors {
            lines.push(format!("  {actor}: {event_type} x {count}"));
        }
        lines
    }
}

fn payment_of(decoded: Option<&DomainEvent>) -> Option<Uuid> {
    match decoded? {
        DomainEvent::PaymentSubmitted(p) => Some(p.payment_id),
        DomainEvent::PaymentRejected(p) => Some(p.payment_id),
        DomainEvent::DispatchAttempted(p) => Some(p.payment_id),
        DomainEvent::DispatchFailed(p) => Some(p.payment_id),
        DomainEvent::ReceiptRecorded(p) => Some(p.payment_id),
        DomainEvent::PaymentDeadLettered(p) => Some(p.payment_id),
        DomainEvent::PaymentFlagged(p) => Some(p.payment_id),
        DomainEvent::PaymentReviewed(p) => Some(p.payment_id),
        DomainEvent::DlqItemViewed(p) => Some(p.payment_id),
        DomainEvent::DlqRetryReleased(p) => Some(p.payment_id),
        _ => None,
    }
}

/// Writes one CSV row (RFC 4180 quoting), neutralising every cell.
fn push_row(out: &mut impl Write, cells: &[String]) -> io::Result<()> {
    let cells: Vec<String> = cells.iter().map(|cell| csv_cell(cell)).collect();
    writeln!(out, "{}", cells.join(","))
}

/// Quotes a CSV cell, and prefixes a single quote to a cell that a spreadsheet would run as a
/// formula: one that starts with `=`, `+`, `-`, `@`, tab or carriage return.
pub fn csv_cell(cell: &str) -> String {
    let neutral = match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{cell}"),
        _ => cell.to_owned(),
    };
    if neutral.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", neutral.replace('"', "\"\""))
    } else {
        neutral
    }
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_neutralised() {
        for (cell, expected) in [
            ("=SUM(A1)", "'=SUM(A1)"),
            ("+1", "'+1"),
            ("-2", "'-2"),
            ("@x", "'@x"),
            ("\tx", "'\tx"),
            ("\rx", "\"'\rx\""),
            ("a,b", "\"a,b\""),
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
            ("plain", "plain"),
        ] {
            assert_eq!(csv_cell(cell), expected, "{cell:?}");
        }
    }

    #[test]
    fn scope_round_trips() {
        let id = Uuid::from_u128(5);
        for scope in [
            Scope::Ledger,
            Scope::Positions { from: 1, to: 9 },
            Scope::Time {
                from_micros: -5,
                to_micros: 7,
            },
            Scope::Payment(id),
            Scope::Payee(id),
        ] {
            assert_eq!(Scope::parse(&scope.describe()).unwrap(), scope);
        }
        assert!(Scope::parse("payment nope").is_err());
    }
}
