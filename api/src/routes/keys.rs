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
    /// No longer taken: the background job's batch is `kms.rewrap_batch`.
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

/// Makes a new KEK version current and wakes the background rewrap job, which moves the
/// data keys off the older versions in bounded batches. Returns 202 with the version and
/// the number of keys left to move.
#[post("/ledgers/{ledger_id}/kek/rotation")]
pub(crate) async fn rotate_kek(
    request: actix_web::HttpRequest,
    state: web::Data<AppState>,
    operator: StepUp,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let ledger_id = super::ledger_id(&path)?;
    let operator = operator.0;
    operator.require(OperatorScope::Administer, ledger_id)?;
    let input: KekRotation = super::parse_json(&body, "KEK rotation")?;
    if let Some(batch) = input.batch {
        return Err(ApiError::invalid(format!(
            "batch {batch} is not taken here: the background rewrap job moves keys in batches \
             of kms.rewrap_batch from the configuration; send {{}}"
        )));
    }

    let correlation_id = crate::request_id::correlation_id(&request);
    let version = crate::key_rotation::rotate_kek(&state, &operator.actor(), correlation_id)
        .await
        .map_err(ApiError::internal)?;
    let in_use = state
        .personal
        .keys()
        .versions_in_use()
        .await
        .map_err(ApiError::internal)?;
    let pending: u64 = (in_use.iter())
        .filter(|(old, _)| **old != version)
        .map(|(_, count)| *count)
        .sum();
    state.rewrap.wake();
    Ok(HttpResponse::Accepted().json(json!({
        "version": version,
        "pending_data_keys": pending,
        "rewrap": "the background job moves them in batches of kms.rewrap_batch; \
                   watch folio_kms_rewrap_pending_keys or the kms.data_keys_rewrapped events",
    })))
}

fn checked_reason(reason: &str) -> Result<&str, ApiError> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(ApiError::invalid("reason must be 1 to 500 characters"));
    }
    Ok(reason)
}
