//! Operators over real HTTP: enrolment, TOTP and recovery codes (and their races),
//! step-up, dual approval of the allow-list, lockouts, MFA reset, the events of each
//! decision, and secrets kept out of events and error bodies.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use api::operators::client::OperatorClient;
use domain::clock::Clock;
use domain::events::DomainEvent;
use domain::mfa::TotpSecret;
use folio_e2e::clock::ManualClock;
use folio_e2e::harness::{Stack, OPERATOR_PASSWORD};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Reads every event of a ledger.
async fn events(stack: &Stack, ledger: Uuid) -> Vec<domain::record::SealedEvent> {
    stack
        .state
        .store
        .read_ledger(ledger, 0, 10_000)
        .await
        .unwrap()
}

/// Returns the decoded events of one type.
async fn events_of(stack: &Stack, ledger: Uuid, event_type: &str) -> Vec<DomainEvent> {
    events(stack, ledger)
        .await
        .iter()
        .filter(|event| event.event_type == event_type)
        .map(|event| {
            DomainEvent::decode(&event.event_type, event.schema_version, &event.payload).unwrap()
        })
        .collect()
}

fn assert_step_up_refusal(status: StatusCode, www_authenticate: Option<String>, body: &Value) {
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let challenge = www_authenticate.expect("a WWW-Authenticate challenge");
    assert!(
        challenge.starts_with("Bearer error=\"insufficient_user_authentication\""),
        "{challenge}"
    );
    assert!(challenge.contains("max_age="), "{challenge}");
    assert_eq!(body["code"], "step_up_required", "{body}");
}

/// Sends a POST with a fresh idempotency key and returns status, challenge and body.
async fn post_with_challenge(
    request: reqwest::RequestBuilder,
    body: &Value,
) -> (StatusCode, Option<String>, Value) {
    let response = request
        .header("Idempotency-Key", Uuid::now_v7().to_string())
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|value| value.to_str().unwrap().to_owned());
    (
        status,
        challenge,
        response.json().await.unwrap_or(Value::Null),
    )
}

async fn sign_in(stack: &Stack, ledger: Uuid, username: &str) -> OperatorClient {
    OperatorClient::sign_in(&stack.base, ledger, username, OPERATOR_PASSWORD)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolment_shows_secret_once_and_needs_acknowledged_codes() {
    let stack = Stack::start().await.unwrap();
    let ledger = stack.create_ledger("enrol").await.unwrap();
    let now = domain::clock::SystemClock.now_micros();
    let mfa = &stack.state.mfa;
    let roles = [domain::operators::Role::Admin];
    api::operators::create_operator(
        &mfa.store,
        &mfa.hasher,
        &api::operators::OperatorRequest {
            ledger_id: ledger,
            username: "ann",
            password: OPERATOR_PASSWORD,
            roles: &roles,
            created_recorded: false,
            now_micros: now,
        },
    )
    .await
    .unwrap()
    .unwrap();

    let wrong =
        OperatorClient::sign_in(&stack.base, ledger, "ann", "not the password at all").await;
    assert!(wrong.is_err());
    let mut ann = sign_in(&stack, ledger, "ann").await;
    let (status, body) = ann
        .verification(&json!({"totp_code": "123456"}))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["code"], "mfa_not_enrolled");

    let (status, started) = ann
        .post_json("/v1/operators/me/totp", None, &json!({}))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{started}");
    let secret = started["secret_base32"].as_str().unwrap().to_owned();
    let bytes = domain::mfa::base32::decode(&secret).unwrap();
    assert!(
        bytes.len() * 8 >= 160,
        "secret has {} bits",
        bytes.len() * 8
    );
    let uri = started["otpauth_uri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/Folio:ann?secret="), "{uri}");
    assert!(uri.contains(&secret), "{uri}");
    assert!(uri.contains("period=30"), "{uri}");
    assert!(uri.contains("digits=6"), "{uri}");
    let svg = started["qr_svg"].as_str().unwrap();
    assert!(svg.contains("<svg"), "{svg}");
    assert!(svg.contains("</svg>"), "{svg}");
    ann.set_secret(&secret).unwrap();

    // Activation needs the recovery codes downloaded, then one of them entered back.
    let code = ann.code_at(unix_now()).unwrap();
    let body = json!({"totp_code": code, "recovery_code": "aaaa-bbbb-cccc-dddd-eeee"});
    let activation = "/v1/operators/me/totp/activation";
    let (status, refused) = ann.post_json(activation, None, &body).await.unwrap();
    assert_eq!(
        refused["code"], "recovery_codes_not_downloaded",
        "{status} {refused}"
    );
    let response = ann
        .request(reqwest::Method::POST, "/v1/operators/me/recovery-codes")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let file = response.text().await.unwrap();
    let codes: Vec<&str> = file.lines().filter(|line| line.len() == 24).collect();
    assert_eq!(codes.len(), 10, "{file}");
    let (_, refused) = ann.post_json(activation, None, &body).await.unwrap();
    assert_eq!(refused["code"], "recovery_code_not_acknowledged");

    let body = json!({"totp_code": code, "recovery_code": codes[0]});
    let (status, activated) = ann.post_json(activation, None, &body).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{activated}");
    let (status, _) = ann
        .post_json("/v1/operators/me/totp", None, &json!({}))
        .await
        .unwrap();
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a second enrolment needs an MFA reset"
    );

    for event_type in [
        "operator.created",
        "operator.session_started",
        "operator.mfa_enrolment_started",
        "operator.recovery_codes_issued",
        "operator.recovery_codes_acknowledged",
        "operator.mfa_enrolled",
        "operator.challenge_passed",
    ] {
        assert!(
            !events_of(&stack, ledger, event_type).await.is_empty(),
            "no {event_type}"
        );
    }
    match &events_of(&stack, ledger, "operator.mfa_enrolled").await[0] {
        DomainEvent::MfaEnrolled(enrolled) => {
            assert_eq!(enrolled.auth.operator_id, ann.operator_id);
            assert_eq!(enrolled.auth.session_id, ann.session_id);
            assert_eq!(enrolled.auth.factor, "totp");
        }
        other => panic!("unexpected {other:?}"),
    }
    stack.stop().await.unwrap();
}

/// Codes at chosen times, from Rust and from pyotp, must agree; and the RFC 6238
/// Appendix B SHA1 vector at T = 59 through pyotp as well.
#[test]
fn totp_codes_match_pyotp() {
    let secret = TotpSecret::generate().unwrap();
    let base32 = secret.to_base32();
    let times = [
        0u64,
        29,
        30,
        59,
        1_111_111_109,
        1_234_567_890,
        2_000_000_000,
        unix_now(),
    ];
    let script = "import sys, pyotp\n\
                  secret = sys.argv[1]\n\
                  for t in sys.argv[2:]:\n    print(pyotp.TOTP(secret).at(int(t)))\n\
                  rfc = pyotp.TOTP('GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ', digits=8)\n\
                  print(rfc.at(59))\n";
    let python = std::env::var_os("FOLIO_PYTHON").unwrap_or_else(|| "python3".into());
    let output = Command::new(python)
        .args(["-c", script, base32.as_str()])
        .args(times.iter().map(u64::to_string))
        .output()
        .expect("python3 runs; set FOLIO_PYTHON to the venv that .ci/test builds");
    assert!(
        output.status.success(),
        "pyotp missing? pip install -r tests/verifier/requirements.txt: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    for (time, line) in times.iter().zip(&lines) {
        assert_eq!(secret.code_at_time(*time).as_str(), *line, "T = {time}");
    }
    assert_eq!(lines.last(), Some(&"94287082"));
}

/// Two sessions of one operator send the same current code at once: one wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_totp_code_is_accepted_once_under_concurrency() {
    let stack = Stack::start().await.unwrap();
    let ledger = stack.create_ledger("race-totp").await.unwrap();
    let admin = stack.bootstrap_admin(ledger, "racer").await.unwrap();
    let secret = admin.secret_base32().unwrap();

    let mut first = sign_in(&stack, ledger, "racer").await;
    let mut second = sign_in(&stack, ledger, "racer").await;
    first.set_secret(&secret).unwrap();
    second.set_secret(&secret).unwrap();
    // Enrolment used the current step; the next one is inside the accepted window.
    let code = first.code_at(unix_now() + 30).unwrap();
    let body = json!({"totp_code": code});
    let (a, b) = tokio::join!(first.verification(&body), second.verification(&body));
    let (a, b) = (a.unwrap(), b.unwrap());
    let wins = [a.0, b.0].iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(wins, 1, "{a:?} {b:?}");
    let loser = if a.0 == StatusCode::OK { &b.1 } else { &a.1 };
    assert_eq!(loser["code"], "second_factor_failed", "{loser}");
    let (status, _) = first.verification(&body).await.unwrap();
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a used code is never accepted again"
    );
    // The loser fails as `replayed` when both matched before either recorded the step,
    // and as `mismatch` when the winner had already recorded it.
    let failed = events_of(&stack, ledger, "operator.challenge_failed").await;
    let reasons: Vec<&str> = failed
        .iter()
        .filter_map(|event| match event {
            DomainEvent::ChallengeFailed(f) if f.factor == "totp" => Some(f.reason.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons.iter().all(|r| *r == "replayed" || *r == "mismatch"),
        "{reasons:?}"
    );
    stack.stop().await.unwrap();
}

/// Two sessions send the same recovery code at once: one wins, and the use alerts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_recovery_code_is_accepted_once_under_concurrency() {
    let stack = Stack::start().await.unwrap();
    let ledger = stack.create_ledger("race-recovery").await.unwrap();
    let admin = stack.bootstrap_admin(ledger, "lost.phone").await.unwrap();
    let code = admin.recovery_codes[1].clone();

    let first = sign_in(&stack, ledger, "lost.phone").await;
    let second = sign_in(&stack, ledger, "lost.phone").await;
    let body = json!({"recovery_code": code});
    let (a, b) = tokio::join!(first.verification(&body), second.verification(&body));
    let (a, b) = (a.unwrap(), b.unwrap());
    let wins = [a.0, b.0].iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(wins, 1, "{a:?} {b:?}");
    let (status, _) = first.verification(&body).await.unwrap();
    assert_ne!(status, StatusCode::OK, "a used code never works again");

    let used = events_of(&stack, ledger, "operator.recovery_code_used").await;
    assert_eq!(used.len(), 1);
    match &used[0] {
        DomainEvent::RecoveryCodeUsed(event) => {
            assert_eq!(event.auth.factor, "recovery_code");
            assert_eq!(event.remaining, 9);
        }
        other => panic!("unexpected {other:?}"),
    }
    let metrics = stack
        .http
        .get(format!("{}/metrics", stack.base))
        .send()
        .await
        .unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains("folio_recovery_codes_used_total 1"),
        "{metrics}"
    );
    stack.stop().await.unwrap();
}

/// The allow-list update end to end: refused without step-up, refused with a stale
/// step-up, accepted with a fresh one; an API token is never enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_list_change_needs_fresh_step_up() {
    let stack = Stack::start_with(|config| config.mfa.step_up_max_age_seconds = 2)
        .await
        .unwrap();
    let ledger = stack.create_ledger("step-up").await.unwrap();
    let mut admin = stack.bootstrap_admin(ledger, "stepper").await.unwrap();
    let path = format!("/v1/ledgers/{ledger}/payees");
    let payee = json!({"name": "Jane Citizen", "bsb": "062-000", "account": "12345678"});

    // A session that has only passed the password.
    let pending = sign_in(&stack, ledger, "stepper").await;
    let request = pending.request(reqwest::Method::POST, &path);
    let (status, challenge, body) = post_with_challenge(request, &payee).await;
    assert_step_up_refusal(status, challenge, &body);

    // An API token with every scope.
    let request = stack
        .http
        .post(format!("{}{path}", stack.base))
        .bearer_auth(&stack.token);
    let (status, challenge, body) = post_with_challenge(request, &payee).await;
    assert_step_up_refusal(status, challenge, &body);

    // A stale step-up.
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let request = admin.request(reqwest::Method::POST, &path);
    let (status, challenge, body) = post_with_challenge(request, &payee).await;
    assert_step_up_refusal(status, challenge, &body);
    assert!(
        body["detail"].as_str().unwrap().contains("verification"),
        "{body}"
    );

    // A fresh one: the client completes the challenge and retries.
    admin.verify_totp().await.unwrap();
    let request = admin.request(reqwest::Method::POST, &path);
    let (status, _, body) = post_with_challenge(request, &payee).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "pending");

    let issued = events_of(&stack, ledger, "operator.challenge_issued").await;
    assert!(issued
        .iter()
        .any(|e| matches!(e, DomainEvent::ChallengeIssued(c) if c.purpose == "step_up")));
    assert!(!events_of(&stack, ledger, "operator.step_up_granted")
        .await
        .is_empty());
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_needs_other_operator_and_hash() {
    let stack = Stack::start().await.unwrap();
    let ledger = stack.create_ledger("dual").await.unwrap();
    let admin = stack.bootstrap_admin(ledger, "proposer.one").await.unwrap();
    let approver = stack
        .enrolled_operator(&admin, ledger, "approver.two", &["approver"])
        .await
        .unwrap();
    let viewer = stack
        .enrolled_operator(&admin, ledger, "viewer.three", &["viewer"])
        .await
        .unwrap();
    let path = format!("/v1/ledgers/{ledger}/payees");
    let payee = json!({"name": "Acme Pty Ltd", "bsb": "062-000", "account": "11112222"});
    let proposal = admin.propose(&path, &payee).await.unwrap();
    let id = proposal["proposal_id"].as_str().unwrap().to_owned();
    let first_hash = proposal["content_hash"].as_str().unwrap().to_owned();
    let approval = format!("/v1/ledgers/{ledger}/proposals/{id}/approval");

    // Not the proposer, not in another session of the proposer, not a viewer, not a token.
    let (status, body) = admin
        .post(&approval, &json!({"content_hash": first_hash}))
        .await
        .unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("self_approval"))
    );
    let again = sign_in(&stack, ledger, "proposer.one").await;
    // Enrolment used the current step, so the next one (inside the window) signs in.
    let next = admin.code_at(unix_now() + 30).unwrap();
    let (status, body) = again
        .verification(&json!({"totp_code": next}))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, body) = again
        .post(&approval, &json!({"content_hash": first_hash}))
        .await
        .unwrap();
    assert_eq!(body["code"], "self_approval", "{body}");
    let (status, _) = viewer
        .post(&approval, &json!({"content_hash": first_hash}))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
    let response = stack
        .http
        .post(format!("{}{approval}", stack.base))
        .bearer_auth(&stack.token)
        .header("Idempotency-Key", "token-approval")
        .json(&json!({"content_hash": first_hash}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // An edit makes a new revision; the hash the approver saw first no longer approves.
    let revision = format!("/v1/ledgers/{ledger}/proposals/{id}/revision");
    let edited = json!({"name": "Acme Pty Limited", "bsb": "062-000", "account": "11112222"});
    let revised = admin.propose(&revision, &edited).await.unwrap();
    assert_eq!(revised["revision"], 2);
    assert_ne!(revised["content_hash"], proposal["content_hash"]);
    let (_, body) = approver
        .post(&approval, &json!({"content_hash": first_hash}))
        .await
        .unwrap();
    assert_eq!(body["code"], "proposal_hash_mismatch", "{body}");
    let approved = approver.approve(ledger, &revised).await.unwrap();
    assert_eq!(approved["status"], "approved");
    let (status, body) = approver
        .post(&approval, &json!({"content_hash": revised["content_hash"]}))
        .await
        .unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("proposal_not_pending"))
    );

    // The payee is on the allow-list and payable (no cooling-off in this stack).
    let payee_id: Uuid = serde_json::from_value(proposal["change"]["payee_id"].clone()).unwrap();
    let (status, body) = stack
        .pay(ledger, payee_id, json!(100), "after-approval")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // A rejected proposal cannot be approved.
    let other = json!({"name": "Rejected Co", "bsb": "062-000", "account": "33334444"});
    let rejected = admin.propose(&path, &other).await.unwrap();
    let rid = rejected["proposal_id"].as_str().unwrap();
    let (status, _) = approver
        .post(
            &format!("/v1/ledgers/{ledger}/proposals/{rid}/rejection"),
            &json!({"reason": "unknown company"}),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(approver.approve(ledger, &rejected).await.is_err());

    let approvals = events_of(&stack, ledger, "allowlist.change_approved").await;
    match &approvals[..] {
        [DomainEvent::ChangeApproved(event)] => {
            assert_eq!(event.auth.operator_id, approver.operator_id);
            assert_eq!(event.auth.factor, "totp");
            assert_eq!(event.revision, 2);
        }
        other => panic!("one approval expected, got {other:?}"),
    }
    assert_eq!(
        events_of(&stack, ledger, "allowlist.change_proposed")
            .await
            .len(),
        3
    );
    assert_eq!(
        events_of(&stack, ledger, "allowlist.change_rejected")
            .await
            .len(),
        1
    );
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposals_expire_and_new_payees_cool_off() {
    let stack = Stack::start_with(|config| {
        config.allow_list.proposal_ttl_seconds = 2;
        config.allow_list.cooling_off_seconds = 3_600;
    })
    .await
    .unwrap();
    let ledger = stack.create_ledger("cooling").await.unwrap();
    let admin = stack.bootstrap_admin(ledger, "cool.admin").await.unwrap();
    let approver = stack
        .enrolled_operator(&admin, ledger, "cool.approver", &["approver"])
        .await
        .unwrap();
    let path = format!("/v1/ledgers/{ledger}/payees");

    let fresh = json!({"name": "New Payee", "bsb": "062-000", "account": "55556666"});
    let proposal = admin.propose(&path, &fresh).await.unwrap();
    let approved = approver.approve(ledger, &proposal).await.unwrap();
    let payee_id: Uuid = serde_json::from_value(approved["payee_id"].clone()).unwrap();
    let (status, body) = stack
        .pay(ledger, payee_id, json!(100), "too-soon")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "payee_cooling_off");

    let late = json!({"name": "Late Payee", "bsb": "062-000", "account": "77778888"});
    let proposal = admin.propose(&path, &late).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let id = proposal["proposal_id"].as_str().unwrap();
    let (status, body) = approver
        .post(
            &format!("/v1/ledgers/{ledger}/proposals/{id}/approval"),
            &json!({"content_hash": proposal["content_hash"]}),
        )
        .await
        .unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("proposal_expired")),
        "{body}"
    );
    assert_eq!(
        events_of(&stack, ledger, "allowlist.change_expired")
            .await
            .len(),
        1
    );
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_delay_then_lock_until_an_administrator_unlocks() {
    let clock = ManualClock::starting_now();
    let stack = Stack::start_with_clock(|_| {}, clock.clone())
        .await
        .unwrap();
    let ledger = stack.create_ledger("lockout").await.unwrap();
    let admin = stack.bootstrap_admin(ledger, "lock.admin").await.unwrap();
    let victim = stack
        .enrolled_operator(&admin, ledger, "lock.victim", &["proposer"])
        .await
        .unwrap();
    let mut session = sign_in(&stack, ledger, "lock.victim").await;
    session
        .set_secret(&victim.secret_base32().unwrap())
        .unwrap();
    let wrong = json!({"totp_code": "000000"});
    let wrong = if session.code_at(clock.unix_seconds()).as_deref() == Some("000000") {
        json!({"totp_code": "111111"})
    } else {
        wrong
    };

    for _ in 0..5 {
        let (status, body) = session.verification(&wrong).await.unwrap();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    let (status, body) = session.verification(&wrong).await.unwrap();
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["code"], "too_many_attempts");
    for delay in [1, 2, 4, 8, 16] {
        clock.advance_seconds(delay);
        let (status, body) = session.verification(&wrong).await.unwrap();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "after {delay} s: {body}");
    }
    // Ten failures: locked, even for the right code.
    let right = json!({"totp_code": session.code_at(clock.unix_seconds()).unwrap()});
    clock.advance_seconds(60);
    let (status, body) = session.verification(&right).await.unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::LOCKED, Some("operator_locked")),
        "{body}"
    );
    assert_eq!(events_of(&stack, ledger, "operator.locked").await.len(), 1);
    let signed_in =
        OperatorClient::sign_in(&stack.base, ledger, "lock.victim", OPERATOR_PASSWORD).await;
    let refusal = signed_in
        .err()
        .expect("a locked operator cannot sign in")
        .to_string();
    assert!(refusal.contains("operator_locked"), "{refusal}");

    // An administrator with a fresh step-up releases the lock.
    let mut admin = admin;
    let admin_code = admin.code_at(clock.unix_seconds()).unwrap();
    let (status, body) = admin
        .verification(&json!({"totp_code": admin_code}))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    let unlock = format!(
        "/v1/ledgers/{ledger}/operators/{}/unlock",
        victim.operator_id
    );
    let (status, body) = admin.post(&unlock, &json!({})).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    let right = json!({"totp_code": session.code_at(clock.unix_seconds()).unwrap()});
    let (status, body) = session.verification(&right).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    match &events_of(&stack, ledger, "operator.unlocked").await[..] {
        [DomainEvent::OperatorUnlocked(event)] => {
            assert_eq!(event.by.operator_id, admin.operator_id);
            assert_eq!(event.operator_id, victim.operator_id);
        }
        other => panic!("one unlock expected, got {other:?}"),
    }
    let _ = &mut admin;
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mfa_reset_needs_a_second_administrator() {
    let stack = Stack::start().await.unwrap();
    let ledger = stack.create_ledger("reset").await.unwrap();
    let first = stack.bootstrap_admin(ledger, "reset.one").await.unwrap();
    let second = stack
        .enrolled_operator(&first, ledger, "reset.two", &["admin"])
        .await
        .unwrap();
    let target = stack
        .enrolled_operator(&first, ledger, "reset.target", &["proposer"])
        .await
        .unwrap();
    let reset = format!(
        "/v1/ledgers/{ledger}/operators/{}/mfa-reset",
        target.operator_id
    );
    let (status, body) = first
        .post(&reset, &json!({"reason": "lost phone"}))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let approval = format!("{reset}/approval");
    let (_, body) = first.post(&approval, &json!({})).await.unwrap();
    assert_eq!(body["code"], "self_approval", "{body}");
    let (status, body) = second.post(&approval, &json!({})).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");

    // The target's sessions ended and the next sign-in must enrol again.
    let (status, _) = target.get("/v1/sessions/current").await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let mut again = sign_in(&stack, ledger, "reset.target").await;
    let (_, current) = again.get("/v1/sessions/current").await.unwrap();
    assert_eq!(current["enrolled"], false);
    again.enrol().await.unwrap();
    assert!(!events_of(&stack, ledger, "operator.mfa_reset")
        .await
        .is_empty());
    assert!(!events_of(&stack, ledger, "operator.session_revoked")
        .await
        .is_empty());
    stack.stop().await.unwrap();
}

/// Plants a known password, TOTP secret, codes and recovery codes, drives failures, and
/// scans every event and every error body for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_events_or_error_bodies() {
    let stack = Stack::start().await.unwrap();
    let ledger = stack.create_ledger("secrets").await.unwrap();
    let admin = stack.bootstrap_admin(ledger, "keeper").await.unwrap();
    let secret = admin.secret_base32().unwrap();
    let secret_bytes = domain::mfa::base32::decode(&secret).unwrap();
    let mut planted: Vec<Vec<u8>> = vec![
        secret.clone().into_bytes(),
        secret.to_lowercase().into_bytes(),
        secret_bytes,
        OPERATOR_PASSWORD.as_bytes().to_vec(),
    ];
    for code in &admin.recovery_codes {
        planted.push(code.clone().into_bytes());
        planted.push(code.replace('-', "").as_bytes()[4..].to_vec());
    }

    let mut bodies = Vec::new();
    let session = sign_in(&stack, ledger, "keeper").await;
    let current_code = admin.code_at(unix_now()).unwrap();
    planted.push(current_code.clone().into_bytes());
    for body in [
        json!({"totp_code": current_code}),
        json!({"totp_code": "12a456"}),
        json!({"recovery_code": admin.recovery_codes[2]}),
        json!({"recovery_code": admin.recovery_codes[3].replace('a', "1")}),
        json!({"totp_code": secret}),
    ] {
        let (_, response) = session.verification(&body).await.unwrap();
        bodies.push(response.to_string());
    }
    let wrong = OperatorClient::sign_in(
        &stack.base,
        ledger,
        "keeper",
        &format!("{OPERATOR_PASSWORD}x"),
    )
    .await;
    bodies.push(format!("{:?}", wrong.err()));

    let haystacks: Vec<Vec<u8>> = events(&stack, ledger)
        .await
        .iter()
        .map(|event| {
            let mut bytes = event.payload.clone();
            bytes.extend_from_slice(event.actor.id.as_bytes());
            bytes.extend_from_slice(event.actor.credential.as_bytes());
            bytes
        })
        .chain(bodies.iter().map(|body| body.as_bytes().to_vec()))
        .collect();
    for needle in &planted {
        for haystack in &haystacks {
            assert!(
                !haystack
                    .windows(needle.len())
                    .any(|window| window == needle.as_slice()),
                "a planted secret of {} bytes leaked: {}",
                needle.len(),
                String::from_utf8_lossy(haystack)
            );
        }
    }
    stack.stop().await.unwrap();
}

/// Every route the OpenAPI document marks `x-folio-step-up` refuses an API token and a
/// session with a stale second factor; the marked set matches this list, and every other
/// POST route is listed as not sensitive, so a new route cannot be missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_sensitive_routes_refuse_without_step_up() {
    const SENSITIVE: &[&str] = &[
        "POST /v1/ledgers/{ledger_id}/payees",
        "POST /v1/ledgers/{ledger_id}/payees/{payee_id}/removal",
        "POST /v1/ledgers/{ledger_id}/payees/{payee_id}/erasure",
        "POST /v1/ledgers/{ledger_id}/payees/{payee_id}/change",
        "POST /v1/ledgers/{ledger_id}/proposals/{proposal_id}/approval",
        "POST /v1/ledgers/{ledger_id}/proposals/{proposal_id}/rejection",
        "POST /v1/ledgers/{ledger_id}/proposals/{proposal_id}/revision",
        "POST /v1/operators/me/recovery-codes",
        "POST /v1/ledgers/{ledger_id}/operators",
        "POST /v1/ledgers/{ledger_id}/operators/{operator_id}/unlock",
        "POST /v1/ledgers/{ledger_id}/operators/{operator_id}/mfa-reset",
        "POST /v1/ledgers/{ledger_id}/operators/{operator_id}/mfa-reset/approval",
        "POST /v1/ledgers/{ledger_id}/bundles",
        "POST /v1/ledgers/{ledger_id}/dlq/retries",
        "POST /v1/ledgers/{ledger_id}/dlq/ignores",
        "POST /v1/ledgers/{ledger_id}/dlq-decisions/{decision_id}/approval",
        "POST /v1/ledgers/{ledger_id}/dlq-decisions/{decision_id}/rejection",
        "POST /v1/ledgers/{ledger_id}/dlq-decisions/{decision_id}/pause",
        "POST /v1/ledgers/{ledger_id}/dlq-decisions/{decision_id}/resume",
        "POST /v1/ledgers/{ledger_id}/anomalies/{payment_id}/release",
        "POST /v1/ledgers/{ledger_id}/anomalies/{payment_id}/rejection",
        "POST /v1/ledgers/{ledger_id}/signing-key/rotation",
        "POST /v1/ledgers/{ledger_id}/signing-key/revocation",
        "POST /v1/ledgers/{ledger_id}/kek/rotation",
    ];
    const NOT_SENSITIVE: &[&str] = &[
        "POST /v1/ledgers",
        "POST /v1/ledgers/{ledger_id}/payments",
        "POST /v1/ledgers/{ledger_id}/payments/batches",
        // Records a control run: it reads the ledger and changes no payee or payment.
        "POST /v1/ledgers/{ledger_id}/controls/runs",
        "POST /v1/sessions",
        "POST /v1/sessions/current/verification",
        "POST /v1/sessions/current/revocation",
        "POST /v1/operators/me/totp",
        "POST /v1/operators/me/totp/activation",
    ];
    let document: Value = serde_json::from_str(api::routes::openapi::DOCUMENT).unwrap();
    let mut marked = BTreeSet::new();
    let mut other_posts = BTreeSet::new();
    for (path, operations) in document["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let route = format!("{} {path}", method.to_uppercase());
            if operation["x-folio-step-up"] == json!(true) {
                marked.insert(route);
            } else if method == "post" {
                other_posts.insert(route);
            }
        }
    }
    let expected: BTreeSet<String> = SENSITIVE.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        marked, expected,
        "sensitive routes in the OpenAPI document changed"
    );
    let listed: BTreeSet<String> = NOT_SENSITIVE.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        other_posts, listed,
        "a POST route is neither sensitive nor listed as safe"
    );

    let stack = Stack::start_with(|config| config.mfa.step_up_max_age_seconds = 1)
        .await
        .unwrap();
    let ledger = stack.create_ledger("routes").await.unwrap();
    let admin = stack.bootstrap_admin(ledger, "route.admin").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    for route in SENSITIVE {
        let (_, path) = route.split_once(' ').unwrap();
        let path = path
            .replace("{ledger_id}", &ledger.to_string())
            .replace("{operator_id}", &admin.operator_id.to_string())
            .replace("{payee_id}", &Uuid::now_v7().to_string())
            .replace("{proposal_id}", &Uuid::now_v7().to_string())
            .replace("{decision_id}", &Uuid::now_v7().to_string())
            .replace("{payment_id}", &Uuid::now_v7().to_string());
        let body = json!({"name": "X Pty Ltd", "bsb": "062-000", "account": "1"});
        let stale = admin.request(reqwest::Method::POST, &path);
        let (status, challenge, response) = post_with_challenge(stale, &body).await;
        assert_step_up_refusal(status, challenge, &response);
        let token = stack
            .http
            .post(format!("{}{path}", stack.base))
            .bearer_auth(&stack.token);
        let (status, challenge, response) = post_with_challenge(token, &body).await;
        assert_step_up_refusal(status, challenge, &response);
    }
    stack.stop().await.unwrap();
}

/// Sessions end after 15 minutes idle and 12 hours in all, only work from the client
/// that started them, and stop at once when revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_expire_bind_and_revoke() {
    let clock = ManualClock::starting_now();
    let stack = Stack::start_with_clock(|_| {}, clock.clone())
        .await
        .unwrap();
    let ledger = stack.create_ledger("sessions").await.unwrap();
    let admin = stack
        .bootstrap_admin(ledger, "session.admin")
        .await
        .unwrap();
    let (status, _) = admin.get("/v1/sessions/current").await.unwrap();
    assert_eq!(status, StatusCode::OK);

    // Another User-Agent with the same token is another client.
    let (status, _) = admin
        .get_as("other-agent/1.0", "/v1/sessions/current")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Activity every 14 minutes keeps a session alive, up to 12 hours.
    let busy = sign_in(&stack, ledger, "session.admin").await;
    for _ in 0..51 {
        clock.advance_seconds(14 * 60);
        let (status, _) = busy.get("/v1/sessions/current").await.unwrap();
        assert_eq!(status, StatusCode::OK);
    }
    clock.advance_seconds(14 * 60);
    let (status, _) = busy.get("/v1/sessions/current").await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "past 12 hours");

    // Sixteen idle minutes end a session.
    let idle = sign_in(&stack, ledger, "session.admin").await;
    clock.advance_seconds(16 * 60);
    let (status, _) = idle.get("/v1/sessions/current").await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "idle for 16 minutes");

    let revoked = sign_in(&stack, ledger, "session.admin").await;
    let (status, _) = revoked
        .post_json("/v1/sessions/current/revocation", None, &json!({}))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let (status, _) = revoked.get("/v1/sessions/current").await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "revoked");
    assert!(!events_of(&stack, ledger, "operator.session_revoked")
        .await
        .is_empty());
    stack.stop().await.unwrap();
}

/// Weak passwords are rejected with the rule they break, and new recovery codes void
/// the old ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weak_passwords_and_old_codes_rejected() {
    let stack = Stack::start().await.unwrap();
    let ledger = stack.create_ledger("rules").await.unwrap();
    let admin = stack.bootstrap_admin(ledger, "rules.admin").await.unwrap();
    let path = format!("/v1/ledgers/{ledger}/operators");
    for (username, password) in [
        ("short.one", "short"),
        ("breached.one", "Password2024!"),
        ("carol.name", "carol.name is my password"),
        ("pattern.one", "abcabcabcabc"),
    ] {
        let body = json!({"username": username, "password": password, "roles": ["viewer"]});
        let (status, body) = admin.post(&path, &body).await.unwrap();
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{password}: {body}"
        );
        assert_eq!(body["code"], "operator_invalid", "{body}");
    }

    let old_code = admin.recovery_codes[4].clone();
    let response = admin
        .request(reqwest::Method::POST, "/v1/operators/me/recovery-codes")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let file = response.text().await.unwrap();
    let new_code = file
        .lines()
        .find(|line| line.len() == 24)
        .unwrap()
        .to_owned();
    let session = sign_in(&stack, ledger, "rules.admin").await;
    let (status, _) = session
        .verification(&json!({"recovery_code": old_code}))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "an old code is void");
    let (status, body) = session
        .verification(&json!({"recovery_code": new_code}))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    stack.stop().await.unwrap();
}

/// A change replaces the payee under a new id once approved: the old id is no longer
/// payable and the new one is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_change_replaces_payee() {
    let stack = Stack::start().await.unwrap();
    let ledger = stack.create_ledger("change").await.unwrap();
    let old = stack
        .add_payee(ledger, "Old Account Pty Ltd", "062-000", "10101010")
        .await
        .unwrap();
    let path = format!("/v1/ledgers/{ledger}/payees/{old}/change");
    let body = json!({"name": "Old Account Pty Ltd", "bsb": "062-000", "account": "20202020"});
    let proposal = stack
        .propose_and_approve(ledger, &path, &body)
        .await
        .unwrap();
    assert_eq!(proposal["change"]["kind"], "change");
    let new: Uuid = serde_json::from_value(proposal["change"]["new_payee_id"].clone()).unwrap();
    assert_ne!(new, old);

    let (status, body) = stack.pay(ledger, old, json!(100), "to-old").await.unwrap();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "payee_not_allow_listed");
    let (status, body) = stack.pay(ledger, new, json!(100), "to-new").await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"], "submitted", "{body}");
    stack.stop().await.unwrap();
}

/// Wrong passwords under an existing name and under an unknown name get the same
/// sequence of responses, so sign-in does not tell which names exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_failures_do_not_reveal_names() {
    let clock = ManualClock::starting_now();
    let stack = Stack::start_with_clock(|_| {}, clock.clone())
        .await
        .unwrap();
    let ledger = stack.create_ledger("enumeration").await.unwrap();
    let admin = stack.bootstrap_admin(ledger, "enum.admin").await.unwrap();
    stack
        .enrolled_operator(&admin, ledger, "enum.real", &["proposer"])
        .await
        .unwrap();

    let url = format!("{}/v1/sessions", stack.base);
    let mut answers = Vec::new();
    for name in ["enum.real", "enum.nobody"] {
        let mut statuses = Vec::new();
        for attempt in 0..13 {
            if attempt > 6 {
                clock.advance_seconds(40);
            }
            let body = json!({"ledger_id": ledger, "username": name, "password": "wrong horse"});
            let response = stack.http.post(&url).json(&body).send().await.unwrap();
            statuses.push(response.status().as_u16());
        }
        answers.push(statuses);
        clock.advance_seconds(3_600);
    }

    assert!(answers[0].contains(&429), "{:?}", answers[0]);
    assert!(answers[0].contains(&423), "{:?}", answers[0]);
    assert_eq!(
        answers[0], answers[1],
        "an existing name and an unknown one"
    );
    stack.stop().await.unwrap();
}
