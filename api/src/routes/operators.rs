//! Operators: enrolment of the second factor, recovery codes, and administration
//! (creating operators, releasing locks, resetting a second factor with two
//! administrators).

use actix_web::http::{header, StatusCode};
use actix_web::{get, post, web, HttpResponse};
use domain::mfa::recovery::{self, CODES_PER_SET};
use domain::mfa::{otpauth_uri, TotpSecret};
use domain::operator_events::{
    MfaEnrolled, MfaEnrolmentStarted, MfaReset, MfaResetProposed, OperatorCreated,
    OperatorUnlocked, RecoveryCodesAcknowledged, RecoveryCodesIssued, SessionRevoked,
};
use domain::operators::{OperatorScope, Role};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::operators::factors::{self, SecondFactor};
use crate::operators::record::OperatorEvents;
use crate::operators::{totp_associated_data, OperatorRecord, PendingSession, StepUp};
use crate::operators::{FullSession, OperatorSession};
use crate::problem::ApiError;
use crate::state::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Activation {
    totp_code: String,
    recovery_code: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateOperator {
    username: String,
    password: String,
    roles: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetRequest {
    reason: String,
}

/// Starts enrolment of an authenticator app: returns the secret once, as base32, as an
/// `otpauth://` URI and as a QR code in SVG. Starting again replaces a pending secret.
#[post("/operators/me/totp")]
pub(crate) async fn enrol_totp(
    state: web::Data<AppState>,
    session: PendingSession,
) -> Result<HttpResponse, ApiError> {
    let session = session.0;
    let operator = &session.operator;
    let secret = TotpSecret::generate().map_err(ApiError::internal)?;
    let sealed = state
        .mfa
        .secrets
        .seal(secret.as_bytes(), &totp_associated_data(operator.id))
        .map_err(ApiError::internal)?;
    let stored = state
        .mfa
        .store
        .set_pending_totp(operator.id, &sealed)
        .await
        .map_err(ApiError::internal)?;
    if !stored {
        return Err(already_enrolled());
    }
    OperatorEvents::new(operator.ledger_id, operator.id, session.actor())
        .push(&MfaEnrolmentStarted {
            auth: session.auth(),
        })
        .append(&state)
        .await?;

    let uri = otpauth_uri(&secret, &state.mfa.config.issuer, &operator.username);
    let svg = qrcode::QrCode::new(uri.as_bytes())
        .map_err(ApiError::internal)?
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .build();
    let body = json!({
        "secret_base32": secret.to_base32().as_str(),
        "otpauth_uri": uri.as_str(),
        "qr_svg": svg,
        "next": "download the recovery codes at POST /v1/operators/me/recovery-codes",
    });
    Ok(no_store(HttpResponse::Created()).json(body))
}

fn already_enrolled() -> ApiError {
    ApiError::duplicate(
        "mfa_already_enrolled",
        "this operator already has an authenticator app; an administrator resets it with \
         POST /v1/ledgers/{ledger_id}/operators/{operator_id}/mfa-reset",
    )
}

fn no_store(mut builder: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    builder.insert_header((header::CACHE_CONTROL, "no-store"));
    builder
}

/// Issues a new set of ten recovery codes as a plain-text file, shown this once; every
/// earlier code stops working. Once enrolment is active this needs a fresh step-up.
#[post("/operators/me/recovery-codes")]
pub(crate) async fn recovery_codes(
    state: web::Data<AppState>,
    session: PendingSession,
    request: actix_web::HttpRequest,
) -> Result<HttpResponse, actix_web::Error> {
    let session = if session.0.operator.totp_active {
        // Regenerating voids working codes, so an enrolled operator proves presence first.
        <StepUp as actix_web::FromRequest>::extract(&request)
            .await?
            .0
    } else {
        session.0
    };
    Ok(issue_recovery_codes(&state, &session).await?)
}

async fn issue_recovery_codes(
    state: &AppState,
    session: &OperatorSession,
) -> Result<HttpResponse, ApiError> {
    let operator = &session.operator;
    let codes = recovery::generate_set().map_err(ApiError::internal)?;
    let mut hashed = Vec::with_capacity(codes.len());
    for code in &codes {
        let hash = state
            .mfa
            .hasher
            .hash(code.secret())
            .map_err(ApiError::internal)?;
        hashed.push((code.id.clone(), hash));
    }
    let generation = state
        .mfa
        .store
        .replace_recovery_codes(operator.id, &hashed)
        .await
        .map_err(ApiError::internal)?;
    OperatorEvents::new(operator.ledger_id, operator.id, session.actor())
        .push(&RecoveryCodesIssued {
            auth: session.auth(),
            count: CODES_PER_SET as u32,
            generation,
        })
        .append(state)
        .await?;
    let file = recovery::render_file(&operator.username, &codes);
    Ok(no_store(HttpResponse::Ok())
        .content_type("text/plain; charset=utf-8")
        .insert_header((
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"folio-recovery-codes.txt\"",
        ))
        .body(file.as_str().to_owned()))
}

/// Activates enrolment: a current TOTP code proves the app works, and one recovery code
/// entered back proves the codes were kept (it stays unused).
#[post("/operators/me/totp/activation")]
pub(crate) async fn activate(
    state: web::Data<AppState>,
    session: PendingSession,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let input: Activation = super::parse_json(&body, "activation")?;
    let session = session.0;
    let operator = &session.operator;
    if operator.totp_active {
        return Err(already_enrolled());
    }
    if operator.recovery_generation == 0 {
        return Err(ApiError::rejected(
            "recovery_codes_not_downloaded",
            "download the recovery codes first: POST /v1/operators/me/recovery-codes",
        ));
    }
    if !factors::recovery_code_matches(&state, operator.id, &input.recovery_code).await? {
        return Err(ApiError::rejected(
            "recovery_code_not_acknowledged",
            "the recovery code entered is not one of the codes just downloaded; enter one \
             from the file",
        ));
    }
    let auth = factors::verify(
        &state,
        &session,
        SecondFactor::Totp(&input.totp_code),
        "enrolment",
    )
    .await?;
    let activated = state
        .mfa
        .store
        .activate(operator.id, operator.recovery_generation)
        .await
        .map_err(ApiError::internal)?;
    if !activated {
        return Err(ApiError::conflict(
            "the recovery codes were regenerated meanwhile; download them again and retry",
        ));
    }
    OperatorEvents::new(operator.ledger_id, operator.id, session.actor())
        .push(&RecoveryCodesAcknowledged {
            auth: auth.clone(),
            generation: operator.recovery_generation,
        })
        .push(&MfaEnrolled {
            auth,
            method: "totp".to_owned(),
        })
        .append(&state)
        .await?;
    Ok(HttpResponse::Ok().json(json!({"operator_id": operator.id, "enrolled": true})))
}

/// Creates an operator on the ledger (administrators, with step-up).
#[post("/ledgers/{ledger_id}/operators")]
pub(crate) async fn create(
    state: web::Data<AppState>,
    admin: StepUp,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let ledger_id = super::ledger_id(&path)?;
    let admin = admin.0;
    admin.require(OperatorScope::Administer, ledger_id)?;
    let input: CreateOperator = super::parse_json(&body, "operator")?;
    let roles = input
        .roles
        .iter()
        .map(|role| role.parse::<Role>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(ApiError::invalid)?;
    let now = state.clock.now_micros();
    let created = crate::operators::create_operator(
        &state.mfa.store,
        &state.mfa.hasher,
        &crate::operators::OperatorRequest {
            ledger_id,
            username: &input.username,
            password: &input.password,
            roles: &roles,
            created_recorded: true,
            now_micros: now,
        },
    )
    .await
    .map_err(ApiError::internal)?;
    let operator_id = created.map_err(|problem| ApiError::rejected("operator_invalid", problem))?;
    let event = OperatorCreated {
        operator_id,
        username: input.username.clone(),
        roles: roles.iter().map(|r| r.as_str().to_owned()).collect(),
        created_by: Some(admin.auth()),
    };
    OperatorEvents::new(ledger_id, operator_id, admin.actor())
        .push(&event)
        .append(&state)
        .await?;
    let body = json!({"operator_id": operator_id, "username": input.username});
    Ok(HttpResponse::build(StatusCode::CREATED).json(body))
}

/// Lists the operators of a ledger (administrators).
#[get("/ledgers/{ledger_id}/operators")]
pub(crate) async fn list(
    state: web::Data<AppState>,
    admin: FullSession,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let ledger_id = super::ledger_id(&path)?;
    admin.0.require(OperatorScope::Administer, ledger_id)?;
    let operators = state
        .mfa
        .store
        .list(ledger_id)
        .await
        .map_err(ApiError::internal)?;
    let now = state.clock.now_micros();
    let rows: Vec<_> = operators
        .iter()
        .map(|operator| {
            let roles: Vec<&str> = operator.roles.iter().map(|r| r.as_str()).collect();
            json!({
                "operator_id": operator.id,
                "username": operator.username,
                "roles": roles,
                "enrolled": operator.totp_active,
                "locked": operator.locked_until_micros.is_some_and(|until| until > now),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"operators": rows})))
}

async fn target(
    state: &AppState,
    admin: &OperatorSession,
    ledger_id: Uuid,
    operator: &str,
) -> Result<OperatorRecord, ApiError> {
    admin.require(OperatorScope::Administer, ledger_id)?;
    let operator_id = Uuid::parse_str(operator)
        .map_err(|_| ApiError::invalid(format!("operator id {operator:?} is not a UUID")))?;
    let record = state
        .mfa
        .store
        .get(operator_id)
        .await
        .map_err(ApiError::internal)?;
    record
        .filter(|record| record.ledger_id == ledger_id)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "operator {operator_id} not found on ledger {ledger_id}"
            ))
        })
}

/// Releases a lock early (administrators, with step-up).
#[post("/ledgers/{ledger_id}/operators/{operator_id}/unlock")]
pub(crate) async fn unlock(
    state: web::Data<AppState>,
    admin: StepUp,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let ledger_id = super::ledger_id(&path.0)?;
    let admin = admin.0;
    let operator = target(&state, &admin, ledger_id, &path.1).await?;
    state
        .mfa
        .store
        .unlock(operator.id)
        .await
        .map_err(ApiError::internal)?;
    OperatorEvents::new(ledger_id, operator.id, admin.actor())
        .push(&OperatorUnlocked {
            operator_id: operator.id,
            by: admin.auth(),
        })
        .append(&state)
        .await?;
    Ok(HttpResponse::Ok().json(json!({"operator_id": operator.id, "unlocked": true})))
}

/// Proposes to reset an operator's second factor; a second administrator approves.
#[post("/ledgers/{ledger_id}/operators/{operator_id}/mfa-reset")]
pub(crate) async fn propose_reset(
    state: web::Data<AppState>,
    admin: StepUp,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let ledger_id = super::ledger_id(&path.0)?;
    let admin = admin.0;
    let operator = target(&state, &admin, ledger_id, &path.1).await?;
    let input: ResetRequest = super::parse_json(&body, "MFA reset")?;
    let reason = input.reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(ApiError::invalid("give a reason of 1 to 500 characters"));
    }
    let now = state.clock.now_micros();
    let proposed = state
        .mfa
        .store
        .propose_reset(operator.id, admin.operator.id, reason, now)
        .await
        .map_err(ApiError::internal)?;
    if !proposed {
        return Err(ApiError::duplicate(
            "mfa_reset_pending",
            format!(
                "a reset of operator {} already waits for approval",
                operator.id
            ),
        ));
    }
    OperatorEvents::new(ledger_id, operator.id, admin.actor())
        .push(&MfaResetProposed {
            operator_id: operator.id,
            reason: reason.to_owned(),
            auth: admin.auth(),
        })
        .append(&state)
        .await?;
    let body = json!({"operator_id": operator.id, "status": "pending"});
    Ok(HttpResponse::build(StatusCode::ACCEPTED).json(body))
}

/// Approves a pending reset: a different administrator than the one who asked, and never
/// the operator being reset. The operator's sessions end and they must enrol again.
#[post("/ledgers/{ledger_id}/operators/{operator_id}/mfa-reset/approval")]
pub(crate) async fn approve_reset(
    state: web::Data<AppState>,
    admin: StepUp,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let ledger_id = super::ledger_id(&path.0)?;
    let admin = admin.0;
    let operator = target(&state, &admin, ledger_id, &path.1).await?;
    let store = &state.mfa.store;
    let proposed_by = store
        .pending_reset(operator.id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::not_found(format!("no reset of operator {} is pending", operator.id))
        })?;
    if proposed_by == admin.operator.id || operator.id == admin.operator.id {
        return Err(ApiError::rejected(
            "self_approval",
            "a reset needs a second administrator, other than the one who asked and the \
             operator being reset",
        ));
    }
    if !store
        .apply_reset(operator.id)
        .await
        .map_err(ApiError::internal)?
    {
        return Err(ApiError::conflict(
            "the reset was applied by another request",
        ));
    }
    let now = state.clock.now_micros();
    let sessions = store
        .revoke_all_sessions(operator.id, now)
        .await
        .map_err(ApiError::internal)?;
    let mut events = OperatorEvents::new(ledger_id, operator.id, admin.actor()).push(&MfaReset {
        operator_id: operator.id,
        proposed_by,
        auth: admin.auth(),
    });
    for session_id in sessions {
        events = events.push(&SessionRevoked {
            operator_id: operator.id,
            session_id,
            reason: "mfa_reset".to_owned(),
        });
    }
    events.append(&state).await?;
    Ok(HttpResponse::Ok().json(json!({"operator_id": operator.id, "reset": true})))
}
