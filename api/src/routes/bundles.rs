//! Evidence bundles over HTTP: the same archive `folio export-bundle --tar` writes.

use actix_web::{get, web, HttpResponse};
use domain::events::EventPayload;
use domain::evidence::{BundleExported, EVIDENCE_STREAM};
use domain::record::EventDraft;
use eventstore_adapter::{AppendRequest, ExpectedVersion, StreamWrite};
use serde::Deserialize;
use uuid::Uuid;

use crate::auth::{Caller, Scope};
use crate::bundle::content::Scope as BundleScope;
use crate::bundle::{self, ExportRequest};
use crate::problem::ApiError;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
struct BundleQuery {
    /// `ledger`, `positions FROM TO`, `time FROM TO`, `payment ID` or `payee ID`.
    scope: String,
}

/// Exports an evidence bundle as a ustar archive and records the export, with the digest of
/// the bundle's manifest, as an `evidence.bundle_exported` event.
#[get("/ledgers/{ledger_id}/bundle")]
pub(crate) async fn export(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<BundleQuery>,
) -> Result<HttpResponse, ApiError> {
    let ledger_id = super::ledger_id(&path)?;
    caller.require_on(Scope::AuditRead, ledger_id)?;
    state.store.head(ledger_id).await?;
    let scope = BundleScope::parse(&query.scope).map_err(|e| {
        ApiError::invalid(format!(
            "{e}; use ledger, positions FROM TO, time FROM TO, payment ID or payee ID"
        ))
    })?;

    let staging = tempfile::tempdir().map_err(ApiError::internal)?;
    let request = ExportRequest {
        data_dir: state.config.data_dir.clone(),
        ledger_id,
        scope: scope.clone(),
        out: staging.path().join("bundle.tar"),
        archive: true,
    };
    let exported = bundle::export(&request)
        .await
        .map_err(|e| ApiError::conflict(format!("{e:#}")))?;
    // TODO: stream the archive from the file instead of reading it whole, so large scopes
    // keep the server's memory flat.
    let archive = std::fs::read(&request.out).map_err(ApiError::internal)?;

    record_export(&state, &caller, ledger_id, &scope, &exported).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/x-tar")
        .insert_header(("Folio-Manifest-Blake3", exported.manifest_blake3.clone()))
        .body(archive))
}

async fn record_export(
    state: &AppState,
    caller: &Caller,
    ledger_id: Uuid,
    scope: &BundleScope,
    exported: &bundle::Exported,
) -> Result<(), ApiError> {
    let digest = hex::decode(&exported.manifest_blake3).map_err(ApiError::internal)?;
    let manifest_blake3: [u8; 32] = digest
        .try_into()
        .map_err(|_| ApiError::internal("digest length"))?;
    let payload = BundleExported {
        scope: scope.describe(),
        tree_size: exported.tree_size,
        manifest_blake3,
    };
    let draft = EventDraft {
        event_id: Uuid::now_v7(),
        event_type: BundleExported::EVENT_TYPE.to_owned(),
        schema_version: BundleExported::SCHEMA_VERSION,
        actor: caller.actor(),
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        payload: payload.encode(),
    };
    let request = AppendRequest {
        writes: vec![StreamWrite {
            stream_id: EVIDENCE_STREAM.to_owned(),
            expected: ExpectedVersion::Any,
            events: vec![draft],
        }],
        idempotency: None,
    };
    state.store.append(ledger_id, request).await?;
    state.notify_appended(ledger_id);
    Ok(())
}
