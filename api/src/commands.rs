//! Command handling shared by every POST: idempotency, deciding, appending.
//!
//! A command loads the state it needs from the event store (never from a read
//! model, which may lag), decides with the domain rules, and appends its events
//! together with the idempotency claim in one atomic store append.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use domain::events::EventPayload;
use domain::record::{Actor, EventDraft};
use eventstore_adapter::{AppendOutcome, AppendRequest, StoreError, StreamWrite};
use serde_json::Value;
use uuid::Uuid;

use crate::idempotency::IdempotentRequest;
use crate::problem::ApiError;
use crate::state::AppState;

/// Decision of a command: its response and the events to append.
pub struct Decision {
    /// HTTP status of the response.
    pub status: StatusCode,
    /// Response body; the position of the last event is added as `position`.
    pub body: Value,
    /// Events to append atomically.
    pub writes: Vec<StreamWrite>,
}

/// Attempts of a command when a concurrent change to the same stream wins.
const MAX_CONFLICT_RETRIES: usize = 3;

/// Runs a command with idempotency: replays a stored response for a known key,
/// otherwise decides (again after a version conflict) and appends.
///
/// # Errors
/// The command's own rejection, `idempotency_key_reused`, or a store failure.
pub async fn run<F, Fut>(
    state: &AppState,
    ledger_id: Uuid,
    request: &HttpRequest,
    body: &[u8],
    mut decide: F,
) -> Result<HttpResponse, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Decision, ApiError>>,
{
    let idempotent = IdempotentRequest::from_request(request, body)?;
    if let Some(record) = state.store.idempotency(ledger_id, &idempotent.key).await? {
        return idempotent.replay(&record);
    }

    let mut attempt = 0;
    loop {
        attempt += 1;
        let decision = decide().await?;
        let claim = idempotent.claim(decision.status, &decision.body);
        let events: usize = decision.writes.iter().map(|write| write.events.len()).sum();
        let append = AppendRequest {
            writes: decision.writes,
            idempotency: Some(claim),
        };
        let started = std::time::Instant::now();
        match state.store.append(ledger_id, append).await {
            Ok(AppendOutcome::Committed(result)) => {
                crate::metrics::API.record_append(events, started.elapsed());
                state.notify_appended(ledger_id);
                return Ok(respond(
                    decision.status,
                    decision.body,
                    result.last_position,
                ));
            }
            Ok(AppendOutcome::Duplicate(record)) => return idempotent.replay(&record),
            Err(StoreError::WrongExpectedVersion { .. }) if attempt < MAX_CONFLICT_RETRIES => {
                continue
            }
            Err(StoreError::IdempotencyKeyReused { stored, .. }) => {
                return idempotent.replay(&stored);
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Builds a response with the position added to the body.
pub fn respond(status: StatusCode, mut body: Value, position: u64) -> HttpResponse {
    if let Value::Object(map) = &mut body {
        map.insert("position".to_owned(), Value::from(position));
    }
    let content_type = if status.is_success() {
        "application/json"
    } else {
        crate::problem::PROBLEM_JSON
    };
    HttpResponse::build(status)
        .content_type(content_type)
        .json(body)
}

/// Builds an event draft from a payload.
pub fn draft<P: EventPayload>(payload: &P, actor: &Actor, correlation_id: Uuid) -> EventDraft {
    EventDraft {
        event_id: Uuid::now_v7(),
        event_type: P::EVENT_TYPE.to_owned(),
        schema_version: P::SCHEMA_VERSION,
        actor: actor.clone(),
        correlation_id,
        causation_id: None,
        payload: payload.encode(),
    }
}
