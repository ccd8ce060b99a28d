//! Turning a parsed ABA file into payments: every detail record must pay an
//! allow-listed account, or the whole file is rejected.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use domain::aba::AbaFile;
use domain::anomaly_events::PaymentFlagged;
use domain::events::{AbaBatchImported, PaymentSource, PaymentSubmitted};
use domain::payments::{decide_submission, AllowList, PaymentPolicy};
use domain::record::Actor;
use eventstore_adapter::{ExpectedVersion, StreamWrite};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::commands::{draft, Decision};
use crate::problem::ApiError;
use crate::state::payment_stream;

/// Stream of the `aba.batch_imported` event, named by the file's hash, so the store itself
/// rejects a second import of the same bytes (the append expects no such stream).
pub fn file_stream_id(file_blake3: &[u8; 32]) -> String {
    format!("aba-file-{}", hex::encode(file_blake3))
}

/// Returns 409 `aba_file_duplicate` if this exact file was imported before.
///
/// # Errors
/// The duplicate rejection, naming the first batch, or a store failure.
pub async fn reject_duplicate(
    store: &eventstore_adapter::EventStore,
    ledger_id: Uuid,
    file_blake3: &[u8; 32],
) -> Result<(), ApiError> {
    let stream = file_stream_id(file_blake3);
    let events = store.read_stream(ledger_id, &stream, 0, 1).await?;
    let Some(first) = events.first() else {
        return Ok(());
    };
    let batch = domain::events::DomainEvent::decode(
        &first.event_type,
        first.schema_version,
        &first.payload,
    );
    let batch_id = match batch {
        Ok(domain::events::DomainEvent::AbaBatchImported(imported)) => {
            imported.batch_id.to_string()
        }
        _ => "unknown".to_owned(),
    };
    Err(ApiError::duplicate(
        "aba_file_duplicate",
        format!(
            "this exact file (blake3 {}) was already imported as batch {batch_id} at position {}; \
             nothing was stored again. To pay the same records again, submit a new file (for \
             example with a new processing date)",
            hex::encode(file_blake3),
            first.position
        ),
    ))
}

/// The events one accepted file produces.
pub struct AbaBatch {
    imported: AbaBatchImported,
    payments: Vec<PaymentSubmitted>,
}

/// Checks every detail record of `file` against the allow-list and the payment rules.
///
/// # Errors
/// 422 `aba_file_invalid` naming the first line whose transaction code, account or amount
/// is not accepted; nothing is stored.
pub fn decide(
    policy: &PaymentPolicy,
    list: &AllowList,
    file: &AbaFile,
    file_bytes: &[u8],
    ledger_id: Uuid,
) -> Result<AbaBatch, ApiError> {
    file.check_payments()
        .map_err(|e| ApiError::aba_invalid(e.to_string()))?;
    let batch_id = Uuid::now_v7();
    let mut payments = Vec::with_capacity(file.details.len());
    for detail in &file.details {
        let at_line = |error: &dyn std::fmt::Display, fix: &str| {
            ApiError::aba_invalid(format!(
                "line {}: {error}; {fix}, then resubmit the whole file",
                detail.line
            ))
        };
        let request = detail
            .payment_request(list, Uuid::now_v7(), batch_id)
            .map_err(|e| at_line(&e, "allow-list the payee of that account first"))?;
        let mut submitted = decide_submission(policy, list, request, ledger_id)
            .map_err(|e| at_line(&e, "fix that record"))?;
        // The bank gets the account title exactly as the file gives it.
        submitted.payee_name = detail.account_title.clone();
        assert_eq!(
            submitted.account,
            detail.payee_account(),
            "payment pays another account"
        );
        assert_eq!(
            submitted.amount_minor, detail.amount_minor,
            "payment changed the amount"
        );
        payments.push(submitted);
    }
    let imported = file.batch_imported(batch_id, file_bytes);
    Ok(AbaBatch { imported, payments })
}

impl AbaBatch {
    /// Returns the accepted payments, in file order.
    pub fn payments(&self) -> &[PaymentSubmitted] {
        &self.payments
    }

    /// Builds the response and the atomic append: the batch stream and one stream per
    /// payment. A payment with a flag in `flags` gets its `payment.flagged` event after its
    /// submission, and is listed as held.
    pub fn into_decision(
        self,
        actor: &Actor,
        correlation_id: Uuid,
        flags: &HashMap<Uuid, PaymentFlagged>,
    ) -> Decision {
        let batch_id = self.imported.batch_id;
        let mut writes = vec![StreamWrite {
            stream_id: file_stream_id(&self.imported.file_blake3),
            expected: ExpectedVersion::NoStream,
            events: vec![draft(&self.imported, actor, correlation_id)],
        }];
        let mut items = Vec::with_capacity(self.payments.len());
        let mut held = 0usize;
        for payment in &self.payments {
            let flag = flags.get(&payment.payment_id);
            let mut item = json!({
                "payment_id": payment.payment_id,
                "line": match payment.source { PaymentSource::AbaFile { line, .. } => line, PaymentSource::Api => 0 },
                "amount_minor": payment.amount_minor,
                "payee_id": payment.payee_id,
                "status": if flag.is_some() { "held_for_review" } else { "submitted" },
            });
            let submitted = draft(payment, actor, correlation_id);
            let mut events = Vec::with_capacity(2);
            if let Some(flag) = flag {
                held += 1;
                let findings: Vec<Value> = flag
                    .findings
                    .iter()
                    .map(projections::finding_json)
                    .collect();
                item["anomalies"] = Value::from(findings);
                let mut flagged = draft(flag, &Actor::system("anomaly-rules"), correlation_id);
                flagged.causation_id = Some(submitted.event_id);
                events.extend([submitted, flagged]);
            } else {
                events.push(submitted);
            }
            items.push(item);
            writes.push(StreamWrite {
                stream_id: payment_stream(payment.payment_id),
                expected: ExpectedVersion::NoStream,
                events,
            });
        }
        let body = json!({
            "batch_id": batch_id,
            "file_blake3": hex::encode(self.imported.file_blake3),
            "count": self.payments.len(),
            "held_for_review": held,
            "credit_total_minor": self.imported.credit_total_minor,
            "payments": items,
        });
        Decision {
            status: StatusCode::CREATED,
            body,
            writes,
        }
    }
}
