//! The audit trail: every event in order, with actor and hash.

use actix_web::{get, web, HttpResponse};
use projections::PageRequest;
use serde::Deserialize;

use crate::auth::{Caller, Scope};
use crate::problem::ApiError;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    from: Option<String>,
    to: Option<String>,
    actor: Option<String>,
    stream: Option<String>,
    event_type: Option<String>,
    after_position: Option<u64>,
    limit: Option<u32>,
    min_position: Option<u64>,
}

/// Queries the audit trail by time (`from` inclusive, `to` exclusive, RFC 3339 or
/// microseconds), actor, stream and event type, paged by position.
#[get("/ledgers/{ledger_id}/audit")]
pub(crate) async fn query(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let ledger_id = super::ledger_id(&path)?;
    caller.require_on(Scope::AuditRead, ledger_id)?;
    super::wait_for(&state, ledger_id, query.min_position).await?;
    let bound = |name: &'static str, text: &Option<String>| {
        text.as_deref()
            .map(|text| projections::parse_time_bound(name, text))
            .transpose()
            .map_err(|e| ApiError::invalid(e.to_string()))
    };
    let filter = projections::AuditQuery {
        from_micros: bound("from", &query.from)?,
        to_micros: bound("to", &query.to)?,
        actor_id: query.actor.clone(),
        stream_id: query.stream.clone(),
        event_type: query.event_type.clone(),
        page: PageRequest {
            after_position: query.after_position,
            limit: query.limit,
        },
    };
    let page = state
        .models
        .audit_trail(ledger_id, &filter)
        .await
        .map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(page))
}
