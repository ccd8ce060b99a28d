//! Evidence bundles over HTTP: the same archive `folio export-bundle --tar` writes.
//!
//! Exporting evidence is a sensitive command: it needs an operator with the
//! `evidence:export` scope and a second factor no older than the step-up window, and the
//! export is recorded under that operator's name.

use actix_web::{post, web, HttpRequest, HttpResponse};
use domain::events::EventPayload;
use domain::evidence::{BundleExported, EVIDENCE_STREAM};
use domain::record::EventDraft;
use eventstore_adapter::{AppendRequest, ExpectedVersion, StreamWrite};
use serde::Deserialize;
use uuid::Uuid;

use crate::bundle::content::Scope as BundleScope;
use crate::bundle::{self, ExportRequest};
use crate::operators::{OperatorSession, StepUp};
use crate::problem::ApiError;
use crate::state::AppState;
use domain::operators::OperatorScope;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BundleBody {
    /// `ledger`, `positions FROM TO`, `time FROM TO`, `payment ID` or `payee ID`.
    scope: String,
}

/// Exports an evidence bundle as a ustar archive and records the export, with the digest of
/// the bundle's manifest, as an `evidence.bundle_exported` event.
#[post("/ledgers/{ledger_id}/bundles")]
pub(crate) async fn export(
    state: web::Data<AppState>,
    operator: StepUp,
    http: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let ledger_id = super::ledger_id(&path)?;
    let operator = operator.0;
    operator.require(OperatorScope::EvidenceExport, ledger_id)?;
    state.store.head(ledger_id).await?;
    let input: BundleBody = super::parse_json(&body, "bundle request")?;
    let scope = BundleScope::parse(&input.scope).map_err(|e| {
        ApiError::invalid(format!(
            "{e}; use ledger, positions FROM TO, time FROM TO, payment ID or payee ID"
        ))
    })?;

    let staging = tempfile::tempdir().map_err(ApiError::internal)?;
    let request = ExportRequest {
        kms: std::sync::Arc::clone(&state.kms),
        store: crate::state::store_location(&state.config, &state.db_passwords)
            .await
            .map_err(ApiError::internal)?,
        data_dir: state.config.data_dir.clone(),
        ledger_id,
        scope: scope.clone(),
        out: staging.path().join("bundle.tar"),
        archive: true,
    };
    let exported = bundle::export(&request).await.map_err(|e| {
        match e.downcast_ref::<bundle::ScopeError>() {
            Some(bundle::ScopeError::PastHead(detail)) => ApiError::invalid(detail.clone()),
            Some(bundle::ScopeError::NotFound(detail)) => ApiError::not_found(detail.clone()),
            // No checkpoint covers the scope yet, or the chain does not verify.
            None => ApiError::conflict(format!("{e:#}")),
        }
    })?;
    // TODO: stream the archive from the file instead of reading it whole, so large scopes
    // keep the server's memory flat.
    let archive = std::fs::read(&request.out).map_err(ApiError::internal)?;

    let correlation_id = crate::request_id::correlation_id(&http);
    record_export(
        &state,
        &operator,
        correlation_id,
        ledger_id,
        &scope,
        &exported,
    )
    .await?;
    Ok(HttpResponse::Ok()
        .content_type("application/x-tar")
        .insert_header(("Folio-Manifest-Blake3", exported.manifest_blake3.clone()))
        .body(archive))
}

async fn record_export(
    state: &AppState,
    operator: &OperatorSession,
    correlation_id: Uuid,
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
        auth: operator.auth(),
    };
    let draft = EventDraft {
        event_id: Uuid::now_v7(),
        event_type: BundleExported::EVENT_TYPE.to_owned(),
        schema_version: BundleExported::SCHEMA_VERSION,
        actor: operator.actor(),
        correlation_id,
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
