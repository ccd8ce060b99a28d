//! Anomaly review: the queue of held payments, and a reviewer's release or rejection.
//!
//! A decision needs the `anomalies:review` scope (approvers and administrators) and a
//! fresh step-up. It is a `payment.reviewed` event on the payment's stream, appended at
//! the stream's exact version and caused by the flag it decides on, so two reviewers
//! cannot both decide and an auditor sees which explanations the reviewer was shown.

use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use domain::anomaly_events::{PaymentReviewed, ReviewDecision};
use domain::operators::OperatorScope;
use domain::payments::MAX_REASON_CHARS;
use eventstore_adapter::{ExpectedVersion, StreamWrite};
use projections::{AnomalyFilter, PageRequest, ReviewStatus};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::anomalies::{read_payment_stream, review_state, ReviewState};
use crate::auth::{Caller, Scope};
use crate::commands::{self, draft, Decision};
use crate::operators::{OperatorSession, StepUp};
use crate::problem::ApiError;
use crate::state::{payment_stream, AppState};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    rule: Option<String>,
    payee_id: Option<Uuid>,
    after: Option<u64>,
    limit: Option<u32>,
    min_position: Option<u64>,
    as_of: Option<String>,
}

/// Lists held payments in flag order, with their findings and any decision.
#[get("/ledgers/{ledger_id}/anomalies")]
pub(crate) async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let ledger_id = super::ledger_id(&path)?;
    caller.require_on(Scope::PaymentsRead, ledger_id)?;
    let status = (query.status.as_deref())
        .map(str::parse::<ReviewStatus>)
        .transpose()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    if let Some(rule) = &query.rule {
        if !domain::anomalies::RULES.contains(&rule.as_str()) {
            return Err(ApiError::invalid(format!(
                "rule {rule:?} is not an anomaly rule; use one of {}",
                domain::anomalies::RULES.join(", ")
            )));
        }
    }
    let models = super::replay::models_for(
        &state,
        ledger_id,
        query.as_of.as_deref(),
        query.min_position,
    )
    .await?;
    let filter = AnomalyFilter {
        status,
        rule: query.rule.clone(),
        payee_id: query.payee_id,
    };
    let page_request = PageRequest {
        after_position: query.after,
        limit: query.limit,
    };
    let page = models
        .anomalies(ledger_id, &filter, &page_request)
        .await
        .map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(page))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewBody {
    reason: String,
}

/// Releases a held payment for dispatch.
#[post("/ledgers/{ledger_id}/anomalies/{payment_id}/release")]
pub(crate) async fn release(
    state: web::Data<AppState>,
    session: StepUp,
    path: web::Path<(String, String)>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    decide(
        &state,
        &session.0,
        &path,
        &request,
        &body,
        ReviewDecision::Release,
    )
    .await
}

/// Rejects a held payment: it is never dispatched.
#[post("/ledgers/{ledger_id}/anomalies/{payment_id}/rejection")]
pub(crate) async fn reject(
    state: web::Data<AppState>,
    session: StepUp,
    path: web::Path<(String, String)>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    decide(
        &state,
        &session.0,
        &path,
        &request,
        &body,
        ReviewDecision::Reject,
    )
    .await
}

/// Refuses to let the operator who submitted a held payment release it: the hold exists
/// so that a second person looks. Rejecting one's own payment is allowed.
fn check_not_own_payment(
    session: &OperatorSession,
    events: &[domain::record::SealedEvent],
    payment_id: Uuid,
    decision: ReviewDecision,
) -> Result<(), ApiError> {
    let submitter = events.first().map(|event| &event.actor);
    let own = submitter.is_some_and(|actor| {
        actor.kind == domain::record::ActorKind::Operator
            && actor.id == session.operator.id.to_string()
    });
    if own && decision == ReviewDecision::Release {
        return Err(ApiError {
            code: "self_review",
            ..ApiError::forbidden(format!(
                "operator {} submitted payment {payment_id} and cannot release it from \
                 review; another reviewer must decide",
                session.operator.username
            ))
        });
    }
    Ok(())
}

/// Refuses to release a held payment whose payee left the allow-list while it waited
/// (removed, replaced by an approved change of account, or erased): releasing it would pay
/// an account the allow-list no longer vouches for. Returns a write that pins the
/// allow-list at the version checked, so a removal committed meanwhile fails the release.
async fn check_payee_still_listed(
    state: &AppState,
    ledger_id: Uuid,
    events: &[domain::record::SealedEvent],
    payment_id: Uuid,
) -> Result<StreamWrite, ApiError> {
    use domain::events::DomainEvent;
    let submitted = events.first().ok_or_else(|| {
        ApiError::internal(format!("payment {payment_id} has no submission event"))
    })?;
    let decoded = DomainEvent::decode(
        &submitted.event_type,
        submitted.schema_version,
        &submitted.payload,
    )
    .map_err(ApiError::internal)?;
    let payee_id = match decoded {
        DomainEvent::PaymentSubmitted(submitted) => submitted.payee_id,
        DomainEvent::PaymentSubmittedSealed(sealed) => sealed.payee_id,
        other => {
            return Err(ApiError::internal(format!(
                "payment {payment_id} starts with {other:?}, not a submission"
            )))
        }
    };
    let (allow_list, version) = state.allow_list(ledger_id).await?;
    if allow_list.get(payee_id).is_none() {
        return Err(ApiError::rejected(
            "payee_not_listed",
            format!(
                "payee {payee_id} left the allow-list after payment {payment_id} was held, so \
                 the payment cannot be released; reject it, and submit a new payment if the \
                 payee is listed again"
            ),
        ));
    }
    let expected = match version {
        Some(version) => ExpectedVersion::Exact(version),
        None => ExpectedVersion::NoStream,
    };
    Ok(StreamWrite {
        stream_id: crate::state::ALLOW_LIST_STREAM.to_owned(),
        expected,
        events: Vec::new(),
    })
}

async fn decide(
    state: &AppState,
    session: &OperatorSession,
    path: &(String, String),
    request: &HttpRequest,
    body: &[u8],
    decision: ReviewDecision,
) -> Result<HttpResponse, ApiError> {
    let ledger_id = super::ledger_id(&path.0)?;
    session.require(OperatorScope::AnomalyReview, ledger_id)?;
    let payment_id = Uuid::parse_str(&path.1)
        .map_err(|_| ApiError::invalid(format!("payment id {:?} is not a UUID", path.1)))?;
    let input: ReviewBody = super::parse_json(body, "review")?;
    let reason = check_reason(&input.reason)?;

    commands::run(state, ledger_id, request, body, || async {
        let events = read_payment_stream(&state.store, ledger_id, payment_id).await?;
        let Some(last) = events.last() else {
            return Err(ApiError::not_found(format!(
                "payment {payment_id} not found in ledger {ledger_id}"
            )));
        };
        let flag_event_id = match review_state(&events).map_err(ApiError::internal)? {
            ReviewState::Held { flag_event_id, .. } => flag_event_id,
            ReviewState::NotFlagged => {
                return Err(ApiError::duplicate(
                    "payment_not_held",
                    format!("payment {payment_id} was not held for review; nothing to decide"),
                ))
            }
            ReviewState::Decided(earlier) => {
                return Err(ApiError::duplicate(
                    "review_already_decided",
                    format!(
                        "payment {payment_id} was already decided ({}); a decision is final",
                        earlier.as_str()
                    ),
                ))
            }
        };
        check_not_own_payment(session, &events, payment_id, decision)?;
        let mut writes = Vec::with_capacity(2);
        if decision == ReviewDecision::Release {
            writes.push(check_payee_still_listed(state, ledger_id, &events, payment_id).await?);
        }
        let reviewed = PaymentReviewed {
            payment_id,
            flag_event_id,
            decision,
            reason: reason.clone(),
            auth: session.auth(),
        };
        let mut event = draft(&reviewed, &session.actor(), last.correlation_id);
        event.causation_id = Some(flag_event_id);
        let body = json!({
            "payment_id": payment_id,
            "decision": decision.as_str(),
            "flag_event_id": flag_event_id,
            "decision_event_id": event.event_id,
            "reason": reason,
        });
        writes.push(StreamWrite {
            stream_id: payment_stream(payment_id),
            expected: ExpectedVersion::Exact(last.stream_version),
            events: vec![event],
        });
        Ok(Decision {
            status: StatusCode::OK,
            body,
            writes,
        })
    })
    .await
}

fn check_reason(reason: &str) -> Result<String, ApiError> {
    let trimmed = reason.trim();
    if trimmed.is_empty() {
        return Err(ApiError::invalid(
            "reason is empty; say why the payment is released or rejected",
        ));
    }
    let chars = trimmed.chars().count();
    if chars > MAX_REASON_CHARS {
        return Err(ApiError::invalid(format!(
            "reason has {chars} characters; shorten it to at most {MAX_REASON_CHARS}"
        )));
    }
    Ok(trimmed.to_owned())
}

/// Returns the operator analytics of a ledger, folded from its events up to the head.
#[get("/ledgers/{ledger_id}/analytics")]
pub(crate) async fn analytics(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let ledger_id = super::ledger_id(&path)?;
    caller.require_on(Scope::AuditRead, ledger_id)?;
    state.store.head(ledger_id).await?;
    let report = (state.insights)
        .analytics(&state.store, &state.personal, ledger_id)
        .await?;
    Ok(HttpResponse::Ok().json(report))
}
