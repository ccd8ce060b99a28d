//! Signed checkpoints and the Merkle proofs that tie events and later checkpoints to them.

use actix_web::{get, web, HttpResponse};
use domain::checkpoint::SignedCheckpoint;
use domain::merkle;
use eventstore_adapter::checkpoints;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::auth::{Caller, Scope};
use crate::problem::ApiError;
use crate::proofs::{checkpoint_json, consistency_json, inclusion_json};
use crate::state::AppState;

/// Lists every signed checkpoint recorded in the ledger, oldest first.
#[get("/ledgers/{ledger_id}/checkpoints")]
pub(crate) async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let ledger_id = super::ledger_id(&path)?;
    caller.require_on(Scope::LedgersRead, ledger_id)?;
    let found = load_checkpoints(&state, ledger_id).await?;
    let items: Vec<_> = found.iter().map(checkpoint_json).collect();
    Ok(HttpResponse::Ok().json(json!({"items": items})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InclusionQuery {
    position: u64,
    tree_size: Option<u64>,
}

/// Proves that the event at `position` is in the tree of a signed checkpoint: the one of
/// `tree_size`, or else the first checkpoint that covers the position.
#[get("/ledgers/{ledger_id}/proofs/inclusion")]
pub(crate) async fn inclusion(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<InclusionQuery>,
) -> Result<HttpResponse, ApiError> {
    let ledger_id = super::ledger_id(&path)?;
    caller.require_on(Scope::LedgersRead, ledger_id)?;
    let found = load_checkpoints(&state, ledger_id).await?;
    let checkpoint = match query.tree_size {
        Some(size) => find_size(&found, size)?,
        None => found
            .iter()
            .find(|c| c.tree_size > query.position)
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "no checkpoint of ledger {ledger_id} covers position {} yet; retry after \
                     the next checkpoint",
                    query.position
                ))
            })?,
    };
    if query.position >= checkpoint.tree_size {
        return Err(ApiError::invalid(format!(
            "position {} is not below the checkpoint's tree size {}; pick a later checkpoint",
            query.position, checkpoint.tree_size
        )));
    }
    let hashes = load_hashes(&state, ledger_id, checkpoint.tree_size).await?;
    let proof = merkle::inclusion_proof(&hashes, query.position, checkpoint.tree_size)
        .map_err(ApiError::internal)?;
    // The position is below the tree size, which is the number of hashes read.
    let event_hash = hashes[query.position as usize];
    Ok(HttpResponse::Ok().json(inclusion_json(
        checkpoint,
        query.position,
        &event_hash,
        &proof,
    )))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsistencyQuery {
    from: u64,
    to: u64,
}

/// Proves that the checkpoint of tree size `to` extends the checkpoint of tree size `from`.
#[get("/ledgers/{ledger_id}/proofs/consistency")]
pub(crate) async fn consistency(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<ConsistencyQuery>,
) -> Result<HttpResponse, ApiError> {
    let ledger_id = super::ledger_id(&path)?;
    caller.require_on(Scope::LedgersRead, ledger_id)?;
    if query.from > query.to {
        return Err(ApiError::invalid(format!(
            "from {} is above to {}; pass the older checkpoint's tree size as from",
            query.from, query.to
        )));
    }
    let found = load_checkpoints(&state, ledger_id).await?;
    let old = find_size(&found, query.from)?;
    let new = find_size(&found, query.to)?;
    let hashes = load_hashes(&state, ledger_id, new.tree_size).await?;
    let proof = merkle::consistency_proof(&hashes, old.tree_size, new.tree_size)
        .map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(consistency_json(old, new, &proof)))
}

async fn load_checkpoints(
    state: &AppState,
    ledger_id: Uuid,
) -> Result<Vec<SignedCheckpoint>, ApiError> {
    // The head lookup returns 404 for an unknown ledger.
    state.store.head(ledger_id).await?;
    checkpoints::checkpoints(state.store.backend().as_ref(), ledger_id)
        .await
        .map_err(|e| eventstore_adapter::StoreError::from(e).into())
}

async fn load_hashes(
    state: &AppState,
    ledger_id: Uuid,
    count: u64,
) -> Result<Vec<merkle::Hash>, ApiError> {
    checkpoints::event_hashes(state.store.backend().as_ref(), ledger_id, count)
        .await
        .map_err(|e| eventstore_adapter::StoreError::from(e).into())
}

fn find_size(found: &[SignedCheckpoint], size: u64) -> Result<&SignedCheckpoint, ApiError> {
    found.iter().find(|c| c.tree_size == size).ok_or_else(|| {
        let sizes: Vec<String> = found.iter().map(|c| c.tree_size.to_string()).collect();
        ApiError::not_found(format!(
            "no checkpoint of tree size {size}; the ledger has checkpoints of sizes [{}]",
            sizes.join(", ")
        ))
    })
}
