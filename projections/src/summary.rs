//! Short readable summaries of payloads for the audit trail, with account numbers masked.

use domain::events::{DomainEvent, PayeeAccount, PaymentSource};

/// Number of trailing account characters left visible.
const VISIBLE_ACCOUNT_CHARS: usize = 3;

/// Masks all but the last three characters of an account number or IBAN.
///
/// An account of three characters or fewer is masked completely, because showing
/// its last three would show all of it.
pub fn mask_account_number(account: &str) -> String {
    let chars: Vec<char> = account.chars().collect();
    let visible = if chars.len() > VISIBLE_ACCOUNT_CHARS {
        VISIBLE_ACCOUNT_CHARS
    } else {
        0
    };
    let hidden = chars.len() - visible;
    let mut masked = "*".repeat(hidden);
    masked.extend(&chars[hidden..]);
    masked
}

/// Renders a payee account for display: the BSB in full (it names a branch, not a
/// customer) and the account number or IBAN masked.
pub fn mask_account(account: &PayeeAccount) -> String {
    match account {
        PayeeAccount::Bsb { bsb, account } => {
            format!(
                "BSB {} account {}",
                format_bsb(bsb),
                mask_account_number(account)
            )
        }
        PayeeAccount::Iban { iban } => format!("IBAN {}", mask_account_number(iban)),
        PayeeAccount::Unavailable { why, .. } => why.clone(),
    }
}

fn format_bsb(bsb: &str) -> String {
    match (bsb.get(..3), bsb.get(3..)) {
        (Some(head), Some(tail)) if bsb.len() == 6 => format!("{head}-{tail}"),
        _ => bsb.to_owned(),
    }
}

/// Summarises a decoded payload in one line for the audit trail.
///
/// Summaries leave out secrets and bank idempotency keys, and mask account numbers.
/// Returns `None` for a payload variant added to the domain after this function, because
/// its debug form could show an account number in full.
pub fn summarize(event: &DomainEvent) -> Option<String> {
    let text =
        match event {
            DomainEvent::LedgerCreated(e) => {
                format!(
                    "ledger created for tenant {:?} with key {}",
                    e.tenant,
                    hex::encode(e.public_key)
                )
            }
            DomainEvent::LedgerKeyRotated(e) => format!(
                "signing key rotated to {} ({})",
                hex::encode(e.new_public_key),
                e.reason
            ),
            DomainEvent::PayeeAddedSealed(e) => format!(
                "payee {} added, name and account sealed, looks like {} other payee(s)",
                e.payee_id,
                e.lookalike_of.len()
            ),
            DomainEvent::SubjectErased(e) => format!(
                "personal fields of {} erased ({} data key(s) destroyed): {}",
                e.subject,
                e.data_key_ids.len(),
                e.policy
            ),
            DomainEvent::PayeeAdded(e) => {
                let mut text = format!(
                    "payee {} {:?} added, {}",
                    e.payee_id,
                    e.name,
                    mask_account(&e.account)
                );
                if !e.lookalike_of.is_empty() {
                    text.push_str(&format!(
                        ", looks like {} other payee(s)",
                        e.lookalike_of.len()
                    ));
                }
                text
            }
            DomainEvent::PayeeRemoved(e) => format!("payee {} removed ({})", e.payee_id, e.reason),
            DomainEvent::PaymentSubmittedSealed(e) => format!(
                "payment {} of {} {} to payee {}, account sealed, reference {:?}, from {}",
                e.payment_id,
                e.amount_minor,
                e.currency,
                e.payee_id,
                e.reference,
                describe_source(&e.source)
            ),
            DomainEvent::PaymentSubmitted(e) => format!(
                "payment {} of {} {} to payee {}, {}, reference {:?}, from {}",
                e.payment_id,
                e.amount_minor,
                e.currency,
                e.payee_id,
                mask_account(&e.account),
                e.reference,
                describe_source(&e.source)
            ),
            DomainEvent::PaymentRejected(e) => {
                format!(
                    "payment {} rejected: {} ({})",
                    e.payment_id, e.code, e.detail
                )
            }
            DomainEvent::AbaBatchImported(e) => format!(
            "ABA batch {} imported: {} detail records, credits {}, debits {}, processing date {}",
            e.batch_id, e.detail_count, e.credit_total_minor, e.debit_total_minor, e.processing_date
        ),
            DomainEvent::DispatchAttempted(e) => {
                format!("payment {} dispatch attempt {}", e.payment_id, e.attempt)
            }
            DomainEvent::DispatchFailed(e) => format!(
                "payment {} attempt {} failed ({}): {}{}",
                e.payment_id,
                e.attempt,
                e.error_kind,
                e.detail,
                if e.will_retry {
                    ", will retry"
                } else {
                    ", no retry"
                }
            ),
            DomainEvent::ReceiptRecorded(e) => format!(
                "payment {} receipted on attempt {}: bank reference {:?}, HTTP {}",
                e.payment_id, e.attempt, e.bank_reference, e.response_status
            ),
            DomainEvent::PaymentDeadLettered(e) => format!(
                "payment {} dead-lettered after {} attempts ({}): {}",
                e.payment_id, e.attempts, e.last_error_kind, e.last_error
            ),
            DomainEvent::BreakerStateChanged(e) => {
                format!("bank circuit breaker {} -> {} ({})", e.from, e.to, e.reason)
            }
            DomainEvent::PaymentFlagged(e) => {
                let explanations: Vec<&str> =
                    e.findings.iter().map(|f| f.explanation.as_str()).collect();
                format!(
                    "payment {} held for review: {}",
                    e.payment_id,
                    explanations.join("; ")
                )
            }
            DomainEvent::PaymentReviewed(e) => format!(
                "payment {} {} by operator {} in review of flag {}: {}",
                e.payment_id,
                match e.decision {
                    domain::anomaly_events::ReviewDecision::Release => "released",
                    domain::anomaly_events::ReviewDecision::Reject => "rejected",
                },
                e.auth.operator_id,
                e.flag_event_id,
                e.reason
            ),
            _ => return summarize_dlq(event),
        };
    Some(text)
}

/// Summarises the DLQ decisions: who asked for what, on how many payments.
fn summarize_dlq(event: &DomainEvent) -> Option<String> {
    let text = match event {
        DomainEvent::DlqItemViewed(e) => format!("parked payment {} viewed", e.payment_id),
        DomainEvent::DlqDecisionProposed(e) => {
            let code = e
                .action
                .reason_code()
                .map(|code| format!(" ({})", code.as_str()))
                .unwrap_or_default();
            format!(
                "DLQ {}{code} of {} payment(s) proposed by operator {} in decision {}: {}",
                e.action.kind(),
                e.payment_ids.len(),
                e.auth.operator_id,
                e.decision_id,
                e.reason
            )
        }
        DomainEvent::DlqDecisionApproved(e) => format!(
            "DLQ decision {} approved by operator {}",
            e.decision_id, e.auth.operator_id
        ),
        DomainEvent::DlqDecisionRejected(e) => format!(
            "DLQ decision {} rejected by operator {}: {}",
            e.decision_id, e.auth.operator_id, e.reason
        ),
        DomainEvent::DlqRetryReleased(e) => format!(
            "payment {} released for retry in batch {} of DLQ decision {}",
            e.payment_id, e.batch, e.decision_id
        ),
        DomainEvent::DlqReleasePaused(e) => format!(
            "release of DLQ decision {} paused by operator {}: {}",
            e.decision_id, e.auth.operator_id, e.reason
        ),
        DomainEvent::DlqReleaseResumed(e) => format!(
            "release of DLQ decision {} resumed by operator {}",
            e.decision_id, e.auth.operator_id
        ),
        _ => return None,
    };
    Some(text)
}

/// Describes where a payment came from.
pub(crate) fn describe_source(source: &PaymentSource) -> String {
    match source {
        PaymentSource::Api => "api".to_owned(),
        PaymentSource::AbaFile { batch_id, line } => format!("ABA batch {batch_id} line {line}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_keeps_last_three() {
        assert_eq!(mask_account_number("12345678"), "*****678");
        assert_eq!(mask_account_number("0042"), "*042");
        assert_eq!(mask_account_number("123"), "***");
        assert_eq!(mask_account_number(""), "");
    }

    #[test]
    fn mask_account_formats_bsb_and_iban() {
        let bsb = PayeeAccount::Bsb {
            bsb: "062000".into(),
            account: "12345678".into(),
        };
        assert_eq!(mask_account(&bsb), "BSB 062-000 account *****678");
        let iban = PayeeAccount::Iban {
            iban: "GB82WEST12345698765432".into(),
        };
        assert_eq!(mask_account(&iban), "IBAN *******************432");
    }
}
