//! Command handling shared by every POST: idempotency, deciding, appending.
//!
//! A command loads the state it needs from the event store (never from a read
//! model, which may lag), decides with the domain rules, and appends its events
//! together with the idempotency claim in one atomic store append.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use domain::events::EventPayload;
use domain::record::{Actor, EventDraft};
use eventstore_adapter::{
    AppendOutcome, AppendRequest, IdempotencyRecord, StoreError, StreamWrite,
};
use serde_json::Value;
use uuid::Uuid;

use crate::idempotency::IdempotentRequest;
use crate::problem::ApiError;
use crate::sealed_replies;
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
    decide: F,
) -> Result<HttpResponse, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Decision, ApiError>>,
{
    run_keeping(state, ledger_id, request, body, true, decide).await
}

/// [`run`] for a request whose body carries personal fields (a payee's name or account,
/// an ABA file): the idempotency record keeps the body's hash but not the body, so an
/// erasure leaves no clear copy behind.
///
/// # Errors
/// As [`run`].
pub async fn run_personal<F, Fut>(
    state: &AppState,
    ledger_id: Uuid,
    request: &HttpRequest,
    body: &[u8],
    decide: F,
) -> Result<HttpResponse, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Decision, ApiError>>,
{
    run_keeping(state, ledger_id, request, body, false, decide).await
}

async fn run_keeping<F, Fut>(
    state: &AppState,
    ledger_id: Uuid,
    request: &HttpRequest,
    body: &[u8],
    keep_body: bool,
    mut decide: F,
) -> Result<HttpResponse, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Decision, ApiError>>,
{
    let idempotent = IdempotentRequest::from_request(request, body)?;
    if let Some(record) = state.store.idempotency(ledger_id, &idempotent.key).await? {
        return replay(state, ledger_id, &idempotent, &record).await;
    }

    let mut attempt = 0;
    loop {
        attempt += 1;
        let decision = decide().await?;
        let now = state.clock.now_micros();
        let stored_body = sealed_replies::seal(
            &state.personal,
            ledger_id,
            &idempotent.key,
            decision.body.clone(),
            now,
        )
        .await
        .map_err(ApiError::internal)?;
        let claim = idempotent.claim(decision.status, &stored_body, keep_body);
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
            Ok(AppendOutcome::Duplicate(record)) => {
                return replay(state, ledger_id, &idempotent, &record).await
            }
            Err(StoreError::WrongExpectedVersion { .. }) if attempt < MAX_CONFLICT_RETRIES => {
                continue
            }
            Err(StoreError::IdempotencyKeyReused { stored, .. }) => {
                return replay(state, ledger_id, &idempotent, &stored).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Replays the stored response of a request seen before, its personal fields opened (or
/// `[erased]`), or refuses a different request under the same key.
async fn replay(
    state: &AppState,
    ledger_id: Uuid,
    idempotent: &IdempotentRequest,
    record: &IdempotencyRecord,
) -> Result<HttpResponse, ApiError> {
    idempotent.check_same(record)?;
    let body: Value = serde_json::from_slice(&record.claim.response_body).unwrap_or(Value::Null);
    let body = sealed_replies::open(&state.personal, ledger_id, &idempotent.key, body)
        .await
        .map_err(ApiError::internal)?;
    Ok(crate::idempotency::stored_response(record, body))
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
