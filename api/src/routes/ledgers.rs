//! Ledgers: one per tenant.

use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::auth::{Caller, Scope};
use crate::idempotency::IdempotentRequest;
use crate::problem::ApiError;
use crate::state::AppState;

/// Maximum tenant name length, in bytes.
const MAX_TENANT_LEN: usize = 128;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateLedger {
    tenant: String,
}

/// Creates the ledger of a tenant, or returns the existing one (200) if the tenant has one.
///
/// Creation is idempotent by tenant: a retry finds the ledger the first call made.
#[post("/ledgers")]
pub(crate) async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::LedgersCreate)?;
    IdempotentRequest::from_request(&request, &body)?;
    let input: CreateLedger = super::parse_json(&body, "ledger request")?;
    let tenant = validate_tenant(&input.tenant)?;

    // One creation at a time, so two concurrent requests for a tenant make one ledger.
    // NOTE: this lock is per process; with several nodes the tenant check needs the store.
    let _guard = state.ledger_creation.lock().await;
    let ledgers = state.store.ledgers().await?;
    if let Some(existing) = ledgers.iter().find(|info| info.tenant == tenant) {
        let body = json!({"ledger_id": existing.ledger_id, "tenant": tenant, "created": false,
                          "position": existing.head.position});
        return Ok(HttpResponse::Ok().json(body));
    }
    let ledger_id = Uuid::now_v7();
    let created = state
        .store
        .create_ledger(
            ledger_id,
            &tenant,
            caller.actor(),
            crate::request_id::correlation_id(&request),
        )
        .await;
    let head = match created {
        Ok(head) => head,
        Err(error) => {
            // Another node may have created the tenant's ledger since the check above; the
            // store refused the second one, so answer with the ledger that won.
            let ledgers = state.store.ledgers().await?;
            let Some(existing) = ledgers.iter().find(|info| info.tenant == tenant) else {
                return Err(error.into());
            };
            let body = json!({"ledger_id": existing.ledger_id, "tenant": tenant,
                              "created": false, "position": existing.head.position});
            return Ok(HttpResponse::Ok().json(body));
        }
    };
    state.notify_appended(ledger_id);
    tracing::info!(ledger = %ledger_id, tenant = %tenant, "ledger created");
    let body = json!({"ledger_id": ledger_id, "tenant": tenant, "created": true,
                      "position": head.position, "head_hash": hex::encode(head.hash)});
    Ok(HttpResponse::build(StatusCode::CREATED).json(body))
}

fn validate_tenant(tenant: &str) -> Result<String, ApiError> {
    let trimmed = tenant.trim();
    let valid_chars = trimmed
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if trimmed.is_empty() || trimmed.len() > MAX_TENANT_LEN || !valid_chars {
        return Err(ApiError::invalid(format!(
            "tenant {tenant:?} is invalid; use 1 to {MAX_TENANT_LEN} letters, digits, '-', '_' or '.'"
        )));
    }
    Ok(trimmed.to_owned())
}

/// Lists the ledgers the caller may read.
#[get("/ledgers")]
pub(crate) async fn list(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::LedgersRead)?;
    let ledgers = state.store.ledgers().await?;
    let items = ledgers
        .iter()
        .filter(|info| {
            caller
                .require_on(Scope::LedgersRead, info.ledger_id)
                .is_ok()
        })
        .collect::<Vec<_>>();
    let mut json_items = Vec::with_capacity(items.len());
    for info in items {
        json_items.push(ledger_json(&state, info).await);
    }
    Ok(HttpResponse::Ok().json(json!({"items": json_items})))
}

/// Returns a ledger's head and projection status.
#[get("/ledgers/{ledger_id}")]
pub(crate) async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let ledger_id = super::ledger_id(&path)?;
    caller.require_on(Scope::LedgersRead, ledger_id)?;
    let ledgers = state.store.ledgers().await?;
    let info = ledgers
        .iter()
        .find(|info| info.ledger_id == ledger_id)
        .ok_or_else(|| ApiError::not_found(format!("ledger {ledger_id} not found")))?;
    Ok(HttpResponse::Ok().json(ledger_json(&state, info).await))
}

async fn ledger_json(state: &AppState, info: &eventstore_adapter::LedgerInfo) -> serde_json::Value {
    let projection = state.projection_status(info.ledger_id).await.ok();
    let verification = crate::verification::snapshot().remove(&info.ledger_id);
    json!({
        "ledger_id": info.ledger_id,
        "tenant": info.tenant,
        "head_position": info.head.position,
        "head_hash": hex::encode(info.head.hash),
        "projection": projection.map(|status| json!({
            "state": status.state,
            "position": status.position,
            "head_hash": status.head_hash,
            "lag": status.lag,
            "error": status.error,
        })),
        "verification": verification.map(|result| json!({
            "verified_position": result.verified_position,
            "failure": result.failure.map(|(code, message)| json!({
                "code": code,
                "message": message,
            })),
        })),
    })
}
