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

/// Maximum number of events one request may replay. Each request verifies every signature from genesis,
/// so a longer ledger is replayed offline with `folio replay`, away from the server's cores.
pub const MAX_REPLAY_EVENTS: u64 = 100_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateQuery {
    as_of: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    stream: Option<String>,
    actor: Option<String>,
    correlation: Option<Uuid>,
    from: Option<u64>,
    to: Option<u64>,
    since: Option<String>,
    until: Option<String>,
    why: Option<Uuid>,
    caused: Option<Uuid>,
    format: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
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
    let opened = open_sealed(&state, ledger_id, &loaded.events).await?;
    let replayed = web::block(move || crate::replay::state::replay_opened(&loaded.events, opened))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(replayed))
}

/// Lists the events of a ledger as `folio history` does, from the verified chain: JSON lines
/// by default, or CSV with `format=csv`.
#[get("/ledgers/{ledger_id}/history")]
pub(crate) async fn history(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    use crate::replay::history::{self, Causation, Filter, Format};

    let ledger_id = super::ledger_id(&path)?;
    caller.require_on(Scope::AuditRead, ledger_id)?;
    let query = query.into_inner();
    let time = |name: &str, text: &Option<String>| {
        text.as_deref()
            .map(crate::replay::event_view::parse_time)
            .transpose()
            .map_err(|error| ApiError::invalid(format!("{name}: {error}")))
    };
    let filter = Filter {
        stream: query.stream,
        actor: query.actor,
        correlation: query.correlation,
        from_position: query.from,
        to_position: query.to,
        since_micros: time("since", &query.since)?,
        until_micros: time("until", &query.until)?,
    };
    filter
        .check_range()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let (format, content_type) = match query.format.as_deref() {
        None | Some("jsonl") => (Format::Jsonl, "application/x-ndjson"),
        Some("csv") => (Format::Csv, "text/csv; charset=utf-8"),
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "format {other:?} is not supported; use jsonl or csv"
            )))
        }
    };
    let walk = match (query.why, query.caused) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid("pass why or caused, not both"));
        }
        (Some(id), None) => Some(Causation::Why(id)),
        (None, Some(id)) => Some(Causation::Caused(id)),
        (None, None) => None,
    };
    let loaded = load(&state, ledger_id, filter.cutoff()).await?;
    let body = web::block(move || -> Result<String, ApiError> {
        let (listed, _) = history::select(&loaded.events, walk, &filter)
            .map_err(|e| ApiError::not_found(e.to_string()))?;
        Ok(history::render(&listed, format))
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(HttpResponse::Ok().content_type(content_type).body(body))
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
    let opened = open_sealed(&state, ledger_id, &loaded.events).await?;
    let changes = web::block(move || crate::replay::diff_opened(&loaded.events, from, opened))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    Ok(HttpResponse::Ok().json(changes))
}

/// Events applied to the temporary read models per transaction.
const AS_OF_BATCH: usize = 1_000;

/// Returns the read models a query reads. Without `as_of` these are the live ones, after
/// waiting for `min_position`. With `as_of` they are fresh in-memory ones, built by the same
/// projections from the chain verified up to that point, so the response has the live shape
/// and the live read models are not touched.
///
/// # Errors
/// 400 for an invalid point or one past [`MAX_REPLAY_EVENTS`], and the errors of
/// [`super::wait_for`].
pub(crate) async fn models_for(
    state: &AppState,
    ledger_id: Uuid,
    as_of: Option<&str>,
    min_position: Option<u64>,
) -> Result<projections::ReadModels, ApiError> {
    let Some(as_of) = as_of else {
        super::wait_for(state, ledger_id, min_position).await?;
        return Ok(state.models.clone());
    };
    if min_position.is_some() {
        return Err(ApiError::invalid(
            "pass as_of or min_position, not both: as_of reads a past point of the chain",
        ));
    }
    let cutoff = parse_point("as_of", Some(as_of))?;
    let loaded = load(state, ledger_id, cutoff).await?;
    let models = projections::ReadModels::in_memory()
        .await
        .map_err(ApiError::internal)?
        .with_opener(state.personal.clone());
    for chunk in loaded.events.chunks(AS_OF_BATCH) {
        models
            .apply_batch(ledger_id, chunk)
            .await
            .map_err(ApiError::internal)?;
    }
    Ok(models)
}

/// Opens the sealed personal fields among `events` through the KMS, by position.
async fn open_sealed(
    state: &AppState,
    ledger_id: Uuid,
    events: &[domain::record::SealedEvent],
) -> Result<std::collections::HashMap<u64, domain::events::DomainEvent>, ApiError> {
    let mut opened = std::collections::HashMap::new();
    for event in events
        .iter()
        .filter(|e| crate::personal::is_sealed_payee(e))
    {
        let decoded = domain::events::DomainEvent::decode(
            &event.event_type,
            event.schema_version,
            &event.payload,
        )
        .map_err(ApiError::internal)?;
        let plain = state
            .personal
            .open(ledger_id, &event.stream_id, event.event_id, decoded)
            .await
            .map_err(ApiError::internal)?;
        opened.insert(event.position, plain);
    }
    Ok(opened)
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
