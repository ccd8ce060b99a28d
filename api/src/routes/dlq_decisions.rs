//! Decisions on parked payments: retry or ignore, each proposed by one operator with a
//! reason and approved by a different one, both with a fresh step-up.
//!
//! A retry names an explicit list of payments, or a filter that is resolved to such a
//! list. Either way `dry_run` shows the count first, and a list above `dlq.max_bulk` is
//! rejected. There is no action that retries every parked payment. An approved retry is
//! released to the dispatcher in paced batches, which an operator can pause and resume.

use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use domain::dlq::{
    canonical_payment_ids, decision_hash, Decision, DecisionStatus, DlqAction, DlqBook,
    DlqDecisionApproved, DlqDecisionError, DlqDecisionProposed, DlqDecisionRejected,
    DlqReleasePaused, DlqReleaseResumed, IgnoreReason, DLQ_STREAM,
};
use domain::events::EventPayload;
use domain::operators::OperatorScope;
use eventstore_adapter::{ExpectedVersion, StreamWrite};
use projections::{DeadLetterQuery, PageRequest};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::auth::{Caller, Scope};
use crate::commands::{self, draft, Decision as CommandDecision};
use crate::operators::session::seconds_to_micros;
use crate::operators::{OperatorSession, StepUp};
use crate::problem::ApiError;
use crate::state::AppState;

/// Maximum length of a free-text reason, in characters.
const MAX_REASON_CHARS: usize = 500;

/// Conditions that pick parked payments for a bulk retry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Filter {
    last_error_kind: Option<String>,
    parked_from: Option<String>,
    parked_to: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryRequest {
    payment_ids: Option<Vec<Uuid>>,
    filter: Option<Filter>,
    reason: String,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IgnoreRequest {
    payment_ids: Vec<Uuid>,
    reason_code: String,
    reason: String,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Approval {
    content_hash: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reason {
    reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Resume {}

/// Proposes to retry parked payments, or with `dry_run` shows what would be proposed.
#[post("/ledgers/{ledger_id}/dlq/retries")]
pub(crate) async fn propose_retry(
    state: web::Data<AppState>,
    session: StepUp,
    path: web::Path<String>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let ledger_id = super::ledger_id(&path)?;
    let session = session.0;
    session.require(OperatorScope::DlqRetry, ledger_id)?;
    let input: RetryRequest = super::parse_json(&body, "DLQ retry")?;
    let reason = checked_reason(&input.reason)?;
    let payment_ids = match (input.payment_ids, input.filter) {
        (Some(ids), None) => explicit_list(&state, ids)?,
        (None, Some(filter)) => filtered_list(&state, ledger_id, &filter).await?,
        _ => {
            return Err(ApiError::invalid(
                "name the payments to retry with either `payment_ids` or `filter`, not both \
                 and not neither",
            ))
        }
    };
    let proposal = Proposal {
        ledger_id,
        action: DlqAction::Retry,
        payment_ids,
        reason,
    };
    submit(&state, &session, proposal, input.dry_run, &request, &body).await
}

/// Proposes to ignore parked payments, with a reason code and a free-text reason.
#[post("/ledgers/{ledger_id}/dlq/ignores")]
pub(crate) async fn propose_ignore(
    state: web::Data<AppState>,
    session: StepUp,
    path: web::Path<String>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let ledger_id = super::ledger_id(&path)?;
    let session = session.0;
    session.require(OperatorScope::DlqIgnore, ledger_id)?;
    let input: IgnoreRequest = super::parse_json(&body, "DLQ ignore")?;
    let reason_code: IgnoreReason = input.reason_code.parse().map_err(ApiError::invalid)?;
    let reason = checked_reason(&input.reason)?;
    let proposal = Proposal {
        ledger_id,
        action: DlqAction::Ignore { reason_code },
        payment_ids: explicit_list(&state, input.payment_ids)?,
        reason,
    };
    submit(&state, &session, proposal, input.dry_run, &request, &body).await
}

/// A decision before it is checked against the store.
struct Proposal {
    ledger_id: Uuid,
    action: DlqAction,
    payment_ids: Vec<Uuid>,
    reason: String,
}

async fn submit(
    state: &AppState,
    session: &OperatorSession,
    proposal: Proposal,
    dry_run: bool,
    request: &HttpRequest,
    body: &[u8],
) -> Result<HttpResponse, ApiError> {
    let ledger_id = proposal.ledger_id;
    if dry_run {
        let now = state.clock.now_micros();
        let (book, _) = state.dlq_book(ledger_id).await?;
        check_parked_and_free(state, &book, ledger_id, &proposal.payment_ids, now).await?;
        return Ok(HttpResponse::Ok().json(json!({
            "dry_run": true,
            "action": proposal.action.kind(),
            "count": proposal.payment_ids.len(),
            "limit": state.config.dlq.max_bulk,
            "payment_ids": proposal.payment_ids,
        })));
    }
    commands::run(state, ledger_id, request, body, || async {
        let now = state.clock.now_micros();
        let (book, version) = state.dlq_book(ledger_id).await?;
        check_parked_and_free(state, &book, ledger_id, &proposal.payment_ids, now).await?;
        let decision_id = Uuid::now_v7();
        let (action, ids) = (proposal.action, &proposal.payment_ids);
        let proposed = DlqDecisionProposed {
            decision_id,
            action,
            payment_ids: ids.clone(),
            reason: proposal.reason.clone(),
            content_hash: decision_hash(ledger_id, decision_id, action, ids, &proposal.reason),
            expires_at_micros: now + seconds_to_micros(state.config.dlq.decision_ttl_seconds),
            auth: session.auth(),
        };
        let mut shown = DlqBook::default();
        shown.apply(
            0,
            &domain::events::DomainEvent::DlqDecisionProposed(proposed.clone()),
        );
        let body = shown
            .get(decision_id)
            .map(|decision| decision_json(decision, now))
            .unwrap_or(Value::Null);
        Ok(CommandDecision {
            status: StatusCode::ACCEPTED,
            body,
            writes: vec![dlq_write(
                version,
                draft(&proposed, &session.actor(), decision_id),
            )],
        })
    })
    .await
}

fn checked_reason(text: &str) -> Result<String, ApiError> {
    let reason = text.trim();
    if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
        return Err(ApiError::invalid(format!(
            "give a reason of 1 to {MAX_REASON_CHARS} characters; it is recorded with the \
             decision"
        )));
    }
    Ok(reason.to_owned())
}

/// Sorts an explicit list and checks it against the bulk limit.
fn explicit_list(state: &AppState, ids: Vec<Uuid>) -> Result<Vec<Uuid>, ApiError> {
    let ids = canonical_payment_ids(ids);
    if ids.is_empty() {
        return Err(ApiError::invalid(
            "payment_ids is empty; name at least one parked payment",
        ));
    }
    check_bulk_limit(state, ids.len() as u64)?;
    Ok(ids)
}

fn check_bulk_limit(state: &AppState, count: u64) -> Result<(), ApiError> {
    let limit = state.config.dlq.max_bulk;
    if count > u64::from(limit) {
        return Err(ApiError::rejected(
            "dlq_bulk_limit",
            format!(
                "the request names {count} parked payments and the limit for one decision is \
                 {limit} (dlq.max_bulk); split it into smaller decisions or narrow the filter"
            ),
        ));
    }
    Ok(())
}

/// Resolves a filter to the parked payments it matches in the read model. Each is checked
/// against the store again before anything is recorded.
async fn filtered_list(
    state: &AppState,
    ledger_id: Uuid,
    filter: &Filter,
) -> Result<Vec<Uuid>, ApiError> {
    if filter.last_error_kind.is_none()
        && filter.parked_from.is_none()
        && filter.parked_to.is_none()
    {
        return Err(ApiError::invalid(
            "the filter has no condition; give last_error_kind, parked_from or parked_to (there \
             is no action that retries every parked payment)",
        ));
    }
    let bound = |name: &'static str, text: &Option<String>| {
        text.as_deref()
            .map(|text| projections::parse_time_bound(name, text))
            .transpose()
            .map_err(|e| ApiError::invalid(e.to_string()))
    };
    let mut query = DeadLetterQuery {
        statuses: vec!["parked".to_owned()],
        last_error_kind: filter.last_error_kind.clone(),
        parked_from_micros: bound("parked_from", &filter.parked_from)?,
        parked_to_micros: bound("parked_to", &filter.parked_to)?,
        page: PageRequest::default(),
    };
    let models = &state.models;
    let count = models.count_dead_letters_matching(ledger_id, &query).await;
    check_bulk_limit(state, count.map_err(ApiError::internal)?)?;
    query.page.limit = Some(state.config.dlq.max_bulk);
    let page = models.dead_letters_matching(ledger_id, &query).await;
    let page = page.map_err(ApiError::internal)?;
    let ids = canonical_payment_ids(page.items.iter().map(|d| d.payment_id));
    if ids.is_empty() {
        return Err(ApiError::rejected(
            "dlq_filter_matches_nothing",
            "the filter matches no parked payment; list the queue at GET .../dlq to see what \
             is parked",
        ));
    }
    Ok(ids)
}

/// Checks in the store that every payment is parked and in no other open decision.
async fn check_parked_and_free(
    state: &AppState,
    book: &DlqBook,
    ledger_id: Uuid,
    payment_ids: &[Uuid],
    now_micros: i64,
) -> Result<(), ApiError> {
    for payment_id in payment_ids {
        let Some(parked_at) = state.parked_position(ledger_id, *payment_id).await? else {
            return Err(ApiError::rejected(
                "dlq_payment_not_parked",
                format!(
                    "payment {payment_id} is not parked in the dead-letter queue of ledger \
                     {ledger_id}; remove it from the list"
                ),
            ));
        };
        book.check_free(*payment_id, parked_at, now_micros)
            .map_err(|e| decision_error(&e))?;
    }
    Ok(())
}

fn decision_error(error: &DlqDecisionError) -> ApiError {
    match error {
        DlqDecisionError::NotFound { .. } => ApiError {
            code: error.code(),
            ..ApiError::not_found(error.to_string())
        },
        DlqDecisionError::NotPending { .. }
        | DlqDecisionError::Expired { .. }
        | DlqDecisionError::AlreadyDecided { .. } => {
            ApiError::duplicate(error.code(), error.to_string())
        }
        _ => ApiError::rejected(error.code(), error.to_string()),
    }
}

fn dlq_write(version: Option<u64>, event: domain::record::EventDraft) -> StreamWrite {
    StreamWrite {
        stream_id: DLQ_STREAM.to_owned(),
        expected: match version {
            Some(version) => ExpectedVersion::Exact(version),
            None => ExpectedVersion::NoStream,
        },
        events: vec![event],
    }
}

/// Parses the ledger and decision ids of a decision route and checks the operator's scope
/// on the ledger.
fn decision_target(
    session: &OperatorSession,
    path: &(String, String),
    scope: OperatorScope,
) -> Result<(Uuid, Uuid), ApiError> {
    let ledger_id = super::ledger_id(&path.0)?;
    session.require(scope, ledger_id)?;
    Ok((ledger_id, decision_id(&path.1)?))
}

/// Builds the command result of one decision step: its event on the DLQ stream at the
/// version the step was checked against, and a 200 with `body`.
fn decision_step<P: EventPayload>(
    version: Option<u64>,
    session: &OperatorSession,
    decision_id: Uuid,
    payload: &P,
    body: Value,
) -> CommandDecision {
    CommandDecision {
        status: StatusCode::OK,
        body,
        writes: vec![dlq_write(
            version,
            draft(payload, &session.actor(), decision_id),
        )],
    }
}

/// Returns the JSON form of a decision.
fn decision_json(decision: &Decision, now_micros: i64) -> Value {
    let status = match decision.status {
        DecisionStatus::Pending if now_micros >= decision.expires_at_micros => "expired",
        status => status.as_str(),
    };
    json!({
        "decision_id": decision.decision_id,
        "action": decision.action.kind(),
        "reason_code": decision.action.reason_code().map(IgnoreReason::as_str),
        "reason": decision.reason,
        "count": decision.payment_ids.len(),
        "payment_ids": decision.payment_ids,
        "content_hash": hex::encode(decision.content_hash),
        "proposer": decision.proposer,
        "approver": decision.approver,
        "status": status,
        "paused": decision.paused,
        "expires_at_micros": decision.expires_at_micros,
    })
}

fn decision_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text)
        .map_err(|_| ApiError::invalid(format!("decision id {text:?} is not a UUID")))
}

/// Returns the scope an operator needs to decide on `action`.
fn scope_of(action: DlqAction) -> OperatorScope {
    match action {
        DlqAction::Retry => OperatorScope::DlqRetry,
        DlqAction::Ignore { .. } => OperatorScope::DlqIgnore,
    }
}

/// Lists the DLQ decisions of a ledger, oldest first.
#[get("/ledgers/{ledger_id}/dlq-decisions")]
pub(crate) async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let ledger_id = super::ledger_id(&path)?;
    caller.require_on(Scope::DlqRead, ledger_id)?;
    state.store.head(ledger_id).await?;
    let (book, _) = state.dlq_book(ledger_id).await?;
    let now = state.clock.now_micros();
    let rows: Vec<Value> = book.iter().map(|d| decision_json(d, now)).collect();
    Ok(HttpResponse::Ok().json(json!({"decisions": rows})))
}

/// Approves a decision, named by its content hash; never by its proposer.
#[post("/ledgers/{ledger_id}/dlq-decisions/{decision_id}/approval")]
pub(crate) async fn approve(
    state: web::Data<AppState>,
    session: StepUp,
    path: web::Path<(String, String)>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let session = session.0;
    let (ledger_id, decision_id) = decision_target(&session, &path, OperatorScope::View)?;
    let input: Approval = super::parse_json(&body, "approval")?;
    let mut hash = [0u8; 32];
    hex::decode_to_slice(input.content_hash.trim(), &mut hash).map_err(|_| {
        ApiError::invalid("content_hash must be the 64 hex digits of the decision's content_hash")
    })?;

    commands::run(&state, ledger_id, &request, &body, || async {
        let now = state.clock.now_micros();
        let (book, version) = state.dlq_book(ledger_id).await?;
        let decision = book
            .check_approval(decision_id, session.operator.id, &hash, now)
            .map_err(|e| decision_error(&e))?;
        session.require(scope_of(decision.action), ledger_id)?;
        for payment_id in &decision.payment_ids {
            if state
                .parked_position(ledger_id, *payment_id)
                .await?
                .is_none()
            {
                return Err(ApiError::rejected(
                    "dlq_payment_not_parked",
                    format!("payment {payment_id} is no longer parked; reject this decision"),
                ));
            }
        }
        let approved = DlqDecisionApproved {
            decision_id,
            content_hash: hash,
            auth: session.auth(),
        };
        let body = json!({
            "decision_id": decision_id,
            "action": decision.action.kind(),
            "count": decision.payment_ids.len(),
            "status": "approved",
        });
        Ok(decision_step(
            version,
            &session,
            decision_id,
            &approved,
            body,
        ))
    })
    .await
}

/// Rejects a decision (an operator with its scope), or withdraws it (its proposer).
#[post("/ledgers/{ledger_id}/dlq-decisions/{decision_id}/rejection")]
pub(crate) async fn reject(
    state: web::Data<AppState>,
    session: StepUp,
    path: web::Path<(String, String)>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let session = session.0;
    let (ledger_id, decision_id) = decision_target(&session, &path, OperatorScope::View)?;
    let input: Reason = super::parse_json(&body, "rejection")?;
    let reason = checked_reason(&input.reason)?;

    commands::run(&state, ledger_id, &request, &body, || async {
        let now = state.clock.now_micros();
        let (book, version) = state.dlq_book(ledger_id).await?;
        let decision = book
            .open(decision_id, now)
            .map_err(|e| decision_error(&e))?;
        if decision.proposer != session.operator.id {
            session.require(scope_of(decision.action), ledger_id)?;
        }
        let rejected = DlqDecisionRejected {
            decision_id,
            reason: reason.clone(),
            auth: session.auth(),
        };
        let body = json!({"decision_id": decision_id, "status": "rejected"});
        Ok(decision_step(
            version,
            &session,
            decision_id,
            &rejected,
            body,
        ))
    })
    .await
}

/// Pauses the release of an approved retry; payments already released continue.
#[post("/ledgers/{ledger_id}/dlq-decisions/{decision_id}/pause")]
pub(crate) async fn pause(
    state: web::Data<AppState>,
    session: StepUp,
    path: web::Path<(String, String)>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let session = session.0;
    let (ledger_id, decision_id) = decision_target(&session, &path, OperatorScope::DlqRetry)?;
    let input: Reason = super::parse_json(&body, "pause")?;
    let reason = checked_reason(&input.reason)?;
    let event = |auth| DlqReleasePaused {
        decision_id,
        reason: reason.clone(),
        auth,
    };
    let change = ReleaseChange {
        ledger_id,
        decision_id,
        paused: true,
    };
    release_change(&state, &session, change, &request, &body, event).await
}

/// Resumes the release of an approved retry.
#[post("/ledgers/{ledger_id}/dlq-decisions/{decision_id}/resume")]
pub(crate) async fn resume(
    state: web::Data<AppState>,
    session: StepUp,
    path: web::Path<(String, String)>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let session = session.0;
    let (ledger_id, decision_id) = decision_target(&session, &path, OperatorScope::DlqRetry)?;
    let _: Resume = super::parse_json(&body, "resume")?;
    let event = |auth| DlqReleaseResumed { decision_id, auth };
    let change = ReleaseChange {
        ledger_id,
        decision_id,
        paused: false,
    };
    release_change(&state, &session, change, &request, &body, event).await
}

struct ReleaseChange {
    ledger_id: Uuid,
    decision_id: Uuid,
    paused: bool,
}

async fn release_change<P: EventPayload>(
    state: &AppState,
    session: &OperatorSession,
    change: ReleaseChange,
    request: &HttpRequest,
    body: &[u8],
    event: impl Fn(domain::operator_events::AuthContext) -> P,
) -> Result<HttpResponse, ApiError> {
    let ReleaseChange {
        ledger_id,
        decision_id,
        paused,
    } = change;
    let verb = if paused { "paused" } else { "resumed" };
    commands::run(state, ledger_id, request, body, || async {
        let (book, version) = state.dlq_book(ledger_id).await?;
        let decision = book
            .release(decision_id, verb)
            .map_err(|e| decision_error(&e))?;
        if decision.paused == paused {
            return Err(ApiError::duplicate(
                "dlq_release_unchanged",
                format!("the release of DLQ decision {decision_id} is already {verb}"),
            ));
        }
        let payload = event(session.auth());
        let body = json!({"decision_id": decision_id, "paused": paused});
        Ok(decision_step(version, session, decision_id, &payload, body))
    })
    .await
}
