//! The payee allow-list of a ledger. Changes are proposals that a second operator
//! approves (see `proposals.rs`); the list itself is read here.

use actix_web::{get, post, web, HttpRequest, HttpResponse};
use domain::events::PayeeAccount;
use domain::operators::{AllowListChange, OperatorScope};
use domain::payments::{AccountNumber, Bsb, Iban};
use projections::PageRequest;
use serde::Deserialize;
use uuid::Uuid;

use super::proposals::{self, NewRevision};
use crate::auth::{Caller, Scope};
use crate::commands::{self, Decision};
use crate::operators::{OperatorSession, StepUp};
use crate::problem::ApiError;
use crate::state::AppState;

/// Name and account of a payee, as sent to propose an addition or a change.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PayeeDetails {
    pub(crate) name: String,
    pub(crate) bsb: Option<String>,
    pub(crate) account: Option<String>,
    pub(crate) iban: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    include_removed: Option<bool>,
    after: Option<u64>,
    limit: Option<u32>,
    min_position: Option<u64>,
    as_of: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemovePayee {
    reason: String,
}

/// Proposes adding a payee. Nothing changes until a second operator approves the
/// proposal; look-alike names are flagged in the response.
#[post("/ledgers/{ledger_id}/payees")]
pub(crate) async fn add(
    state: web::Data<AppState>,
    session: StepUp,
    path: web::Path<String>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let ledger_id = super::ledger_id(&path)?;
    let session = session.0;
    session.require(OperatorScope::AllowListPropose, ledger_id)?;
    let input: PayeeDetails = super::parse_json(&body, "payee")?;
    let account = parse_account(&input)?;
    let payee_id = Uuid::now_v7();
    let proposal_id = Uuid::now_v7();

    commands::run_personal(&state, ledger_id, &request, &body, || async {
        let edit = AllowListChange::Add {
            payee_id,
            name: input.name.clone(),
            account: account.clone(),
        };
        first_revision(&state, &session, ledger_id, proposal_id, edit).await
    })
    .await
}

/// Proposes changing a payee's name or account. On approval the payee is replaced by a
/// new payee id with the new details, which then waits out the cooling-off period.
#[post("/ledgers/{ledger_id}/payees/{payee_id}/change")]
pub(crate) async fn change(
    state: web::Data<AppState>,
    session: StepUp,
    path: web::Path<(String, String)>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let ledger_id = super::ledger_id(&path.0)?;
    let session = session.0;
    session.require(OperatorScope::AllowListPropose, ledger_id)?;
    let payee_id = parse_payee_id(&path.1)?;
    let input: PayeeDetails = super::parse_json(&body, "payee change")?;
    let account = parse_account(&input)?;
    let new_payee_id = Uuid::now_v7();
    let proposal_id = Uuid::now_v7();

    commands::run_personal(&state, ledger_id, &request, &body, || async {
        let edit = AllowListChange::Change {
            payee_id,
            new_payee_id,
            name: input.name.clone(),
            account: account.clone(),
        };
        first_revision(&state, &session, ledger_id, proposal_id, edit).await
    })
    .await
}

/// Proposes removing a payee; it stays payable until a second operator approves.
#[post("/ledgers/{ledger_id}/payees/{payee_id}/removal")]
pub(crate) async fn remove(
    state: web::Data<AppState>,
    session: StepUp,
    path: web::Path<(String, String)>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let ledger_id = super::ledger_id(&path.0)?;
    let session = session.0;
    session.require(OperatorScope::AllowListPropose, ledger_id)?;
    let payee_id = parse_payee_id(&path.1)?;
    let input: RemovePayee = super::parse_json(&body, "removal")?;
    let proposal_id = Uuid::now_v7();

    commands::run(&state, ledger_id, &request, &body, || async {
        let edit = AllowListChange::Remove {
            payee_id,
            reason: input.reason.trim().to_owned(),
        };
        first_revision(&state, &session, ledger_id, proposal_id, edit).await
    })
    .await
}

/// Proposes erasing a removed payee's personal fields. On a second operator's approval
/// the payee's data keys are destroyed, and its name and account read as `[erased]`.
#[post("/ledgers/{ledger_id}/payees/{payee_id}/erasure")]
pub(crate) async fn erase(
    state: web::Data<AppState>,
    session: StepUp,
    path: web::Path<(String, String)>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let ledger_id = super::ledger_id(&path.0)?;
    let session = session.0;
    session.require(OperatorScope::AllowListPropose, ledger_id)?;
    let payee_id = parse_payee_id(&path.1)?;
    let input: RemovePayee = super::parse_json(&body, "erasure")?;
    let reason = input.reason.trim().to_owned();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(ApiError::invalid("reason must be 1 to 500 characters"));
    }
    let proposal_id = Uuid::now_v7();

    commands::run(&state, ledger_id, &request, &body, || async {
        super::proposals::erasable_keys(&state, ledger_id, payee_id).await?;
        let edit = AllowListChange::Erase {
            payee_id,
            reason: reason.clone(),
        };
        first_revision(&state, &session, ledger_id, proposal_id, edit).await
    })
    .await
}

/// Checks a new allow-list change against the allow-list as stored and decides its first
/// proposal revision.
async fn first_revision(
    state: &AppState,
    session: &OperatorSession,
    ledger_id: Uuid,
    proposal_id: Uuid,
    edit: AllowListChange,
) -> Result<Decision, ApiError> {
    let (allow_list, _, version) = state.allow_list_and_proposals(ledger_id).await?;
    let extra = proposals::check_change(&allow_list, &edit)?;
    let new = NewRevision {
        ledger_id,
        proposal_id,
        revision: 1,
        change: edit,
        version,
        extra,
    };
    proposals::propose(state, session, new).await
}

fn parse_payee_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| ApiError::invalid(format!("payee id {text:?} is not a UUID")))
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
    let models = super::replay::models_for(
        &state,
        ledger_id,
        query.as_of.as_deref(),
        query.min_position,
    )
    .await?;
    let page = PageRequest {
        after_position: query.after,
        limit: query.limit,
    };
    let include_removed = query.include_removed.unwrap_or(false);
    let payees = models
        .payees(ledger_id, include_removed, &page)
        .await
        .map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(payees))
}

/// Parses the account of a payee: `bsb` and `account`, or `iban` alone.
///
/// # Errors
/// 400 naming the invalid part.
pub(crate) fn parse_account(input: &PayeeDetails) -> Result<PayeeAccount, ApiError> {
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
