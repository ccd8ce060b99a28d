//! Dispatch of one sealed event to every read model.

use domain::anomaly_events::{PaymentFlagged, PaymentReviewed};
use domain::dlq::{
    DlqDecisionApproved, DlqDecisionProposed, DlqDecisionRejected, DlqItemViewed, DlqReleasePaused,
    DlqReleaseResumed, DlqRetryReleased,
};
use domain::events::{
    AbaBatchImported, BreakerStateChanged, DispatchAttempted, DispatchFailed, DomainEvent,
    EventPayload, LedgerCreated, LedgerKeyRotated, PayeeAdded, PayeeRemoved, PayloadError,
    PaymentDeadLettered, PaymentRejected, PaymentSubmitted, ReceiptRecorded,
};
use domain::personal::SubjectErased;
use domain::record::SealedEvent;
use sqlx::AnyConnection;
use uuid::Uuid;

use crate::row::to_db;
use crate::{
    aba_batches, anomalies, audit, dead_letters, payees, payments, summary, ProjectionError,
};

/// Event types this build decodes. A payload of one of these types that does not decode,
/// or that has a schema version this build does not know, stops the projection. Events of
/// any other type are recorded in the audit trail only.
const KNOWN_EVENT_TYPES: &[&str] = &[
    LedgerCreated::EVENT_TYPE,
    LedgerKeyRotated::EVENT_TYPE,
    PayeeAdded::EVENT_TYPE,
    SubjectErased::EVENT_TYPE,
    PayeeRemoved::EVENT_TYPE,
    PaymentSubmitted::EVENT_TYPE,
    PaymentRejected::EVENT_TYPE,
    AbaBatchImported::EVENT_TYPE,
    DispatchAttempted::EVENT_TYPE,
    DispatchFailed::EVENT_TYPE,
    ReceiptRecorded::EVENT_TYPE,
    PaymentDeadLettered::EVENT_TYPE,
    BreakerStateChanged::EVENT_TYPE,
    DlqItemViewed::EVENT_TYPE,
    DlqDecisionProposed::EVENT_TYPE,
    DlqDecisionApproved::EVENT_TYPE,
    DlqDecisionRejected::EVENT_TYPE,
    DlqRetryReleased::EVENT_TYPE,
    DlqReleasePaused::EVENT_TYPE,
    DlqReleaseResumed::EVENT_TYPE,
    PaymentFlagged::EVENT_TYPE,
    PaymentReviewed::EVENT_TYPE,
];

/// The event being applied, with the values every model writes.
pub(crate) struct EventContext<'a> {
    /// Ledger id as stored (hyphenated UUID text).
    pub(crate) ledger: String,
    pub(crate) ledger_id: Uuid,
    pub(crate) event: &'a SealedEvent,
    /// Position as a `BIGINT`.
    pub(crate) position: i64,
    /// Time the event was recorded, in microseconds since the Unix epoch.
    pub(crate) at_micros: i64,
}

impl EventContext<'_> {
    /// Builds the error for an event that contradicts the read models.
    pub(crate) fn inconsistent(&self, reason: String) -> ProjectionError {
        ProjectionError::Inconsistent {
            ledger_id: self.ledger_id,
            position: self.event.position,
            reason,
        }
    }
}

/// Applies one event to every read model inside the caller's transaction. `raw` is the
/// decoded payload (`None` for a type this build does not know), `opened` the same with
/// sealed fields opened. The audit trail summarises the raw form, so it never holds a
/// sealed personal field in the clear.
pub(crate) async fn apply_event(
    conn: &mut AnyConnection,
    ledger_id: Uuid,
    event: &SealedEvent,
    raw: Option<DomainEvent>,
    opened: Option<DomainEvent>,
) -> Result<(), ProjectionError> {
    let context = EventContext {
        ledger: ledger_id.to_string(),
        ledger_id,
        event,
        position: to_db("position", event.position)?,
        at_micros: event.recorded_at_micros,
    };
    let summary = raw.as_ref().and_then(summary::summarize);
    audit::record(conn, &context, summary).await?;
    let Some(decoded) = opened else {
        return Ok(());
    };

    // The dead-letter model reads the payment row, so payments go first.
    payments::apply(conn, &context, &decoded).await?;
    dead_letters::apply(conn, &context, &decoded).await?;
    payees::apply(conn, &context, &decoded).await?;
    aba_batches::apply(conn, &context, &decoded).await?;
    anomalies::apply(conn, &context, &decoded).await?;
    Ok(())
}

/// Decodes a payload; `None` for an event type this build does not know.
pub(crate) fn decode(
    ledger_id: Uuid,
    event: &SealedEvent,
) -> Result<Option<DomainEvent>, ProjectionError> {
    match DomainEvent::decode(&event.event_type, event.schema_version, &event.payload) {
        Ok(decoded) => Ok(Some(decoded)),
        Err(PayloadError::Unknown { .. })
            if !KNOWN_EVENT_TYPES.contains(&event.event_type.as_str()) =>
        {
            Ok(None)
        }
        Err(source) => Err(ProjectionError::Payload {
            ledger_id,
            position: event.position,
            source,
        }),
    }
}
