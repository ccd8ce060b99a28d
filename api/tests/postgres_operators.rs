//! Operators, sessions, second factors and API tokens shared by two `folio serve` processes
//! on one PostgreSQL database, driven over real HTTP and the command line: what one node
//! records, the other enforces.
//!
//! Each test runs in a fresh database and passes as skipped, with a message, when
//! PostgreSQL is unreachable outside CI.

#[path = "../../eventstore-adapter/tests/support/pg.rs"]
mod pg;
mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use api::operators::client::OperatorClient;
use reqwest::StatusCode;
use serde_json::Value;
use support::nodes::{
    bootstrap_admin, break_glass_admin, folio, serve_command, two_nodes, Approvals, Node, PASSWORD,
};
use uuid::Uuid;

/// Signs `username` in on `node` with the password only; the session still needs a code.
async fn sign_in(node: &Node, ledger: Uuid, username: &str) -> OperatorClient {
    OperatorClient::sign_in(&node.base, ledger, username, PASSWORD)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_works_across_nodes() {
    let Some(db) = pg::TestDatabase::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (first, second, _) = two_nodes(dir.path(), db.url());
    let ledger = first.create_ledger("shared-operators").await;

    // Ann is bootstrapped with the command line and enrols on the first node; Bob, whom
    // she creates there, enrols on the second.
    let approvals = Approvals::enrol(db.url(), ledger, &first, &second).await;

    // Ann signs in on the second node with her password and a TOTP code: the second node
    // opens the secret the first one sealed.
    let mut ann_on_second = sign_in(&second, ledger, "ann").await;
    ann_on_second.share_authenticator(&approvals.proposer);
    ann_on_second.verify_totp().await.unwrap();

    // A change proposed on the first node and approved on the second is in force on both.
    let payee = approvals.add_payee(ledger, 7).await.expect("payee added");
    assert!(second.pay(ledger, payee, "pay-on-second").await.is_some());
    assert!(first.pay(ledger, payee, "pay-on-first").await.is_some());

    // The session made on the second node works on the first; revoked there, it is
    // refused on the second.
    let current = "/v1/sessions/current";
    let (status, body) = ann_on_second.get(current).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    ann_on_second.move_to(&first.base);
    let (status, body) = ann_on_second.get(current).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    let revocation = "/v1/sessions/current/revocation";
    let (status, body) = ann_on_second
        .post_json(revocation, None, &Value::Null)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    ann_on_second.move_to(&second.base);
    let (status, body) = ann_on_second.get(current).await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // A token issued with the command line against the shared database is accepted by
    // both nodes, and refused by both once revoked.
    let args = [
        "token",
        "create",
        "--store-url",
        db.url(),
        "--client",
        "shared-cli",
        "--scopes",
        "ledgers:read",
    ];
    let token = folio(&args, None).trim().to_owned();
    let path = format!("/v1/ledgers/{ledger}");
    for node in [&first, &second] {
        assert_eq!(node.get_status(&path, &token).await, StatusCode::OK);
    }
    let id = token.split('_').nth(1).expect("folio_<id>_<secret>");
    folio(
        &["token", "revoke", "--store-url", db.url(), "--id", id],
        None,
    );
    for node in [&first, &second] {
        assert_eq!(
            node.get_status(&path, &token).await,
            StatusCode::UNAUTHORIZED
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totp_step_and_failures_shared() {
    let Some(db) = pg::TestDatabase::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (first, second, _) = two_nodes(dir.path(), db.url());
    let ledger = first.create_ledger("shared-factors").await;
    bootstrap_admin(db.url(), ledger, "ann");
    let mut enrolled = sign_in(&first, ledger, "ann").await;
    enrolled.enrol().await.unwrap();

    // Two sessions, one per node, both waiting for a code; the same code goes to both at
    // once. The compare-and-set on the shared last step lets exactly one through.
    let mut on_first = sign_in(&first, ledger, "ann").await;
    let mut on_second = sign_in(&second, ledger, "ann").await;
    on_first.share_authenticator(&enrolled);
    on_second.share_authenticator(&enrolled);
    let (a, b) = tokio::join!(on_first.verify_totp(), on_second.verify_totp());
    assert!(
        a.is_ok() != b.is_ok(),
        "exactly one node accepts the code: {a:?} / {b:?}"
    );
    let refusal = a.err().or(b.err()).unwrap().to_string();
    assert!(refusal.contains("second_factor_failed"), "{refusal}");

    // Wrong passwords on both nodes count in one window: after five, three on the first
    // node and two on the second, the second node makes even the right password wait,
    // although it saw only two failures itself.
    break_glass_admin(db.url(), ledger, "dora");
    for n in 0..5 {
        let node = if n % 2 == 0 { &first } else { &second };
        let refused = OperatorClient::sign_in(&node.base, ledger, "dora", "not her password")
            .await
            .err()
            .expect("a wrong password is refused")
            .to_string();
        assert!(refused.contains("401"), "{refused}");
    }
    let waited = OperatorClient::sign_in(&second.base, ledger, "dora", PASSWORD)
        .await
        .err()
        .expect("the right password waits after five failures")
        .to_string();
    assert!(waited.contains("429"), "{waited}");
    assert!(waited.contains("too_many_attempts"), "{waited}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_mfa_key_refused_at_start() {
    let Some(db) = pg::TestDatabase::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let first = Node::start(&dir.path().join("node-a"), db.url());

    // The second node generates its own MFA key instead of copying the first's.
    let mut other = serve_command(&dir.path().join("node-c"), db.url())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start folio serve");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = other.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            other.kill().unwrap();
            panic!("a node with another MFA key kept running");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = other.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("does not open the operator records"),
        "{stderr}"
    );
    assert!(stderr.contains("mfa.secret_key_file"), "{stderr}");
    drop(first);
}

/// The grants that docs/operations/postgres.md gives the application role on the tables of
/// operators and tokens.
const OPERATOR_GRANTS: &str = "
    GRANT SELECT, INSERT, UPDATE ON operators, sessions, api_tokens TO {role};
    GRANT SELECT, INSERT, UPDATE, DELETE ON recovery_codes, factor_failures, mfa_resets
        TO {role};
    GRANT SELECT, INSERT ON operator_key_check TO {role};
";

/// A login role that is dropped, with its grants, when the test ends.
struct TestRole {
    name: String,
    admin_url: String,
}

impl Drop for TestRole {
    fn drop(&mut self) {
        let sql = format!("DROP OWNED BY {0}; DROP ROLE {0}", self.name);
        let url = self.admin_url.clone();
        // The test's runtime cannot block in a destructor, so a thread with its own runtime
        // runs the statement.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime for dropping a test role");
            runtime.block_on(async move {
                use sqlx::Connection;
                let mut connection = sqlx::PgConnection::connect(&url).await?;
                sqlx::raw_sql(&sql).execute(&mut connection).await?;
                connection.close().await
            })
        })
        .join();
        if let Ok(Err(error)) = dropped {
            eprintln!("could not drop test role {}: {error}", self.name);
        }
    }
}

#[tokio::test]
async fn least_privilege_role_runs_sign_in() {
    use api::auth::{parse_scopes, TokenStore};
    use api::credentials::CredentialsLocation;
    use api::operators::{NewOperator, OperatorStore, SessionRecord};
    use sqlx::Connection;

    let Some(db) = pg::TestDatabase::create().await else {
        return;
    };
    // The owner creates the tables; the application role only uses them.
    let owner = CredentialsLocation::Postgres(db.url().to_owned());
    OperatorStore::open(&owner).await.unwrap();
    TokenStore::open(&owner).await.unwrap();
    // The random end of the database name, because roles are shared by the whole server.
    let name = format!("folio_ops_{}", &db.name()[db.name().len() - 12..]);
    let mut admin = sqlx::PgConnection::connect(db.url()).await.unwrap();
    let grants = format!("CREATE ROLE {name} LOGIN; {}", OPERATOR_GRANTS);
    sqlx::raw_sql(&grants.replace("{role}", &name))
        .execute(&mut admin)
        .await
        .unwrap();
    let _role = TestRole {
        name: name.clone(),
        admin_url: db.url().to_owned(),
    };

    let app_url = db.url().replacen("postgres@", &format!("{name}@"), 1);
    assert_ne!(app_url, db.url(), "the test URL names the postgres user");
    let app = CredentialsLocation::Postgres(app_url.clone());
    let operators = OperatorStore::open(&app)
        .await
        .expect("opens without CREATE");
    let tokens = TokenStore::open(&app).await.expect("opens without CREATE");

    // Every statement of sign-in, enrolment, lockout and reset runs under the grants.
    let new = NewOperator {
        ledger_id: Uuid::now_v7(),
        username: "ann",
        password_hash: "argon2 hash",
        roles: &[domain::operators::Role::Admin],
        created_recorded: false,
        now_micros: 1,
    };
    let id = operators.create(&new).await.unwrap().unwrap();
    assert!(operators.mark_created_recorded(id).await.unwrap());
    assert!(operators.insert_key_check(b"check", 1).await.unwrap());
    assert!(operators.key_check().await.unwrap().is_some());
    assert!(operators.set_pending_totp(id, b"sealed").await.unwrap());
    let codes = [("abcd".to_owned(), "code hash".to_owned())];
    assert_eq!(
        operators.replace_recovery_codes(id, &codes).await.unwrap(),
        1
    );
    assert!(operators.activate(id, 1).await.unwrap());
    assert!(operators.accept_step(id, 7).await.unwrap());
    assert!(operators
        .consume_recovery_code(id, "abcd", 2)
        .await
        .unwrap());
    assert_eq!(operators.record_failure(id, 3, 0).await.unwrap().0, 1);
    operators.lock(id, 10).await.unwrap();
    operators.unlock(id).await.unwrap();
    let session = SessionRecord {
        id: Uuid::now_v7(),
        operator_id: id,
        secret_hash: vec![1; 32],
        binding: vec![2; 32],
        created_at_micros: 4,
        last_seen_at_micros: 4,
        revoked_at_micros: None,
        factor: "password".to_owned(),
        factor_at_micros: 4,
        second_factor_at_micros: None,
    };
    operators.create_session(&session).await.unwrap();
    operators.touch_session(session.id, 5).await.unwrap();
    operators
        .record_second_factor(session.id, "totp", 5)
        .await
        .unwrap();
    assert_eq!(
        operators.revoke_all_sessions(id, 6).await.unwrap(),
        [session.id]
    );
    assert!(operators
        .propose_reset(id, Uuid::now_v7(), "lost phone", 7)
        .await
        .unwrap());
    assert!(operators.apply_reset(id).await.unwrap());

    let token = tokens
        .issue("payroll", &parse_scopes("all").unwrap(), None, 1)
        .await
        .unwrap();
    assert!(tokens.authenticate(&token).await.is_ok());
    assert!(tokens
        .revoke(token.split('_').nth(1).unwrap(), 2)
        .await
        .unwrap());

    // What the role must not do.
    let mut connection = sqlx::PgConnection::connect(&app_url).await.unwrap();
    for statement in [
        "DELETE FROM api_tokens",
        "DELETE FROM operators",
        "UPDATE operator_key_check SET sealed = 'x'",
        "DROP TABLE sessions",
    ] {
        let error = sqlx::raw_sql(statement)
            .execute(&mut connection)
            .await
            .expect_err(statement)
            .to_string();
        assert!(
            error.contains("permission denied") || error.contains("must be owner"),
            "{statement}: {error}"
        );
    }
}
