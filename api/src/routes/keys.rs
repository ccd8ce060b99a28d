//! Key rotation while serving: the ledger signing key, its revocation, and the KEK with
//! a bounded rewrap. Each takes an administrator session with a fresh second factor.

use actix_web::{post, web, HttpResponse};
use domain::operators::OperatorScope;
use serde::Deserialize;
use serde_json::json;

use crate::operators::StepUp;
use crate::problem::ApiError;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rotation {
    reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Revocation {
    key_id: String,
    from_position: u64,
    reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KekRotation {
    /// Data keys rewrapped per batch, at most 1000.
    batch: Option<u32>,
}

/// Rotates the ledger's signing key: `ledger.key_rotated`, signed by the old key.
#[post("/ledgers/{ledger_id}/signing-key/rotation")]
pub(crate) async fn rotate_signing(
    state: web::Data<AppState>,
    operator: StepUp,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let ledger_id = super::ledger_id(&path)?;
    let operator = operator.0;
    operator.require(OperatorScope::Administer, ledger_id)?;
    state.store.head(ledger_id).await?;
    let input: Rotation = super::parse_json(&body, "rotation")?;
    let reason = checked_reason(&input.reason)?;

    let actor = operator.actor();
    let result = crate::key_rotation::rotate_signing(&state, ledger_id, actor, reason)
        .await
        .map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(json!({"position": result.last_position})))
}

/// Revokes a signing key version from a position on: `ledger.key_revoked`.
#[post("/ledgers/{ledger_id}/signing-key/revocation")]
pub(crate) async fn revoke_signing(
    state: web::Data<AppState>,
    operator: StepUp,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let ledger_id = super::ledger_id(&path)?;
    let operator = operator.0;
    operator.require(OperatorScope::Administer, ledger_id)?;
    state.store.head(ledger_id).await?;
    let input: Revocation = super::parse_json(&body, "revocation")?;
    let reason = checked_reason(&input.reason)?;

    let result = crate::key_rotation::revoke_signing(
        &state,
        ledger_id,
        input.key_id.trim(),
        input.from_position,
        reason,
    )
    .await
    .map_err(|error| ApiError::rejected("key_revocation_refused", format!("{error:#}")))?;
    Ok(HttpResponse::Ok().json(json!({"position": result.last_position})))
}

/// Makes a new KEK version current, then rewraps every data key off the old version in
/// bounded batches.
#[post("/ledgers/{ledger_id}/kek/rotation")]
pub(crate) async fn rotate_kek(
    state: web::Data<AppState>,
    operator: StepUp,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let ledger_id = super::ledger_id(&path)?;
    let operator = operator.0;
    operator.require(OperatorScope::Administer, ledger_id)?;
    let input: KekRotation = super::parse_json(&body, "KEK rotation")?;
    let batch = input.batch.unwrap_or(100);

    let in_use = state
        .personal
        .keys()
        .versions_in_use()
        .await
        .map_err(ApiError::internal)?;
    let version = crate::key_rotation::rotate_kek(&state)
        .await
        .map_err(ApiError::internal)?;
    let mut rewrapped = 0;
    for old in in_use.keys().filter(|old| **old != version) {
        // Bounded: each batch moves keys or the loop ends.
        loop {
            let progress = crate::key_rotation::rewrap(&state, old, batch)
                .await
                .map_err(ApiError::internal)?;
            rewrapped += progress.rewrapped;
            if progress.remaining == 0 || progress.rewrapped == 0 {
                break;
            }
        }
    }
    Ok(HttpResponse::Ok().json(json!({"version": version, "rewrapped": rewrapped})))
}

fn checked_reason(reason: &str) -> Result<&str, ApiError> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(ApiError::invalid("reason must be 1 to 500 characters"));
    }
    Ok(reason)
}
