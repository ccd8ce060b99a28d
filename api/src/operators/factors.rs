//! Checking a second factor: the limits on failures, the TOTP compare-and-set, the
//! recovery-code consumption, and the events of each outcome.

use std::sync::atomic::Ordering;

use actix_web::http::StatusCode;
use domain::mfa::limits::{self, AttemptGate, FAILURE_WINDOW_SECONDS, LOCK_SECONDS};
use domain::mfa::{check_code_format, matching_step, RecoveryCode, TotpSecret};
use domain::operator_events::{
    AuthContext, ChallengeFailed, ChallengePassed, OperatorLocked, RecoveryCodeUsed, StepUpGranted,
};
use serde_json::json;
use uuid::Uuid;

use super::record::OperatorEvents;
use super::session::OperatorSession;
use super::totp_associated_data;
use crate::problem::ApiError;
use crate::state::AppState;

/// A second factor as presented.
pub enum SecondFactor<'a> {
    /// A six-digit TOTP code.
    Totp(&'a str),
    /// A recovery code.
    Recovery(&'a str),
}

impl SecondFactor<'_> {
    fn name(&self) -> &'static str {
        match self {
            SecondFactor::Totp(_) => "totp",
            SecondFactor::Recovery(_) => "recovery_code",
        }
    }
}

/// Reason a factor failed, as recorded in `operator.challenge_failed`.
enum Failure {
    Malformed(String),
    Mismatch,
    Replayed,
}

/// Checks a second factor for `session` and records the outcome. On success the
/// session's second factor is fresh and the returned context says so.
///
/// `purpose` is `sign_in`, `step_up` or `enrolment`.
///
/// # Errors
/// 429 `too_many_attempts` while a delay runs, 423 `operator_locked` while locked, 400
/// `otp_code_malformed` for a malformed code, 401 `second_factor_failed` otherwise.
pub async fn verify(
    state: &AppState,
    session: &OperatorSession,
    factor: SecondFactor<'_>,
    purpose: &str,
) -> Result<AuthContext, ApiError> {
    let operator = &session.operator;
    let now = state.clock.now_micros();
    check_gate(state, session, now, factor.name()).await?;

    let totp_step = match &factor {
        SecondFactor::Totp(code) => check_totp(state, session, code, now).await?,
        SecondFactor::Recovery(code) => check_recovery(state, operator.id, code, now).await?,
    };
    let totp_step = match totp_step {
        Ok(step) => step,
        Err(failure) => return Err(fail(state, session, factor.name(), failure, now).await),
    };

    let mfa = &state.mfa;
    mfa.store
        .record_second_factor(session.session.id, factor.name(), now)
        .await
        .map_err(ApiError::internal)?;
    let auth = AuthContext {
        operator_id: operator.id,
        session_id: session.session.id,
        factor: factor.name().to_owned(),
        factor_verified_at_micros: now,
    };
    record_pass(state, session, &auth, purpose, totp_step).await?;
    Ok(auth)
}

async fn record_pass(
    state: &AppState,
    session: &OperatorSession,
    auth: &AuthContext,
    purpose: &str,
    totp_step: Option<u64>,
) -> Result<(), ApiError> {
    crate::metrics::MFA.record_challenge("passed");
    let operator = &session.operator;
    let mut events = OperatorEvents::new(operator.ledger_id, operator.id, session.actor()).push(
        &ChallengePassed {
            auth: auth.clone(),
            purpose: purpose.to_owned(),
            totp_step,
        },
    );
    if auth.factor == "recovery_code" {
        let remaining = state
            .mfa
            .store
            .unused_recovery_codes(operator.id)
            .await
            .map_err(ApiError::internal)?;
        state
            .mfa
            .recovery_codes_used
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            operator = %operator.id,
            ledger = %operator.ledger_id,
            remaining,
            "recovery code used; the operator's administrators should confirm it was them"
        );
        events = events.push(&RecoveryCodeUsed {
            auth: auth.clone(),
            remaining,
        });
    }
    if purpose != "enrolment" {
        events = events.push(&StepUpGranted {
            auth: auth.clone(),
            max_age_seconds: u32::try_from(state.mfa.config.step_up_max_age_seconds)
                .unwrap_or(u32::MAX),
        });
    }
    events.append(state).await
}

async fn check_gate(
    state: &AppState,
    session: &OperatorSession,
    now: i64,
    factor: &str,
) -> Result<(), ApiError> {
    let operator = &session.operator;
    let window_start = now - FAILURE_WINDOW_SECONDS * 1_000_000;
    let (failures, last) = state
        .mfa
        .store
        .failures_since(operator.id, window_start)
        .await
        .map_err(ApiError::internal)?;
    let refusal = match limits::gate(now, operator.locked_until_micros, failures, last) {
        AttemptGate::Open => return Ok(()),
        AttemptGate::Wait {
            retry_after_seconds,
        } => ("wait", too_many_attempts(retry_after_seconds)),
        AttemptGate::Locked { until_micros } => ("locked", locked(until_micros)),
    };
    let failed = ChallengeFailed {
        operator_id: operator.id,
        session_id: session.session.id,
        factor: factor.to_owned(),
        reason: refusal.0.to_owned(),
        failures_in_window: failures,
    };
    OperatorEvents::new(operator.ledger_id, operator.id, session.actor())
        .push(&failed)
        .append(state)
        .await?;
    Err(refusal.1)
}

/// 429 `too_many_attempts`, naming the wait.
pub(crate) fn too_many_attempts(retry_after_seconds: i64) -> ApiError {
    let error = ApiError::unauthenticated(format!(
        "too many failed codes in the last 15 minutes; wait {retry_after_seconds} s before \
         the next attempt"
    ))
    .with("retry_after_seconds", json!(retry_after_seconds));
    ApiError {
        status: StatusCode::TOO_MANY_REQUESTS,
        code: "too_many_attempts",
        title: "Too many attempts",
        ..error
    }
}

/// 423 `operator_locked`, naming the end of the lock.
pub(crate) fn locked(until_micros: i64) -> ApiError {
    let error = ApiError::unauthenticated(format!(
        "the operator is locked after too many failed codes until {until_micros} \
         microseconds since the Unix epoch; an administrator can unlock earlier"
    ))
    .with("locked_until_micros", json!(until_micros));
    ApiError {
        status: StatusCode::LOCKED,
        code: "operator_locked",
        title: "Operator locked",
        ..error
    }
}

async fn check_totp(
    state: &AppState,
    session: &OperatorSession,
    code: &str,
    now: i64,
) -> Result<Result<Option<u64>, Failure>, ApiError> {
    let code = match check_code_format(code) {
        Ok(code) => code,
        Err(error) => return Ok(Err(Failure::Malformed(error.to_string()))),
    };
    let operator = &session.operator;
    let sealed = operator.totp_sealed.as_deref().ok_or_else(|| {
        ApiError::rejected(
            "mfa_not_enrolled",
            "this operator has no authenticator app enrolled; start at POST /v1/operators/me/totp",
        )
    })?;
    let secret = state
        .mfa
        .secrets
        .open(sealed, &totp_associated_data(operator.id))
        .map_err(ApiError::internal)?;
    let secret = TotpSecret::from_bytes(secret.to_vec()).map_err(ApiError::internal)?;
    let unix_seconds = u64::try_from(now / 1_000_000).unwrap_or(0);
    let last = u64::try_from(operator.last_step).ok();
    let Some(step) = matching_step(&secret, &code, unix_seconds, last) else {
        return Ok(Err(Failure::Mismatch));
    };
    let accepted = step;
    let step = i64::try_from(step).map_err(ApiError::internal)?;
    // The compare-and-set decides between concurrent requests carrying the same code.
    let won = state
        .mfa
        .store
        .accept_step(operator.id, step)
        .await
        .map_err(ApiError::internal)?;
    Ok(if won {
        Ok(Some(accepted))
    } else {
        Err(Failure::Replayed)
    })
}

async fn check_recovery(
    state: &AppState,
    operator_id: Uuid,
    text: &str,
    now: i64,
) -> Result<Result<Option<u64>, Failure>, ApiError> {
    let code = match RecoveryCode::parse(text) {
        Ok(code) => code,
        Err(error) => return Ok(Err(Failure::Malformed(error.to_string()))),
    };
    let mfa = &state.mfa;
    let stored = mfa
        .store
        .recovery_hash(operator_id, &code.id)
        .await
        .map_err(ApiError::internal)?;
    let Some(stored) = stored else {
        mfa.hasher.verify_decoy(code.secret());
        return Ok(Err(Failure::Mismatch));
    };
    if !mfa.hasher.verify(code.secret(), &stored) {
        return Ok(Err(Failure::Mismatch));
    }
    let won = mfa
        .store
        .consume_recovery_code(operator_id, &code.id, now)
        .await
        .map_err(ApiError::internal)?;
    Ok(if won {
        Ok(None)
    } else {
        Err(Failure::Replayed)
    })
}

/// Checks a recovery code of the current set without consuming it: the acknowledgement
/// at enrolment proves the operator kept the codes.
///
/// # Errors
/// Store failures.
pub async fn recovery_code_matches(
    state: &AppState,
    operator_id: Uuid,
    text: &str,
) -> Result<bool, ApiError> {
    let Ok(code) = RecoveryCode::parse(text) else {
        return Ok(false);
    };
    let stored = state
        .mfa
        .store
        .recovery_hash(operator_id, &code.id)
        .await
        .map_err(ApiError::internal)?;
    Ok(stored.is_some_and(|stored| state.mfa.hasher.verify(code.secret(), &stored)))
}

/// Records a failure (and a lock when it is one too many) and returns the error to send.
async fn fail(
    state: &AppState,
    session: &OperatorSession,
    factor: &str,
    failure: Failure,
    now: i64,
) -> ApiError {
    match record_failure(state, session, factor, &failure, now).await {
        Ok(()) => {}
        Err(error) => return error,
    }
    match failure {
        Failure::Malformed(detail) => ApiError {
            code: "otp_code_malformed",
            ..ApiError::invalid(detail)
        },
        Failure::Mismatch | Failure::Replayed => ApiError {
            code: "second_factor_failed",
            title: "Second factor failed",
            ..ApiError::unauthenticated(
                "the code is wrong, expired or already used; enter the current code from your \
                 authenticator app or an unused recovery code",
            )
        },
    }
}

async fn record_failure(
    state: &AppState,
    session: &OperatorSession,
    factor: &str,
    failure: &Failure,
    now: i64,
) -> Result<(), ApiError> {
    let operator = &session.operator;
    let (reason, counts) = match failure {
        // A malformed code is refused before any comparison and reveals nothing, so it
        // does not count towards the limits.
        Failure::Malformed(_) => ("malformed", false),
        Failure::Mismatch => ("mismatch", true),
        Failure::Replayed => ("replayed", true),
    };
    crate::metrics::MFA.record_challenge(reason);
    let window_start = now - FAILURE_WINDOW_SECONDS * 1_000_000;
    let store = &state.mfa.store;
    let (failures, _) = if counts {
        store.record_failure(operator.id, now, window_start).await
    } else {
        store.failures_since(operator.id, window_start).await
    }
    .map_err(ApiError::internal)?;

    let mut events = OperatorEvents::new(operator.ledger_id, operator.id, session.actor()).push(
        &ChallengeFailed {
            operator_id: operator.id,
            session_id: session.session.id,
            factor: factor.to_owned(),
            reason: reason.to_owned(),
            failures_in_window: failures,
        },
    );
    if counts
        && limits::locks_after(failures)
        && operator.locked_until_micros.is_none_or(|u| u <= now)
    {
        let until_micros = now + LOCK_SECONDS * 1_000_000;
        store
            .lock(operator.id, until_micros)
            .await
            .map_err(ApiError::internal)?;
        crate::metrics::MFA.record_lockout();
        tracing::warn!(operator = %operator.id, failures, "operator locked after failed codes");
        events = events.push(&OperatorLocked {
            operator_id: operator.id,
            until_micros,
            failures_in_window: failures,
        });
    }
    events.append(state).await
}
