//! HTTP routes, one module per resource, all under `/v1`.

pub mod audit;
pub mod dlq;
pub mod health;
pub mod ledgers;
pub mod openapi;
pub mod payees;
pub mod payments;

use actix_web::web;
use serde::Deserialize;
use uuid::Uuid;

use crate::problem::ApiError;
use crate::state::AppState;

/// Registers every route.
pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(health::healthz)
        .service(health::readyz)
        .service(health::metrics)
        .service(openapi::document)
        .service(
            web::scope("/v1")
                .service(ledgers::create)
                .service(ledgers::list)
                .service(ledgers::get)
                .service(payees::add)
                .service(payees::remove)
                .service(payees::list)
                .service(payments::submit_batch)
                .service(payments::submit)
                .service(payments::list)
                .service(payments::get)
                .service(dlq::list)
                .service(audit::query),
        );
}

/// Query parameters shared by read endpoints.
#[derive(Debug, Deserialize)]
pub struct ConsistencyQuery {
    /// Wait until the read model has applied this ledger position.
    pub min_position: Option<u64>,
}

/// Waits (bounded by configuration) until the read models of `ledger_id` reach `min_position`.
///
/// # Errors
/// 503 `not_ready` when the position is not reached in time, naming both positions.
pub(crate) async fn wait_for(
    state: &AppState,
    ledger_id: Uuid,
    min_position: Option<u64>,
) -> Result<(), ApiError> {
    let Some(min_position) = min_position else {
        return Ok(());
    };
    let timeout = std::time::Duration::from_millis(state.config.server.min_position_wait_ms);
    let reached = state
        .models
        .wait_for_position(ledger_id, min_position, timeout)
        .await
        .map_err(ApiError::internal)?;
    if reached {
        Ok(())
    } else {
        Err(ApiError::unavailable(format!(
            "read model of ledger {ledger_id} has not reached position {min_position} within \
             {} ms; retry shortly",
            timeout.as_millis()
        )))
    }
}

/// Parses a ledger id path segment.
///
/// # Errors
/// 400 naming the segment.
pub fn ledger_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text)
        .map_err(|_| ApiError::invalid(format!("ledger id {text:?} is not a UUID")))
}
