//! State behind the DLQ commands: the decisions of a ledger, read from the `dlq` stream,
//! and whether a payment is parked right now, read from its own stream. Both come from
//! the event store, never from a read model, which may lag.

use domain::dlq::{DlqBook, DLQ_STREAM};
use domain::events::{DomainEvent, EventPayload, PaymentDeadLettered};
use uuid::Uuid;

use crate::problem::ApiError;
use crate::state::{payment_stream, AppState};

/// Events read from a stream per store call.
const PAGE: u32 = 1_000;

/// A cached book of DLQ decisions and the `dlq` stream version it reflects.
#[derive(Default)]
pub struct CachedDlqBook {
    book: DlqBook,
    version: Option<u64>,
}

impl AppState {
    /// Returns the DLQ decisions of a ledger as of the store's head, with the version of
    /// the `dlq` stream they reflect, applying only the events added since the last call.
    ///
    /// # Errors
    /// Store failures, or an event that does not decode.
    pub async fn dlq_book(&self, ledger_id: Uuid) -> Result<(DlqBook, Option<u64>), ApiError> {
        let mut cache = self.dlq_books.lock().await;
        let entry = cache.entry(ledger_id).or_default();
        loop {
            let from = entry.version.map_or(0, |version| version + 1);
            let events = self
                .store
                .read_stream(ledger_id, DLQ_STREAM, from, PAGE)
                .await?;
            for event in &events {
                let decoded =
                    DomainEvent::decode(&event.event_type, event.schema_version, &event.payload)
                        .map_err(ApiError::internal)?;
                entry.book.apply(event.position, &decoded);
                entry.version = Some(event.stream_version);
            }
            if events.len() < PAGE as usize {
                return Ok((entry.book.clone(), entry.version));
            }
        }
    }

    /// Returns the position at which a payment was last dead-lettered, if that is the
    /// last event of its stream (the payment is parked), or `None` otherwise.
    ///
    /// # Errors
    /// Store failures.
    pub async fn parked_position(
        &self,
        ledger_id: Uuid,
        payment_id: Uuid,
    ) -> Result<Option<u64>, ApiError> {
        let stream = payment_stream(payment_id);
        let mut from = 0;
        let mut last = None;
        loop {
            let events = self
                .store
                .read_stream(ledger_id, &stream, from, PAGE)
                .await?;
            if let Some(event) = events.last() {
                from = event.stream_version + 1;
                last = Some((event.event_type.clone(), event.position));
            }
            if events.len() < PAGE as usize {
                break;
            }
        }
        Ok(last
            .filter(|(event_type, _)| event_type == PaymentDeadLettered::EVENT_TYPE)
            .map(|(_, position)| position))
    }
}
