//! The dead-letter queue: payments that failed their last dispatch attempt. The list is a
//! summary; reading one item's full detail is recorded as a `dlq.item_viewed` event
//! before the detail is returned. Decisions on parked payments are in `dlq_decisions.rs`.

use actix_web::{get, web, HttpResponse};
use domain::dlq::{DlqItemViewed, DLQ_VIEWS_STREAM};
use eventstore_adapter::{AppendRequest, ExpectedVersion, StreamWrite};
use projections::{DeadLetterQuery, PageRequest};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::auth::{Caller, Scope};
use crate::commands::draft;
use crate::problem::ApiError;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DlqQuery {
    after: Option<u64>,
    limit: Option<u32>,
    min_position: Option<u64>,
    as_of: Option<String>,
    /// Comma-separated statuses; the open ones when absent.
    status: Option<String>,
    last_error_kind: Option<String>,
}

/// Lists parked payments, oldest first, with cursor pagination: the open ones by default,
/// or those with the given `status` values.
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
    let statuses = (query.status.as_deref())
        .map(|text| text.split(',').map(|s| s.trim().to_owned()).collect())
        .unwrap_or_default();
    let filter = DeadLetterQuery {
        statuses,
        last_error_kind: query.last_error_kind.clone(),
        page: PageRequest {
            after_position: query.after,
            limit: query.limit,
        },
        ..DeadLetterQuery::default()
    };
    let page = models
        .dead_letters_matching(ledger_id, &filter)
        .await
        .map_err(|error| match error {
            projections::ProjectionError::InvalidQuery { .. } => {
                ApiError::invalid(error.to_string())
            }
            other => ApiError::internal(other),
        })?;
    Ok(HttpResponse::Ok().json(page))
}

/// Returns one parked payment in full (the payment, its account masked, and the history
/// of the parking and the decisions), after recording who viewed it.
#[get("/ledgers/{ledger_id}/dlq/{payment_id}")]
pub(crate) async fn view(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let ledger_id = super::ledger_id(&path.0)?;
    caller.require_on(Scope::DlqRead, ledger_id)?;
    let payment_id = payment_id(&path.1)?;
    state.store.head(ledger_id).await?;
    let models = &state.models;
    let item = models.dead_letter(ledger_id, payment_id).await;
    let item = item.map_err(ApiError::internal)?.ok_or_else(|| {
        ApiError::not_found(format!(
            "payment {payment_id} was never parked in the dead-letter queue of ledger {ledger_id}"
        ))
    })?;
    let payment = models.payment(ledger_id, payment_id).await;
    let payment = payment.map_err(ApiError::internal)?;

    // The view is on record before anything is shown.
    let viewed = DlqItemViewed {
        payment_id,
        as_of_position: item.as_of_position.unwrap_or(0),
    };
    let write = StreamWrite {
        stream_id: DLQ_VIEWS_STREAM.to_owned(),
        expected: ExpectedVersion::Any,
        events: vec![draft(&viewed, &caller.actor(), Uuid::now_v7())],
    };
    let request = AppendRequest {
        writes: vec![write],
        idempotency: None,
    };
    let appended = state.store.append(ledger_id, request).await?;
    state.notify_appended(ledger_id);
    let view_position = match appended {
        eventstore_adapter::AppendOutcome::Committed(result) => Some(result.last_position),
        eventstore_adapter::AppendOutcome::Duplicate(_) => None,
    };

    let mut body = serde_json::to_value(&item).map_err(ApiError::internal)?;
    if let serde_json::Value::Object(map) = &mut body {
        map.insert("payment".to_owned(), json!(payment.map(|p| p.item)));
        map.insert("view_position".to_owned(), json!(view_position));
    }
    Ok(HttpResponse::Ok().json(body))
}

/// Parses a payment id path segment.
pub(crate) fn payment_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text)
        .map_err(|_| ApiError::invalid(format!("payment id {text:?} is not a UUID")))
}
