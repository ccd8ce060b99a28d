//! Operator sessions: sign in with a password, pass a second factor, sign out.
//!
//! These routes take no `Idempotency-Key`: a sign-in or a code must never be answered
//! from a stored response, and each attempt is itself recorded.

use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use domain::mfa::limits::{self, AttemptGate, FAILURE_WINDOW_SECONDS, LOCK_SECONDS};
use domain::operator_events::{
    ChallengeFailed, ChallengeIssued, OperatorCreated, OperatorLocked, SessionRevoked,
    SessionStarted,
};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::operators::factors::{self, SecondFactor};
use crate::operators::record::{operator_actor, OperatorEvents};
use crate::operators::session::{mint_session, user_agent, SESSION_BINDING};
use crate::operators::{OperatorRecord, PendingSession};
use crate::problem::ApiError;
use crate::state::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    ledger_id: Uuid,
    username: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Verification {
    totp_code: Option<String>,
    recovery_code: Option<String>,
}

fn sign_in_failed() -> ApiError {
    ApiError {
        code: "sign_in_failed",
        ..ApiError::unauthenticated(
            "the ledger, user name or password is wrong; check them and try again",
        )
    }
}

/// Signs an operator in with their password and returns a session token. The session
/// can only enrol or pass a second factor until one passes.
#[post("/sessions")]
pub(crate) async fn sign_in(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let input: SignIn = super::parse_json(&body, "sign-in")?;
    let mfa = &state.mfa;
    let operator = mfa
        .store
        .by_name(input.ledger_id, &input.username)
        .await
        .map_err(ApiError::internal)?;
    let Some(operator) = operator else {
        // Limited as an operator's failures are, so the responses do not tell which
        // names exist.
        let now = state.clock.now_micros();
        match mfa
            .unknown_names
            .gate(input.ledger_id, &input.username, now)
        {
            AttemptGate::Open => {}
            AttemptGate::Wait {
                retry_after_seconds,
            } => return Err(factors::too_many_attempts(retry_after_seconds)),
            AttemptGate::Locked { until_micros } => return Err(factors::locked(until_micros)),
        }
        mfa.hasher.verify_decoy(&input.password);
        mfa.unknown_names
            .record_failure(input.ledger_id, &input.username, now);
        return Err(sign_in_failed());
    };
    check_sign_in_gate(&state, &operator).await?;
    if !mfa.hasher.verify(&input.password, &operator.password_hash) {
        record_password_failure(&state, &operator).await?;
        return Err(sign_in_failed());
    }
    record_bootstrap_creation(&state, &operator).await?;

    let now = state.clock.now_micros();
    let minted =
        mint_session(operator.id, &user_agent(&request), now).map_err(ApiError::internal)?;
    mfa.store
        .create_session(&minted.record)
        .await
        .map_err(ApiError::internal)?;
    let session_id = minted.record.id;
    let next = if operator.totp_active {
        "verify"
    } else {
        "enrol"
    };
    let started = SessionStarted {
        auth: domain::operator_events::AuthContext {
            operator_id: operator.id,
            session_id,
            factor: "password".to_owned(),
            factor_verified_at_micros: now,
        },
        binding: SESSION_BINDING.to_owned(),
    };
    let issued = ChallengeIssued {
        operator_id: operator.id,
        session_id,
        purpose: if operator.totp_active {
            "sign_in"
        } else {
            "enrolment"
        }
        .to_owned(),
    };
    OperatorEvents::new(
        operator.ledger_id,
        operator.id,
        operator_actor(operator.id, Some(session_id)),
    )
    .push(&started)
    .push(&issued)
    .append(&state)
    .await?;
    let body = json!({
        "session_token": minted.token,
        "session_id": session_id,
        "operator_id": operator.id,
        "next": next,
    });
    Ok(HttpResponse::build(StatusCode::CREATED).json(body))
}

/// Records `operator.created` for an operator the command-line bootstrap created, at
/// their first sign-in (the bootstrap runs without the event store).
async fn record_bootstrap_creation(
    state: &AppState,
    operator: &OperatorRecord,
) -> Result<(), ApiError> {
    if operator.created_recorded {
        return Ok(());
    }
    let created = OperatorCreated {
        operator_id: operator.id,
        username: operator.username.clone(),
        roles: operator
            .roles
            .iter()
            .map(|r| r.as_str().to_owned())
            .collect(),
        created_by: None,
    };
    OperatorEvents::new(
        operator.ledger_id,
        operator.id,
        domain::record::Actor::system("operator-bootstrap"),
    )
    .push(&created)
    .append(state)
    .await?;
    state
        .mfa
        .store
        .mark_created_recorded(operator.id)
        .await
        .map_err(ApiError::internal)?;
    Ok(())
}

/// Refuses a sign-in while the operator is locked or must wait after failures; wrong
/// passwords count towards the same limits as wrong codes.
async fn check_sign_in_gate(state: &AppState, operator: &OperatorRecord) -> Result<(), ApiError> {
    let now = state.clock.now_micros();
    let window_start = now - FAILURE_WINDOW_SECONDS * 1_000_000;
    let (failures, last) = state
        .mfa
        .store
        .failures_since(operator.id, window_start)
        .await
        .map_err(ApiError::internal)?;
    match limits::gate(now, operator.locked_until_micros, failures, last) {
        AttemptGate::Open => Ok(()),
        AttemptGate::Wait {
            retry_after_seconds,
        } => Err(factors::too_many_attempts(retry_after_seconds)),
        AttemptGate::Locked { until_micros } => Err(factors::locked(until_micros)),
    }
}

async fn record_password_failure(
    state: &AppState,
    operator: &OperatorRecord,
) -> Result<(), ApiError> {
    let now = state.clock.now_micros();
    let window_start = now - FAILURE_WINDOW_SECONDS * 1_000_000;
    let store = &state.mfa.store;
    let (failures, _) = store
        .record_failure(operator.id, now, window_start)
        .await
        .map_err(ApiError::internal)?;
    let failed = ChallengeFailed {
        operator_id: operator.id,
        session_id: Uuid::nil(),
        factor: "password".to_owned(),
        reason: "mismatch".to_owned(),
        failures_in_window: failures,
    };
    let actor = operator_actor(operator.id, None);
    let mut events = OperatorEvents::new(operator.ledger_id, operator.id, actor).push(&failed);
    if limits::locks_after(failures) {
        let until_micros = now + LOCK_SECONDS * 1_000_000;
        store
            .lock(operator.id, until_micros)
            .await
            .map_err(ApiError::internal)?;
        tracing::warn!(operator = %operator.id, failures, "operator locked after failed sign-ins");
        events = events.push(&OperatorLocked {
            operator_id: operator.id,
            until_micros,
            failures_in_window: failures,
        });
    }
    events.append(state).await
}

/// Passes a second factor in the current session: completes sign-in, or refreshes the
/// step-up that sensitive commands need.
#[post("/sessions/current/verification")]
pub(crate) async fn verify(
    state: web::Data<AppState>,
    session: PendingSession,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let input: Verification = super::parse_json(&body, "verification")?;
    let session = session.0;
    if !session.operator.totp_active {
        return Err(ApiError::rejected(
            "mfa_not_enrolled",
            "enrol an authenticator app first: POST /v1/operators/me/totp, then \
             /v1/operators/me/recovery-codes and /v1/operators/me/totp/activation",
        ));
    }
    let factor = match (&input.totp_code, &input.recovery_code) {
        (Some(code), None) => SecondFactor::Totp(code),
        (None, Some(code)) => SecondFactor::Recovery(code),
        _ => {
            return Err(ApiError::invalid(
                "give exactly one of `totp_code` and `recovery_code`",
            ))
        }
    };
    let purpose = if session.session.second_factor_at_micros.is_some() {
        "step_up"
    } else {
        "sign_in"
    };
    let auth = factors::verify(&state, &session, factor, purpose).await?;
    let max_age = state.mfa.config.step_up_max_age_seconds;
    let body = json!({
        "session_id": auth.session_id,
        "factor": auth.factor,
        "verified_at_micros": auth.factor_verified_at_micros,
        "step_up_valid_for_seconds": max_age,
    });
    Ok(HttpResponse::Ok().json(body))
}

/// Describes the current session.
#[get("/sessions/current")]
pub(crate) async fn current(
    state: web::Data<AppState>,
    session: PendingSession,
) -> Result<HttpResponse, ApiError> {
    let session = session.0;
    let scopes: Vec<&str> = session.scopes().iter().map(|s| s.as_str()).collect();
    let max_age =
        crate::operators::session::seconds_to_micros(state.mfa.config.step_up_max_age_seconds);
    let now = state.clock.now_micros();
    let step_up_fresh = session
        .session
        .second_factor_at_micros
        .is_some_and(|at| at >= now - max_age);
    let body = json!({
        "session_id": session.session.id,
        "operator_id": session.operator.id,
        "ledger_id": session.operator.ledger_id,
        "username": session.operator.username,
        "scopes": scopes,
        "enrolled": session.operator.totp_active,
        "second_factor_at_micros": session.session.second_factor_at_micros,
        "step_up_fresh": step_up_fresh,
    });
    Ok(HttpResponse::Ok().json(body))
}

/// Signs out: the session stops working at once.
#[post("/sessions/current/revocation")]
pub(crate) async fn revoke(
    state: web::Data<AppState>,
    session: PendingSession,
) -> Result<HttpResponse, ApiError> {
    let session = session.0;
    let now = state.clock.now_micros();
    state
        .mfa
        .store
        .revoke_session(session.session.id, now)
        .await
        .map_err(ApiError::internal)?;
    let revoked = SessionRevoked {
        operator_id: session.operator.id,
        session_id: session.session.id,
        reason: "sign_out".to_owned(),
    };
    OperatorEvents::new(
        session.operator.ledger_id,
        session.operator.id,
        session.actor(),
    )
    .push(&revoked)
    .append(&state)
    .await?;
    Ok(HttpResponse::Ok().json(json!({"session_id": session.session.id, "revoked": true})))
}
