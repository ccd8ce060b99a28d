//! Control runs: start one now, or read the latest recorded one.

use actix_web::{get, post, web, HttpResponse};
use domain::controls::ControlsRunRecorded;
use domain::events::{DomainEvent, EventPayload};
use serde_json::{json, Value};

use crate::auth::{Caller, Scope};
use crate::controls::CONTROLS_STREAM;
use crate::problem::ApiError;
use crate::state::AppState;

/// Runs every control over the ledger now, records the run as an event and returns it.
#[post("/ledgers/{ledger_id}/controls/runs")]
pub(crate) async fn start_run(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let ledger_id = super::ledger_id(&path)?;
    // Reading is not enough: a run appends an event to the ledger.
    caller.require_on(Scope::ControlsRun, ledger_id)?;
    let policy = state.config.controls.policy();
    let now = state.clock.now_micros();
    let backend = state.store.backend().as_ref();
    let run = crate::controls::evaluate(backend, ledger_id, policy, now, None)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("ledger {ledger_id} has no events")))?;
    let position = crate::controls::record(&state.store, ledger_id, &run, &caller.actor())
        .await
        .map_err(ApiError::internal)?;
    Ok(HttpResponse::Created().json(run_json(&run, position)))
}

/// Returns the ledger's latest recorded control run.
#[get("/ledgers/{ledger_id}/controls/runs/latest")]
pub(crate) async fn latest(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let ledger_id = super::ledger_id(&path)?;
    caller.require_on(Scope::AuditRead, ledger_id)?;
    let backend = state.store.backend();
    let version = backend
        .stream_version(ledger_id, CONTROLS_STREAM)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "ledger {ledger_id} has no control run yet; POST to \
                 /v1/ledgers/{ledger_id}/controls/runs to start one"
            ))
        })?;
    let events = backend
        .read_stream(ledger_id, CONTROLS_STREAM, version, 1)
        .await
        .map_err(ApiError::internal)?;
    let event = events
        .first()
        .ok_or_else(|| ApiError::internal("the controls stream version has no event"))?;
    let decoded = DomainEvent::decode(&event.event_type, event.schema_version, &event.payload)
        .map_err(ApiError::internal)?;
    let DomainEvent::ControlsRunRecorded(run) = decoded else {
        return Err(ApiError::internal(format!(
            "the controls stream contains a {} event, expected {}",
            event.event_type,
            ControlsRunRecorded::EVENT_TYPE
        )));
    };
    let mut body = run_json(&run, event.position);
    body["recorded_at_micros"] = Value::from(event.recorded_at_micros);
    Ok(HttpResponse::Ok().json(body))
}

/// Renders a run for the API: the event's position, the verdict and each control.
pub fn run_json(run: &ControlsRunRecorded, position: u64) -> Value {
    let results: Vec<Value> = run
        .results
        .iter()
        .map(|result| {
            json!({
                "control": result.control,
                "status": result.status.as_str(),
                "examined": result.examined,
                "detail": result.detail,
            })
        })
        .collect();
    json!({
        "position": position,
        "last_position": run.last_position,
        "last_hash": hex::encode(run.last_hash),
        "passed": run.passed(),
        "results": results,
    })
}
