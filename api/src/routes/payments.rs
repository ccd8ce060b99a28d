//! Payments: single submissions, ABA batch files, status queries.

use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use domain::anomaly_events::PaymentFlagged;
use domain::events::{PaymentRejected, PaymentSource, PaymentSubmitted};
use domain::payments::{decide_submission, AmountMinor, PaymentRequest};
use domain::record::Actor;
use eventstore_adapter::{ExpectedVersion, StreamWrite};
use projections::{PageRequest, PaymentStatus};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::auth::{Caller, Scope};
use crate::commands::{self, draft, Decision};
use crate::problem::ApiError;
use crate::state::{payment_stream, AppState, ALLOW_LIST_STREAM};

/// Most detail records accepted in one ABA file.
pub const MAX_ABA_RECORDS: usize = 5_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitPayment {
    payee_id: Uuid,
    amount_minor: Value,
    currency: String,
    #[serde(default)]
    reference: String,
}

/// Submits one payment to an allow-listed payee.
///
/// A business-rule rejection is itself recorded (`payment.rejected`) and returned as a 422
/// problem, so a retry with the same key gets the same response.
#[post("/ledgers/{ledger_id}/payments")]
pub(crate) async fn submit(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let ledger_id = super::ledger_id(&path)?;
    caller.require_on(Scope::PaymentsSubmit, ledger_id)?;
    let input: SubmitPayment = super::parse_json(&body, "payment")?;
    let policy = state.payment_policy();
    let amount = AmountMinor::from_json(&input.amount_minor, policy.max_amount_minor)
        .map_err(|e| ApiError::rejected(e.code(), e.to_string()))?;
    let correlation_id = crate::request_id::correlation_id(&request);
    let actor = caller.actor();

    commands::run(&state, ledger_id, &request, &body, || async {
        let (allow_list, version) = state.allow_list(ledger_id).await?;
        let payment_id = Uuid::now_v7();
        let payment = PaymentRequest {
            payment_id,
            payee_id: input.payee_id,
            amount_minor: amount.get(),
            currency: input.currency.clone(),
            reference: input.reference.clone(),
            source: PaymentSource::Api,
        };
        let requested = payment.clone();
        let decision = decide_submission(&policy, &allow_list, payment, ledger_id);
        let mut decision = match decision {
            Ok(submitted) => {
                let at = policy.decided_at_micros;
                let flag = crate::anomalies::flag_for(&state, ledger_id, &submitted, at).await?;
                accepted(&submitted, flag.as_ref(), &actor, correlation_id)
            }
            Err(rejection) => rejected(
                &requested,
                rejection.code(),
                rejection.to_string(),
                &actor,
                correlation_id,
            ),
        };
        let now = state.clock.now_micros();
        let personal = &state.personal;
        let sealed = personal.seal_payments(ledger_id, &mut decision.writes, now);
        sealed.await.map_err(ApiError::internal)?;
        decision.writes.push(pin_allow_list(version));
        Ok(decision)
    })
    .await
}

/// A check-only write: the append commits only if the allow-list is still at the version
/// the decision read, so a payee removed meanwhile is never paid (the command is decided
/// again on a conflict).
fn pin_allow_list(version: Option<u64>) -> StreamWrite {
    let expected = match version {
        Some(version) => ExpectedVersion::Exact(version),
        None => ExpectedVersion::NoStream,
    };
    StreamWrite {
        stream_id: ALLOW_LIST_STREAM.to_owned(),
        expected,
        events: Vec::new(),
    }
}

/// Builds the append of an accepted payment. A flagged payment's `payment.flagged` event
/// follows its submission in the same append, caused by it, so the payment is never seen
/// without its hold.
fn accepted(
    submitted: &PaymentSubmitted,
    flag: Option<&PaymentFlagged>,
    actor: &Actor,
    correlation_id: Uuid,
) -> Decision {
    let mut body = json!({
        "payment_id": submitted.payment_id,
        "status": if flag.is_some() { "held_for_review" } else { "submitted" },
        "amount_minor": submitted.amount_minor,
        "currency": submitted.currency,
        "payee_id": submitted.payee_id,
        "bank_idempotency_key": submitted.bank_idempotency_key,
    });
    let submitted_event = draft(submitted, actor, correlation_id);
    let mut events = Vec::with_capacity(2);
    if let Some(flag) = flag {
        let findings: Vec<Value> = flag
            .findings
            .iter()
            .map(projections::finding_json)
            .collect();
        body["anomalies"] = Value::from(findings);
        let mut flagged = draft(flag, &Actor::system("anomaly-rules"), correlation_id);
        flagged.causation_id = Some(submitted_event.event_id);
        events.extend([submitted_event, flagged]);
    } else {
        events.push(submitted_event);
    }
    let write = StreamWrite {
        stream_id: payment_stream(submitted.payment_id),
        expected: ExpectedVersion::NoStream,
        events,
    };
    Decision {
        status: StatusCode::CREATED,
        body,
        writes: vec![write],
    }
}

fn rejected(
    requested: &PaymentRequest,
    code: &'static str,
    detail: String,
    actor: &Actor,
    correlation_id: Uuid,
) -> Decision {
    let payment_id = requested.payment_id;
    let problem = ApiError::rejected(code, detail.clone()).with("payment_id", json!(payment_id));
    let body: Value = serde_json::from_slice(&problem.body()).unwrap_or(Value::Null);
    let event = PaymentRejected {
        payment_id,
        payee_id: requested.payee_id,
        amount_minor: requested.amount_minor,
        currency: requested.currency.clone(),
        code: code.to_owned(),
        detail,
    };
    let write = StreamWrite {
        stream_id: payment_stream(payment_id),
        expected: ExpectedVersion::NoStream,
        events: vec![draft(&event, actor, correlation_id)],
    };
    Decision {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        body,
        writes: vec![write],
    }
}

/// Accepts an ABA (Cemtex direct entry) file: every detail record becomes a payment, all
/// in one atomic append, or the whole file is rejected with the line and field at fault.
#[post("/ledgers/{ledger_id}/payments/batches")]
pub(crate) async fn submit_batch(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let ledger_id = super::ledger_id(&path)?;
    caller.require_on(Scope::PaymentsSubmit, ledger_id)?;
    let file = domain::aba::parse(&body).map_err(|e| ApiError::aba_invalid(e.to_string()))?;
    if file.details.len() > MAX_ABA_RECORDS {
        return Err(ApiError::aba_invalid(format!(
            "the file has {} detail records; split it into files of at most {MAX_ABA_RECORDS}",
            file.details.len()
        )));
    }
    let correlation_id = crate::request_id::correlation_id(&request);
    let actor = caller.actor();

    commands::run_personal(&state, ledger_id, &request, &body, || async {
        let file_hash = *blake3::hash(&body).as_bytes();
        crate::aba_import::reject_duplicate(&state.store, ledger_id, &file_hash).await?;
        let (allow_list, version) = state.allow_list(ledger_id).await?;
        let policy = state.payment_policy();
        let batch = crate::aba_import::decide(&policy, &allow_list, &file, &body, ledger_id)?;
        let at = policy.decided_at_micros;
        let flags = crate::anomalies::flags_for(&state, ledger_id, batch.payments(), at).await?;
        let mut decision = batch.into_decision(&actor, correlation_id, &flags);
        let now = state.clock.now_micros();
        let personal = &state.personal;
        let sealed = personal.seal_payments(ledger_id, &mut decision.writes, now);
        sealed.await.map_err(ApiError::internal)?;
        decision.writes.push(pin_allow_list(version));
        Ok(decision)
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    batch_id: Option<Uuid>,
    after: Option<u64>,
    limit: Option<u32>,
    min_position: Option<u64>,
    as_of: Option<String>,
}

/// Lists payments, optionally by status or batch, with cursor pagination.
#[get("/ledgers/{ledger_id}/payments")]
pub(crate) async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let ledger_id = super::ledger_id(&path)?;
    caller.require_on(Scope::PaymentsRead, ledger_id)?;
    let models = super::replay::models_for(
        &state,
        ledger_id,
        query.as_of.as_deref(),
        query.min_position,
    )
    .await?;
    let page_request = PageRequest {
        after_position: query.after,
        limit: query.limit,
    };
    let page = match (&query.status, query.batch_id) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "filter by `status` or by `batch_id`, not both",
            ));
        }
        (Some(status), None) => {
            let status = status
                .parse::<PaymentStatus>()
                .map_err(|e| ApiError::invalid(e.to_string()))?;
            models
                .payments_by_status(ledger_id, status, &page_request)
                .await
        }
        (None, Some(batch_id)) => {
            models
                .payments_by_batch(ledger_id, batch_id, &page_request)
                .await
        }
        (None, None) => models.payments(ledger_id, &page_request).await,
    };
    let page = page.map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(page))
}

/// Returns one payment with its status history.
#[get("/ledgers/{ledger_id}/payments/{payment_id}")]
pub(crate) async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
    query: web::Query<super::ConsistencyQuery>,
) -> Result<HttpResponse, ApiError> {
    let ledger_id = super::ledger_id(&path.0)?;
    caller.require_on(Scope::PaymentsRead, ledger_id)?;
    let payment_id = Uuid::parse_str(&path.1)
        .map_err(|_| ApiError::invalid(format!("payment id {:?} is not a UUID", path.1)))?;
    super::wait_for(&state, ledger_id, query.min_position).await?;
    let payment = state
        .models
        .payment(ledger_id, payment_id)
        .await
        .map_err(ApiError::internal)?;
    match payment {
        Some(payment) => Ok(HttpResponse::Ok().json(payment)),
        None => Err(ApiError::not_found(format!(
            "payment {payment_id} not found in ledger {ledger_id}; if it was just submitted, \
             pass min_position from the submission response"
        ))),
    }
}
