//! Auditor replay over HTTP: the read models of a ledger at a point, and the changes
//! between two points, rebuilt from the verified chain of the live store. The commands
//! `folio replay` and `folio diff` return the same results offline.

use actix_web::{get, web, HttpResponse};
use serde::Deserialize;
use uuid::Uuid;

use crate::auth::{Caller, Scope};
use crate::problem::ApiError;
use crate::replay::source::{self, Cutoff, VerifiedEvents};
use crate::state::AppState;

// TODO: serve `folio history` too (filters and causation walks over the verified chain);
// until then `GET /v1/ledgers/{id}/audit` lists events from the audit read model.

/// Maximum number of events one request may replay. Each request verifies every signature from genesis,
/// so a longer ledger is replayed offline with `folio replay`, away from the server's cores.
pub const MAX_REPLAY_EVENTS: u64 = 100_000;

#[derive(Debug, Deserialize)]
struct StateQuery {
    as_of: Option<String>,
}

#[derive(Debug, Deserialize)]
struct DiffQuery {
    from: String,
    to: Option<String>,
}

/// Returns the read models of a ledger as they stood at `as_of` (a position or an RFC 3339
/// time; default: the signed head).
#[get("/ledgers/{ledger_id}/replay")]
pub(crate) async fn state_at(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<StateQuery>,
) -> Result<HttpResponse, ApiError> {
    let ledger_id = super::ledger_id(&path)?;
    caller.require_on(Scope::AuditRead, ledger_id)?;
    let as_of = parse_point("as_of", query.as_of.as_deref())?;

    let loaded = load(&state, ledger_id, as_of).await?;
    let replayed = web::block(move || crate::replay::state::replay(&loaded.events))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(replayed))
}

/// Returns what changed in the read models of a ledger between `from` and `to` (default:
/// the signed head).
#[get("/ledgers/{ledger_id}/replay/diff")]
pub(crate) async fn diff(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<DiffQuery>,
) -> Result<HttpResponse, ApiError> {
    let ledger_id = super::ledger_id(&path)?;
    caller.require_on(Scope::AuditRead, ledger_id)?;
    let from = parse_point("from", Some(&query.from))?;
    let to = parse_point("to", query.to.as_deref())?;
    crate::replay::check_order(from, to).map_err(|e| ApiError::invalid(e.to_string()))?;

    let loaded = load(&state, ledger_id, to).await?;
    let changes = web::block(move || crate::replay::diff_events(&loaded.events, from))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    Ok(HttpResponse::Ok().json(changes))
}

fn parse_point(name: &str, text: Option<&str>) -> Result<Cutoff, ApiError> {
    match text {
        None => Ok(Cutoff::Head),
        Some(text) => {
            Cutoff::parse_point(text).map_err(|error| ApiError::invalid(format!("{name}: {error}")))
        }
    }
}

/// Reads and verifies the ledger up to `cutoff`, within [`MAX_REPLAY_EVENTS`].
async fn load(
    state: &AppState,
    ledger_id: Uuid,
    cutoff: Cutoff,
) -> Result<VerifiedEvents, ApiError> {
    let head = state.store.head(ledger_id).await?;
    let last = match cutoff {
        Cutoff::Position(position) => position.min(head.position),
        Cutoff::Head | Cutoff::Time(_) => head.position,
    };
    if last >= MAX_REPLAY_EVENTS {
        return Err(ApiError::invalid(format!(
            "replaying ledger {ledger_id} up to position {last} reads more than \
             {MAX_REPLAY_EVENTS} events; pass an earlier point, or export the ledger and run \
             folio replay offline"
        )));
    }
    let backend = state.store.backend().as_ref();
    // A chain that does not verify is logged and returned as a 500 internal error.
    source::load_backend(backend, "the live store", Some(ledger_id), cutoff)
        .await
        .map_err(ApiError::internal)
}
