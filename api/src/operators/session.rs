//! Operator sessions and the one place that decides whether a request may act as an
//! operator: [`PendingSession`], [`FullSession`] and [`StepUp`].
//!
//! A session token reads `fsess_<session id>_<secret>`, separate from API tokens. The
//! session is bound to its client by two things: the bearer secret (256 random bits,
//! stored only as a keyed BLAKE3 hash) and the User-Agent the session started with
//! (stored as a keyed hash); a request with another User-Agent is refused. Sessions end
//! after 15 minutes idle or 12 hours, whichever comes first, and can be revoked.
//!
//! Sensitive routes take [`StepUp`], which requires a second factor verified in this
//! session no longer than `mfa.step_up_max_age_seconds` ago (at most 300). Without one
//! the answer is 401 with an RFC 9470 challenge, and the client completes it at
//! `POST /v1/sessions/current/verification` and retries. API tokens never pass
//! [`StepUp`]: they are machines, not people.
//!
//! NOTE: key rotation has no route yet. When it is added it must take [`StepUp`]; the
//! OpenAPI route test fails until each new POST route is listed as sensitive or not.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;

use actix_web::http::{header, StatusCode};
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use base64::Engine as _;
use domain::operator_events::{AuthContext, ChallengeIssued};
use domain::operators::{OperatorScope, Role};
use domain::record::Actor;
use uuid::Uuid;

use super::record::{operator_actor, OperatorEvents};
use super::store::{OperatorRecord, SessionRecord};
use crate::problem::{ApiError, PROBLEM_JSON};
use crate::state::AppState;

const SESSION_SECRET_CONTEXT: &str = "folio operator session secret v1";
const SESSION_BINDING_CONTEXT: &str = "folio operator session binding v1";
/// Client binding of a session, as recorded in `operator.session_started`.
pub const SESSION_BINDING: &str = "bearer-secret+user-agent";

/// A new session's token and stored row.
pub struct NewSession {
    /// Token for the client, shown once.
    pub token: String,
    /// Row to store.
    pub record: SessionRecord,
}

/// Mints a session for an operator who passed their password.
///
/// # Errors
/// Fails if the random source fails.
pub fn mint_session(
    operator_id: Uuid,
    user_agent: &str,
    now_micros: i64,
) -> anyhow::Result<NewSession> {
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut secret)?;
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    let id = Uuid::now_v7();
    let record = SessionRecord {
        id,
        operator_id,
        secret_hash: blake3::derive_key(SESSION_SECRET_CONTEXT, secret.as_bytes()).to_vec(),
        binding: binding_hash(user_agent).to_vec(),
        created_at_micros: now_micros,
        last_seen_at_micros: now_micros,
        revoked_at_micros: None,
        factor: "password".to_owned(),
        factor_at_micros: now_micros,
        second_factor_at_micros: None,
    };
    Ok(NewSession {
        token: format!("fsess_{}_{secret}", id.simple()),
        record,
    })
}

fn binding_hash(user_agent: &str) -> [u8; 32] {
    blake3::derive_key(SESSION_BINDING_CONTEXT, user_agent.as_bytes())
}

/// Returns the request's User-Agent, empty when absent or not text.
pub fn user_agent(request: &HttpRequest) -> String {
    request
        .headers()
        .get(header::USER_AGENT)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// An authenticated operator session, whatever its second-factor state.
#[derive(Debug, Clone)]
pub struct OperatorSession {
    /// The operator.
    pub operator: OperatorRecord,
    /// The session.
    pub session: SessionRecord,
}

impl OperatorSession {
    /// Returns the scopes of the operator's roles.
    pub fn scopes(&self) -> BTreeSet<OperatorScope> {
        Role::scopes_of(&self.operator.roles)
    }

    /// Fails with 403 unless the operator works on `ledger_id` and has `scope`.
    ///
    /// # Errors
    /// `forbidden`, naming the scope or ledger.
    pub fn require(&self, scope: OperatorScope, ledger_id: Uuid) -> Result<(), ApiError> {
        if self.operator.ledger_id != ledger_id {
            return Err(ApiError::forbidden(format!(
                "operator {} works on ledger {}, not {ledger_id}",
                self.operator.username, self.operator.ledger_id
            )));
        }
        if !self.scopes().contains(&scope) {
            return Err(ApiError::forbidden(format!(
                "operator {} lacks scope {}; an administrator can grant a role that has it",
                self.operator.username,
                scope.as_str()
            )));
        }
        Ok(())
    }

    /// Returns the authentication context recorded in events.
    pub fn auth(&self) -> AuthContext {
        AuthContext {
            operator_id: self.operator.id,
            session_id: self.session.id,
            factor: self.session.factor.clone(),
            factor_verified_at_micros: self.session.factor_at_micros,
        }
    }

    /// Returns the actor of events this session causes.
    pub fn actor(&self) -> Actor {
        operator_actor(self.operator.id, Some(self.session.id))
    }
}

/// Any live session, including one that has not passed a second factor yet (sign-in
/// and enrolment routes only).
#[derive(Debug, Clone)]
pub struct PendingSession(pub OperatorSession);

/// A session that passed a second factor.
#[derive(Debug, Clone)]
pub struct FullSession(pub OperatorSession);

/// A session whose second factor is fresh: the gate of every sensitive route.
#[derive(Debug, Clone)]
pub struct StepUp(pub OperatorSession);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    Any,
    SecondFactor,
    FreshSecondFactor,
}

macro_rules! session_extractor {
    ($ty:ident, $need:expr) => {
        impl FromRequest for $ty {
            type Error = actix_web::Error;
            type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

            fn from_request(
                request: &HttpRequest,
                _: &mut actix_web::dev::Payload,
            ) -> Self::Future {
                let request = request.clone();
                Box::pin(async move { authenticate(&request, $need).await.map($ty) })
            }
        }
    };
}

session_extractor!(PendingSession, Need::Any);
session_extractor!(FullSession, Need::SecondFactor);
session_extractor!(StepUp, Need::FreshSecondFactor);

/// Authenticates an operator session that passed a second factor, for routes that API
/// tokens and operators share.
///
/// # Errors
/// As the [`FullSession`] extractor: 401 without a live session that passed a second factor.
pub async fn authenticate_person(
    request: &HttpRequest,
) -> Result<OperatorSession, actix_web::Error> {
    authenticate(request, Need::SecondFactor).await
}

async fn authenticate(
    request: &HttpRequest,
    need: Need,
) -> Result<OperatorSession, actix_web::Error> {
    let state = request
        .app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| ApiError::internal("application state not configured"))?;
    let max_age = state.mfa.config.step_up_max_age_seconds;
    let presented = bearer(request)?;
    if presented.starts_with("folio_") {
        // Every operator route needs a person, so the RFC 9470 challenge shows the client
        // how to become one, whatever the route needs beyond that.
        let detail = "this route needs a person: sign in as an operator and pass a second \
                      factor; API tokens cannot";
        return Err(step_up_required(max_age, detail));
    }
    let session = load_session(&state, request, &presented).await?;
    check_need(&state, session, need).await
}

fn bearer(request: &HttpRequest) -> Result<String, ApiError> {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| {
            ApiError::unauthenticated("missing Authorization header; send `Bearer <session token>`")
        })?;
    let token = header.strip_prefix("Bearer ").ok_or_else(|| {
        ApiError::unauthenticated("the Authorization header must use the Bearer scheme")
    })?;
    Ok(token.trim().to_owned())
}

fn split_session_token(token: &str) -> Option<(Uuid, &str)> {
    let rest = token.strip_prefix("fsess_")?;
    let (id, secret) = rest.split_once('_')?;
    let id_ok = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
    let secret_ok = !secret.is_empty() && secret.len() <= 64;
    if !(id_ok && secret_ok) {
        return None;
    }
    Some((Uuid::parse_str(id).ok()?, secret))
}

async fn load_session(
    state: &AppState,
    request: &HttpRequest,
    token: &str,
) -> Result<OperatorSession, ApiError> {
    let rejected = || {
        ApiError::unauthenticated(
            "the session is unknown, expired, revoked or used from another client; sign in again",
        )
    };
    let (id, secret) = split_session_token(token).ok_or_else(rejected)?;
    let mfa = &state.mfa;
    let session = mfa.store.session(id).await.map_err(ApiError::internal)?;
    let session = session.ok_or_else(rejected)?;

    // blake3::Hash compares in constant time.
    let presented = blake3::Hash::from(blake3::derive_key(
        SESSION_SECRET_CONTEXT,
        secret.as_bytes(),
    ));
    let stored: [u8; 32] = session
        .secret_hash
        .as_slice()
        .try_into()
        .map_err(|_| rejected())?;
    let binding: [u8; 32] = session
        .binding
        .as_slice()
        .try_into()
        .map_err(|_| rejected())?;
    let same_client =
        blake3::Hash::from(binding) == blake3::Hash::from(binding_hash(&user_agent(request)));
    if presented != blake3::Hash::from(stored) || !same_client {
        return Err(rejected());
    }

    let now = state.clock.now_micros();
    let idle_limit = seconds_to_micros(mfa.config.session_idle_seconds);
    let absolute_limit = seconds_to_micros(mfa.config.session_absolute_seconds);
    let expired = now - session.last_seen_at_micros > idle_limit
        || now - session.created_at_micros > absolute_limit;
    if session.revoked_at_micros.is_some() || expired {
        return Err(rejected());
    }
    mfa.store
        .touch_session(id, now)
        .await
        .map_err(ApiError::internal)?;

    let operator = mfa
        .store
        .get(session.operator_id)
        .await
        .map_err(ApiError::internal)?;
    let operator = operator.ok_or_else(rejected)?;
    Ok(OperatorSession { operator, session })
}

async fn check_need(
    state: &AppState,
    session: OperatorSession,
    need: Need,
) -> Result<OperatorSession, actix_web::Error> {
    let max_age = state.mfa.config.step_up_max_age_seconds;
    // A second factor counts only once enrolment is active: a code passed during an
    // enrolment that did not complete must not open the other routes.
    let verified_at = session
        .session
        .second_factor_at_micros
        .filter(|_| session.operator.totp_active);
    let fresh_since = state.clock.now_micros() - seconds_to_micros(max_age);
    let refusal = match (need, verified_at) {
        (Need::Any, _) => None,
        (Need::SecondFactor, Some(_)) => None,
        (Need::FreshSecondFactor, Some(at)) if at >= fresh_since => None,
        (Need::SecondFactor, None) | (Need::FreshSecondFactor, None) => Some((
            "sign_in",
            "this session has not passed a second factor; complete it at \
             POST /v1/sessions/current/verification",
        )),
        (Need::FreshSecondFactor, Some(_)) => Some((
            "step_up",
            "this command needs a second factor from the last few minutes; enter a current \
             code at POST /v1/sessions/current/verification and retry",
        )),
    };
    let Some((purpose, detail)) = refusal else {
        return Ok(session);
    };
    let issued = ChallengeIssued {
        operator_id: session.operator.id,
        session_id: session.session.id,
        purpose: purpose.to_owned(),
    };
    OperatorEvents::new(
        session.operator.ledger_id,
        session.operator.id,
        session.actor(),
    )
    .push(&issued)
    .append(state)
    .await?;
    Err(step_up_required(max_age, detail))
}

/// Converts configured seconds to microseconds; configuration keeps them far below overflow.
pub(crate) fn seconds_to_micros(seconds: u64) -> i64 {
    i64::try_from(seconds).unwrap_or(i64::MAX / 2_000_000) * 1_000_000
}

/// Builds the RFC 9470 response: 401 with a `WWW-Authenticate` challenge naming the
/// required `max_age`, and an RFC 9457 problem document with code `step_up_required`.
pub fn step_up_required(max_age_seconds: u64, detail: &str) -> actix_web::Error {
    let problem =
        ApiError::unauthenticated(detail).with("max_age", serde_json::Value::from(max_age_seconds));
    let problem = ApiError {
        code: "step_up_required",
        title: "Fresh second factor required",
        ..problem
    };
    let challenge = format!(
        "Bearer error=\"insufficient_user_authentication\", error_description=\"A second \
         factor verified within the last {max_age_seconds} seconds is required\", \
         max_age={max_age_seconds}"
    );
    let response = HttpResponse::build(StatusCode::UNAUTHORIZED)
        .insert_header((header::WWW_AUTHENTICATE, challenge))
        .insert_header((header::CONTENT_TYPE, PROBLEM_JSON))
        .body(problem.body());
    actix_web::error::InternalError::from_response(problem, response).into()
}
