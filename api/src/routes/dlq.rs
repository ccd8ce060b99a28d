//! The dead-letter queue: payments that failed their last dispatch attempt.

use actix_web::{get, web, HttpResponse};
use projections::PageRequest;
use serde::Deserialize;

use crate::auth::{Caller, Scope};
use crate::problem::ApiError;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
struct DlqQuery {
    after: Option<u64>,
    limit: Option<u32>,
    min_position: Option<u64>,
    as_of: Option<String>,
}

/// Lists parked payments, oldest first, with cursor pagination.
#[get("/ledgers/{ledger_id}/dlq")]
pub(crate) async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<DlqQuery>,
) -> Result<HttpResponse, ApiError> {
    let ledger_id = super::ledger_id(&path)?;
    caller.require_on(Scope::DlqRead, ledger_id)?;
    let models = super::replay::models_for(
        &state,
        ledger_id,
        query.as_of.as_deref(),
        query.min_position,
    )
    .await?;
    let page = models
        .dead_letters(
            ledger_id,
            &PageRequest {
                after_position: query.after,
                limit: query.limit,
            },
        )
        .await
        .map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(page))
}
