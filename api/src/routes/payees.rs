//! The payee allow-list of a ledger.

use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use domain::events::PayeeAccount;
use domain::payments::{AccountNumber, Bsb, Iban};
use eventstore_adapter::{ExpectedVersion, StreamWrite};
use projections::PageRequest;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::auth::{Caller, Scope};
use crate::commands::{self, draft, Decision};
use crate::problem::ApiError;
use crate::state::{AppState, ALLOW_LIST_STREAM};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddPayee {
    name: String,
    bsb: Option<String>,
    account: Option<String>,
    iban: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    include_removed: Option<bool>,
    after: Option<u64>,
    limit: Option<u32>,
    min_position: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemovePayee {
    reason: String,
}

/// Adds a payee to the allow-list; look-alike names are flagged in the response.
#[post("/ledgers/{ledger_id}/payees")]
pub(crate) async fn add(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let ledger_id = super::ledger_id(&path)?;
    caller.require_on(Scope::PayeesWrite, ledger_id)?;
    let input: AddPayee = super::parse_json(&body, "payee")?;
    let account = parse_account(&input)?;
    let correlation_id = crate::request_id::correlation_id(&request);

    commands::run(&state, ledger_id, &request, &body, || async {
        let (allow_list, version) = state.allow_list(ledger_id).await?;
        let payee_id = Uuid::now_v7();
        let added = allow_list
            .propose_add(payee_id, &input.name, &account)
            .map_err(|e| ApiError::rejected(e.code(), e.to_string()))?;
        let body = json!({
            "payee_id": payee_id,
            "name": added.name,
            "normalized_name": added.normalized_name,
            "lookalike_of": added.lookalike_of,
        });
        let write = StreamWrite {
            stream_id: ALLOW_LIST_STREAM.to_owned(),
            expected: expected(version),
            events: vec![draft(&added, &caller.actor(), correlation_id)],
        };
        Ok(Decision {
            status: StatusCode::CREATED,
            body,
            writes: vec![write],
        })
    })
    .await
}

/// Removes a payee from the allow-list.
#[post("/ledgers/{ledger_id}/payees/{payee_id}/removal")]
pub(crate) async fn remove(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let ledger_id = super::ledger_id(&path.0)?;
    caller.require_on(Scope::PayeesWrite, ledger_id)?;
    let payee_id = Uuid::parse_str(&path.1)
        .map_err(|_| ApiError::invalid(format!("payee id {:?} is not a UUID", path.1)))?;
    let input: RemovePayee = super::parse_json(&body, "removal")?;
    let correlation_id = crate::request_id::correlation_id(&request);

    commands::run(&state, ledger_id, &request, &body, || async {
        let (allow_list, version) = state.allow_list(ledger_id).await?;
        let removed = allow_list
            .remove(payee_id, &input.reason)
            .map_err(|e| ApiError::rejected(e.code(), e.to_string()))?;
        let write = StreamWrite {
            stream_id: ALLOW_LIST_STREAM.to_owned(),
            expected: expected(version),
            events: vec![draft(&removed, &caller.actor(), correlation_id)],
        };
        let body = json!({"payee_id": payee_id, "removed": true});
        Ok(Decision {
            status: StatusCode::OK,
            body,
            writes: vec![write],
        })
    })
    .await
}

/// Lists the allow-list from the read model.
#[get("/ledgers/{ledger_id}/payees")]
pub(crate) async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let ledger_id = super::ledger_id(&path)?;
    caller.require_on(Scope::PayeesRead, ledger_id)?;
    super::wait_for(&state, ledger_id, query.min_position).await?;
    let page = PageRequest {
        after_position: query.after,
        limit: query.limit,
    };
    let include_removed = query.include_removed.unwrap_or(false);
    let payees = state
        .models
        .payees(ledger_id, include_removed, &page)
        .await
        .map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(payees))
}

fn expected(version: Option<u64>) -> ExpectedVersion {
    match version {
        Some(version) => ExpectedVersion::Exact(version),
        None => ExpectedVersion::NoStream,
    }
}

fn parse_account(input: &AddPayee) -> Result<PayeeAccount, ApiError> {
    match (&input.bsb, &input.account, &input.iban) {
        (Some(bsb), Some(account), None) => {
            let bsb = Bsb::parse(bsb).map_err(|e| ApiError::invalid(e.to_string()))?;
            let account =
                AccountNumber::parse(account).map_err(|e| ApiError::invalid(e.to_string()))?;
            Ok(PayeeAccount::Bsb {
                bsb: bsb.digits().to_owned(),
                account: account.as_str().to_owned(),
            })
        }
        (None, None, Some(iban)) => {
            let iban = Iban::parse(iban).map_err(|e| ApiError::invalid(e.to_string()))?;
            Ok(PayeeAccount::Iban {
                iban: iban.electronic().to_owned(),
            })
        }
        _ => Err(ApiError::invalid(
            "give `bsb` and `account` for an Australian account, or `iban` alone; \
             this request has neither, half of one, or both",
        )),
    }
}
