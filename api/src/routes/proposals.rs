//! Allow-list proposals: listing, editing, approving and rejecting.
//!
//! Every change to the allow-list is a proposal first (see `payees.rs`). A second,
//! different operator with the approve scope and a fresh step-up approves it by naming
//! the content hash they reviewed; only then are the payee events appended, and a new
//! payee becomes payable after the configured cooling-off period.

use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use domain::events::{DomainEvent, PayeeAccount};
use domain::operator_events::{ChangeApproved, ChangeExpired, ChangeProposed, ChangeRejected};
use domain::operators::{content_hash, AllowListChange, ApprovalError, OperatorScope, Proposal};
use domain::payments::AllowList;
use domain::personal::SubjectErased;
use domain::record::EventDraft;
use eventstore_adapter::{ExpectedVersion, StreamWrite};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::commands::{self, draft, Decision};
use crate::operators::session::seconds_to_micros;
use crate::operators::{FullSession, OperatorSession, StepUp};
use crate::problem::ApiError;
use crate::state::{AppState, ALLOW_LIST_STREAM};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Approval {
    content_hash: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rejection {
    reason: String,
}

/// Body of a proposal edit: the new payee details, or the new removal reason.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Revision {
    name: Option<String>,
    bsb: Option<String>,
    account: Option<String>,
    iban: Option<String>,
    reason: Option<String>,
}

/// Returns the JSON form of a proposal.
pub(crate) fn proposal_json(proposal: &Proposal, now_micros: i64) -> Value {
    let status = match proposal.status {
        domain::operators::ProposalStatus::Pending if now_micros >= proposal.expires_at_micros => {
            "expired"
        }
        status => status.as_str(),
    };
    let edit = match &proposal.change {
        AllowListChange::Add {
            payee_id,
            name,
            account,
        } => {
            json!({"kind": "add", "payee_id": payee_id, "name": name, "account": account_json(account)})
        }
        AllowListChange::Change {
            payee_id,
            new_payee_id,
            name,
            account,
        } => json!({"kind": "change", "payee_id": payee_id, "new_payee_id": new_payee_id,
                    "name": name, "account": account_json(account)}),
        AllowListChange::Remove { payee_id, reason } => {
            json!({"kind": "remove", "payee_id": payee_id, "reason": reason})
        }
        AllowListChange::Erase { payee_id, reason } => {
            json!({"kind": "erase", "payee_id": payee_id, "reason": reason})
        }
    };
    json!({
        "proposal_id": proposal.proposal_id,
        "revision": proposal.revision,
        "content_hash": hex::encode(proposal.content_hash),
        "change": edit,
        "proposer": proposal.proposer,
        "expires_at_micros": proposal.expires_at_micros,
        "status": status,
        "approver": proposal.approver,
        "payable_from_micros": proposal.payable_from_micros,
    })
}

fn account_json(account: &PayeeAccount) -> Value {
    match account {
        PayeeAccount::Bsb { bsb, account } => json!({"bsb": bsb, "account": account}),
        PayeeAccount::Iban { iban } => json!({"iban": iban}),
        PayeeAccount::Unavailable { why, .. } => json!({"unavailable": why}),
    }
}

/// A new revision of a proposal, before it is recorded.
pub(crate) struct NewRevision {
    /// Ledger.
    pub(crate) ledger_id: Uuid,
    /// Proposal id.
    pub(crate) proposal_id: Uuid,
    /// Revision number, 1 for a new proposal.
    pub(crate) revision: u32,
    /// The change.
    pub(crate) change: AllowListChange,
    /// Allow-list stream version the decision read.
    pub(crate) version: Option<u64>,
    /// Extra response members, such as look-alike warnings.
    pub(crate) extra: Value,
}

/// Builds the append of a new revision of a proposal and its response.
///
/// # Errors
/// KMS or key-store failures while sealing the change.
pub(crate) async fn propose(
    state: &AppState,
    session: &OperatorSession,
    new: NewRevision,
) -> Result<Decision, ApiError> {
    let NewRevision {
        ledger_id,
        proposal_id,
        revision,
        change: edit,
        version,
        extra,
    } = new;
    let now = state.clock.now_micros();
    let ttl = seconds_to_micros(state.mfa.allow_list.proposal_ttl_seconds);
    let proposed = ChangeProposed {
        proposal_id,
        revision,
        content_hash: content_hash(ledger_id, proposal_id, revision, &edit),
        change: edit,
        expires_at_micros: now + ttl,
        auth: session.auth(),
    };
    let shown = Proposal {
        proposal_id,
        revision,
        change: proposed.change.clone(),
        content_hash: proposed.content_hash,
        authors: std::iter::once(session.operator.id).collect(),
        proposer: session.operator.id,
        expires_at_micros: proposed.expires_at_micros,
        status: domain::operators::ProposalStatus::Pending,
        approver: None,
        payable_from_micros: None,
    };
    let mut body = proposal_json(&shown, now);
    if let (Value::Object(map), Value::Object(more)) = (&mut body, extra) {
        map.extend(more);
    }
    let event = state
        .personal
        .proposal_draft(
            ledger_id,
            ALLOW_LIST_STREAM,
            &proposed,
            &session.actor(),
            now,
        )
        .await
        .map_err(ApiError::internal)?;
    Ok(Decision {
        status: StatusCode::ACCEPTED,
        body,
        writes: vec![allow_list_write(version, vec![event])],
    })
}

fn allow_list_write(version: Option<u64>, events: Vec<EventDraft>) -> StreamWrite {
    StreamWrite {
        stream_id: ALLOW_LIST_STREAM.to_owned(),
        expected: match version {
            Some(version) => ExpectedVersion::Exact(version),
            None => ExpectedVersion::NoStream,
        },
        events,
    }
}

fn approval_error(error: &ApprovalError) -> ApiError {
    match error {
        ApprovalError::NotFound { .. } => ApiError {
            code: error.code(),
            ..ApiError::not_found(error.to_string())
        },
        ApprovalError::NotPending { .. } | ApprovalError::Expired { .. } => {
            ApiError::duplicate(error.code(), error.to_string())
        }
        _ => ApiError::rejected(error.code(), error.to_string()),
    }
}

/// Turns a refusal into a decision; an expired proposal gets its `allowlist.change_expired`
/// event recorded with the refusal.
fn refusal(
    error: &ApprovalError,
    proposal: Option<&Proposal>,
    session: &OperatorSession,
    version: Option<u64>,
) -> Result<Decision, ApiError> {
    let (ApprovalError::Expired { proposal_id }, Some(proposal)) = (error, proposal) else {
        return Err(approval_error(error));
    };
    let problem = approval_error(error);
    let expired = ChangeExpired {
        proposal_id: *proposal_id,
        revision: proposal.revision,
        expired_at_micros: proposal.expires_at_micros,
    };
    let event = draft(&expired, &session.actor(), Uuid::now_v7());
    let body: Value = serde_json::from_slice(&problem.body()).map_err(ApiError::internal)?;
    Ok(Decision {
        status: problem.status,
        body,
        writes: vec![allow_list_write(version, vec![event])],
    })
}

fn proposal_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text)
        .map_err(|_| ApiError::invalid(format!("proposal id {text:?} is not a UUID")))
}

/// Lists the allow-list proposals of a ledger, oldest first.
#[get("/ledgers/{ledger_id}/proposals")]
pub(crate) async fn list(
    state: web::Data<AppState>,
    session: FullSession,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let ledger_id = super::ledger_id(&path)?;
    session.0.require(OperatorScope::View, ledger_id)?;
    state.store.head(ledger_id).await?;
    let (_, proposals, _) = state.allow_list_and_proposals(ledger_id).await?;
    let now = state.clock.now_micros();
    let rows: Vec<Value> = proposals.iter().map(|p| proposal_json(p, now)).collect();
    Ok(HttpResponse::Ok().json(json!({"proposals": rows})))
}

/// Approves the current revision of a proposal, named by its content hash.
#[post("/ledgers/{ledger_id}/proposals/{proposal_id}/approval")]
pub(crate) async fn approve(
    state: web::Data<AppState>,
    session: StepUp,
    path: web::Path<(String, String)>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let ledger_id = super::ledger_id(&path.0)?;
    let session = session.0;
    session.require(OperatorScope::AllowListApprove, ledger_id)?;
    let proposal_id = proposal_id(&path.1)?;
    let input: Approval = super::parse_json(&body, "approval")?;
    let mut hash = [0u8; 32];
    hex::decode_to_slice(input.content_hash.trim(), &mut hash).map_err(|_| {
        ApiError::invalid("content_hash must be the 64 hex digits of the proposal's content_hash")
    })?;

    let response = commands::run(&state, ledger_id, &request, &body, || async {
        let (allow_list, proposals, version) = state.allow_list_and_proposals(ledger_id).await?;
        let now = state.clock.now_micros();
        let checked = proposals.check_approval(proposal_id, session.operator.id, &hash, now);
        let proposal = match checked {
            Ok(proposal) => proposal,
            Err(error) => return refusal(&error, proposals.get(proposal_id), &session, version),
        };
        let mut events = Vec::new();
        for event in payee_events(&allow_list, &proposal.change)? {
            let draft = state
                .personal
                .draft(ledger_id, ALLOW_LIST_STREAM, &event, &session.actor(), now)
                .await
                .map_err(ApiError::internal)?;
            events.push(draft);
        }
        if let AllowListChange::Erase { payee_id, reason } = &proposal.change {
            let erased = erasure(&state, ledger_id, *payee_id, reason, &session).await?;
            events.push(draft(&erased, &session.actor(), Uuid::now_v7()));
        }
        let cooling = seconds_to_micros(state.mfa.allow_list.cooling_off_seconds);
        let payee_id = proposal.change.payee_added();
        let payable_from_micros = if payee_id.is_some() {
            now + cooling
        } else {
            now
        };
        let approved = ChangeApproved {
            proposal_id,
            revision: proposal.revision,
            content_hash: hash,
            payee_id,
            payable_from_micros,
            auth: session.auth(),
        };
        events.push(draft(&approved, &session.actor(), Uuid::now_v7()));
        let body = json!({
            "proposal_id": proposal_id,
            "revision": proposal.revision,
            "status": "approved",
            "payee_id": payee_id,
            // Only an added payee waits out the cooling-off period; a removal or an
            // erasure has nothing to pay from.
            "payable_from_micros": payee_id.map(|_| payable_from_micros),
        });
        Ok(Decision {
            status: StatusCode::OK,
            body,
            writes: vec![allow_list_write(version, events)],
        })
    })
    .await?;

    // Reading the allow-list applies a committed `subject.erased`, which destroys the
    // subject's keys (see `AppState::allow_list_and_proposals`).
    if response.status().is_success() {
        state.allow_list_and_proposals(ledger_id).await?;
    }
    Ok(response)
}

/// Returns the live data keys of a payee, which an erasure destroys.
///
/// # Errors
/// 422 `payee_not_erasable` when there are none. Either the payee was never added to
/// this ledger, or it was erased already, or it was added before its fields were sealed.
/// In the last case its name and account are in the ledger in the clear, and no key can
/// erase them.
pub(crate) async fn erasable_keys(
    state: &AppState,
    ledger_id: Uuid,
    payee_id: Uuid,
) -> Result<Vec<Uuid>, ApiError> {
    let subject = domain::personal::payee_subject(payee_id);
    let keys = (state.personal.keys().live_keys(ledger_id, &subject))
        .await
        .map_err(ApiError::internal)?;
    if keys.is_empty() {
        return Err(ApiError::rejected(
            "payee_not_erasable",
            format!(
                "payee {payee_id} has no data keys in ledger {ledger_id}: it was never added \
                 here, was erased already, or was added before payee fields were sealed (its \
                 fields are then in the ledger in the clear and cannot be erased); check the \
                 payee id against GET /v1/ledgers/{ledger_id}/payees?include_removed=true"
            ),
        ));
    }
    Ok(keys)
}

/// The `subject.erased` event of an approved erasure, naming the keys it destroys.
async fn erasure(
    state: &AppState,
    ledger_id: Uuid,
    payee_id: Uuid,
    reason: &str,
    session: &OperatorSession,
) -> Result<SubjectErased, ApiError> {
    let subject = domain::personal::payee_subject(payee_id);
    let data_key_ids = erasable_keys(state, ledger_id, payee_id).await?;
    Ok(SubjectErased {
        subject,
        data_key_ids,
        policy: format!("approved erasure: {reason}"),
        auth: Some(session.auth()),
    })
}

/// Checks a change against the allow-list as it is now and returns its payee events.
fn payee_events(
    allow_list: &AllowList,
    change: &AllowListChange,
) -> Result<Vec<DomainEvent>, ApiError> {
    let rule = |e: domain::payments::AllowListError| ApiError::rejected(e.code(), e.to_string());
    match change {
        AllowListChange::Add {
            payee_id,
            name,
            account,
        } => Ok(vec![DomainEvent::PayeeAdded(
            allow_list
                .propose_add(*payee_id, name, account)
                .map_err(rule)?,
        )]),
        AllowListChange::Remove { payee_id, reason } => Ok(vec![DomainEvent::PayeeRemoved(
            allow_list.remove(*payee_id, reason).map_err(rule)?,
        )]),
        // Only a payee no longer on the allow-list may be erased: a payable payee needs
        // its account.
        AllowListChange::Erase { payee_id, .. } if allow_list.get(*payee_id).is_some() => {
            Err(ApiError::rejected(
                "payee_still_active",
                format!("payee {payee_id} is on the allow-list; remove it before erasing it"),
            ))
        }
        AllowListChange::Erase { .. } => Ok(Vec::new()),
        AllowListChange::Change {
            payee_id,
            new_payee_id,
            name,
            account,
        } => {
            let removed = allow_list
                .remove(*payee_id, "replaced by an approved change")
                .map_err(rule)?;
            let mut without = allow_list.clone();
            without
                .apply(&DomainEvent::PayeeRemoved(removed.clone()))
                .map_err(ApiError::internal)?;
            let added = without
                .propose_add(*new_payee_id, name, account)
                .map_err(rule)?;
            Ok(vec![
                DomainEvent::PayeeRemoved(removed),
                DomainEvent::PayeeAdded(added),
            ])
        }
    }
}

/// Checks a proposed change against the current allow-list without keeping the events.
pub(crate) fn check_change(
    allow_list: &AllowList,
    change: &AllowListChange,
) -> Result<Value, ApiError> {
    let events = payee_events(allow_list, change)?;
    let lookalikes: Vec<Uuid> = events
        .iter()
        .filter_map(|event| match event {
            DomainEvent::PayeeAdded(added) => Some(added.lookalike_of.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    Ok(json!({"lookalike_of": lookalikes}))
}

/// Rejects a proposal (an approver), or withdraws it (one of its authors).
#[post("/ledgers/{ledger_id}/proposals/{proposal_id}/rejection")]
pub(crate) async fn reject(
    state: web::Data<AppState>,
    session: StepUp,
    path: web::Path<(String, String)>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let ledger_id = super::ledger_id(&path.0)?;
    let session = session.0;
    session.require(OperatorScope::View, ledger_id)?;
    let proposal_id = proposal_id(&path.1)?;
    let input: Rejection = super::parse_json(&body, "rejection")?;
    let reason = input.reason.trim().to_owned();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(ApiError::invalid("give a reason of 1 to 500 characters"));
    }

    commands::run(&state, ledger_id, &request, &body, || async {
        let (_, proposals, version) = state.allow_list_and_proposals(ledger_id).await?;
        let now = state.clock.now_micros();
        let proposal = match proposals.open(proposal_id, now) {
            Ok(proposal) => proposal,
            Err(error) => return refusal(&error, proposals.get(proposal_id), &session, version),
        };
        let is_author = proposal.authors.contains(&session.operator.id);
        if !is_author {
            session.require(OperatorScope::AllowListApprove, ledger_id)?;
        }
        let rejected = ChangeRejected {
            proposal_id,
            revision: proposal.revision,
            reason: reason.clone(),
            auth: session.auth(),
        };
        let event = draft(&rejected, &session.actor(), Uuid::now_v7());
        Ok(Decision {
            status: StatusCode::OK,
            body: json!({"proposal_id": proposal_id, "status": "rejected"}),
            writes: vec![allow_list_write(version, vec![event])],
        })
    })
    .await
}

/// Edits a pending proposal: a new revision with a new content hash, which needs its own
/// approval. The editor joins the operators who may not approve it.
#[post("/ledgers/{ledger_id}/proposals/{proposal_id}/revision")]
pub(crate) async fn revise(
    state: web::Data<AppState>,
    session: StepUp,
    path: web::Path<(String, String)>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let ledger_id = super::ledger_id(&path.0)?;
    let session = session.0;
    session.require(OperatorScope::AllowListPropose, ledger_id)?;
    let proposal_id = proposal_id(&path.1)?;
    let input: Revision = super::parse_json(&body, "revision")?;

    commands::run_personal(&state, ledger_id, &request, &body, || async {
        let (allow_list, proposals, version) = state.allow_list_and_proposals(ledger_id).await?;
        let now = state.clock.now_micros();
        let proposal = match proposals.open(proposal_id, now) {
            Ok(proposal) => proposal,
            Err(error) => return refusal(&error, proposals.get(proposal_id), &session, version),
        };
        let edit = revised_change(&proposal.change, &input)?;
        let extra = check_change(&allow_list, &edit)?;
        let new = NewRevision {
            ledger_id,
            proposal_id,
            revision: proposal.revision + 1,
            change: edit,
            version,
            extra,
        };
        propose(&state, &session, new).await
    })
    .await
}

fn revised_change(
    current: &AllowListChange,
    input: &Revision,
) -> Result<AllowListChange, ApiError> {
    match current {
        AllowListChange::Remove { payee_id, .. } => {
            let reason = input
                .reason
                .clone()
                .ok_or_else(|| ApiError::invalid("a removal proposal is edited with `reason`"))?;
            Ok(AllowListChange::Remove {
                payee_id: *payee_id,
                reason,
            })
        }
        AllowListChange::Erase { payee_id, .. } => {
            let reason = input
                .reason
                .clone()
                .ok_or_else(|| ApiError::invalid("an erasure proposal is edited with `reason`"))?;
            Ok(AllowListChange::Erase {
                payee_id: *payee_id,
                reason,
            })
        }
        AllowListChange::Add { payee_id, .. }
        | AllowListChange::Change {
            new_payee_id: payee_id,
            ..
        } => {
            let details = super::payees::PayeeDetails {
                name: input.name.clone().unwrap_or_default(),
                bsb: input.bsb.clone(),
                account: input.account.clone(),
                iban: input.iban.clone(),
            };
            let account = super::payees::parse_account(&details)?;
            let name = details.name;
            Ok(match current {
                AllowListChange::Change { payee_id: old, .. } => AllowListChange::Change {
                    payee_id: *old,
                    new_payee_id: *payee_id,
                    name,
                    account,
                },
                _ => AllowListChange::Add {
                    payee_id: *payee_id,
                    name,
                    account,
                },
            })
        }
    }
}
