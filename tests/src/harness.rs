//! A full Folio stack for end-to-end tests: a bank simulator over mutual TLS,
//! the embedded store in a temporary directory and the HTTP server on a loopback
//! port, driven with a real HTTP client.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use api::bank::sim::{BankSim, BankSimConfig};
use api::config::Config;
use api::operators::client::OperatorClient;
use api::state::AppState;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::HashMap;
use uuid::Uuid;

/// A running stack; dropped at the end of the test.
pub struct Stack {
    /// Temporary directory holding the data directory and the PKI.
    pub dir: tempfile::TempDir,
    /// Application state (store, read models, dispatcher).
    pub state: Arc<AppState>,
    /// Base URL of the HTTP server.
    pub base: String,
    /// Bank simulator.
    pub sim: BankSim,
    /// Token with every scope.
    pub token: String,
    /// HTTP client.
    pub http: reqwest::Client,
    server: actix_web::dev::ServerHandle,
    /// Proposer and approver of each ledger, enrolled on first use.
    operators: tokio::sync::Mutex<HashMap<Uuid, Arc<LedgerOperators>>>,
}

/// Two enrolled operators of a ledger: an administrator who proposes allow-list changes
/// and an approver the administrator created.
pub struct LedgerOperators {
    /// The administrator, bootstrapped as `folio operator create --admin` does.
    pub proposer: OperatorClient,
    /// An operator with the approver role.
    pub approver: OperatorClient,
}

/// Password of the harness's operators; long enough and not a known pattern.
pub const OPERATOR_PASSWORD: &str = "harness violet staple 42";

impl Stack {
    /// Starts a stack whose bank retries quickly, so failures settle in about a second.
    pub async fn start() -> anyhow::Result<Stack> {
        Self::start_with(|_| {}).await
    }

    /// Starts a stack after letting `adjust` change the configuration.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> anyhow::Result<Stack> {
        Self::start_with_clock(adjust, Arc::new(domain::clock::SystemClock)).await
    }

    /// Starts a stack over a given time source (which must never go backwards).
    pub async fn start_with_clock(
        adjust: impl FnOnce(&mut Config),
        clock: Arc<dyn domain::clock::Clock>,
    ) -> anyhow::Result<Stack> {
        let dir = tempfile::tempdir()?;
        let pki = api::tls::generate_dev_pki(&dir.path().join("pki"))?;
        let sim = BankSim::start(BankSimConfig::new("127.0.0.1:0", &pki)).await?;
        let mut config = Config {
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        // The largest amount an ABA record can carry, so the fixtures' edge amounts pass.
        config.payments.max_amount_minor = 9_999_999_999;
        config.bank.url = format!("https://localhost:{}", sim.addr().port());
        config.bank.ca_cert = pki.ca_cert.clone();
        config.bank.client_cert = pki.client_cert.clone();
        config.bank.client_key = pki.client_key.clone();
        config.bank.request_timeout_ms = 500;
        config.bank.max_attempts = 3;
        config.bank.backoff_base_ms = 20;
        config.bank.backoff_max_ms = 100;
        config.bank.breaker_failure_threshold = 50;
        config.bank.breaker_open_ms = 200;
        // Cheap Argon2 keeps sign-ins fast, and approved payees are payable at once unless
        // a test sets a cooling-off period.
        config.mfa.test_hash_cost = true;
        config.allow_list.cooling_off_seconds = 0;
        // Anomaly rules hold payments (a new payee, a night-time run); tests that want
        // them turn them on.
        config.anomalies.enabled = false;
        adjust(&mut config);

        let state = AppState::open_with_clock(config, clock).await?;
        let running = api::server::start(Arc::clone(&state), "127.0.0.1:0")?;
        let server = running.handle.clone();
        tokio::spawn(running.server);
        tokio::spawn(api::key_rotation::run_rewrap_job(Arc::clone(&state)));
        let scopes = api::auth::parse_scopes("all").map_err(anyhow::Error::msg)?;
        let token = state.tokens.issue("e2e-client", &scopes, None, 0).await?;
        Ok(Stack {
            dir,
            state,
            base: format!("http://{}", running.addr),
            sim,
            token,
            http: reqwest::Client::new(),
            server,
            operators: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Data directory of the embedded store.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// POSTs JSON with an idempotency key.
    pub async fn post(
        &self,
        path: &str,
        key: &str,
        body: &Value,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await?;
        let status = response.status();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// POSTs raw bytes (an ABA file) with an idempotency key.
    pub async fn post_bytes(
        &self,
        path: &str,
        key: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("Idempotency-Key", key)
            .header("Content-Type", "text/plain")
            .body(body)
            .send()
            .await?;
        let status = response.status();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// GETs JSON.
    pub async fn get(&self, path: &str) -> anyhow::Result<(StatusCode, Value)> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?;
        let status = response.status();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// Creates a ledger and returns its id.
    pub async fn create_ledger(&self, tenant: &str) -> anyhow::Result<Uuid> {
        let (status, body) = self
            .post(
                "/v1/ledgers",
                &Uuid::now_v7().to_string(),
                &json!({"tenant": tenant}),
            )
            .await?;
        ensure!(
            status == StatusCode::CREATED,
            "create ledger: {status} {body}"
        );
        Ok(serde_json::from_value(body["ledger_id"].clone())?)
    }

    /// Bootstraps an administrator on `ledger` as `folio operator create --admin` does,
    /// signs them in and enrols their authenticator app over HTTP.
    pub async fn bootstrap_admin(
        &self,
        ledger: Uuid,
        username: &str,
    ) -> anyhow::Result<OperatorClient> {
        let now = domain::clock::Clock::now_micros(&domain::clock::SystemClock);
        let mfa = &self.state.mfa;
        let roles = [domain::operators::Role::Admin];
        api::operators::create_operator(
            &mfa.store,
            &mfa.hasher,
            &api::operators::OperatorRequest {
                ledger_id: ledger,
                username,
                password: OPERATOR_PASSWORD,
                roles: &roles,
                created_recorded: false,
                now_micros: now,
            },
        )
        .await?
        .map_err(anyhow::Error::msg)?;
        let mut admin =
            OperatorClient::sign_in(&self.base, ledger, username, OPERATOR_PASSWORD).await?;
        admin.enrol().await?;
        Ok(admin)
    }

    /// Creates an operator with `roles` through `admin`, then signs in and enrols them.
    pub async fn enrolled_operator(
        &self,
        admin: &OperatorClient,
        ledger: Uuid,
        username: &str,
        roles: &[&str],
    ) -> anyhow::Result<OperatorClient> {
        admin
            .create_operator(ledger, username, OPERATOR_PASSWORD, roles)
            .await?;
        let mut operator =
            OperatorClient::sign_in(&self.base, ledger, username, OPERATOR_PASSWORD).await?;
        operator.enrol().await?;
        Ok(operator)
    }

    /// Returns the proposer and approver of a ledger, enrolling them on first use.
    pub async fn operators(&self, ledger: Uuid) -> anyhow::Result<Arc<LedgerOperators>> {
        let mut operators = self.operators.lock().await;
        if let Some(pair) = operators.get(&ledger) {
            return Ok(Arc::clone(pair));
        }
        let proposer = self.bootstrap_admin(ledger, "harness.admin").await?;
        let approver = self
            .enrolled_operator(&proposer, ledger, "harness.approver", &["approver"])
            .await?;
        let pair = Arc::new(LedgerOperators { proposer, approver });
        operators.insert(ledger, Arc::clone(&pair));
        Ok(pair)
    }

    /// Proposes a change at `path` as the ledger's administrator and approves it as the
    /// approver; returns the proposal.
    pub async fn propose_and_approve(
        &self,
        ledger: Uuid,
        path: &str,
        body: &Value,
    ) -> anyhow::Result<Value> {
        let operators = self.operators(ledger).await?;
        let proposal = operators.proposer.propose(path, body).await?;
        operators.approver.approve(ledger, &proposal).await?;
        Ok(proposal)
    }

    /// Adds a BSB payee through a proposal and a second operator's approval, and returns
    /// its id.
    pub async fn add_payee(
        &self,
        ledger: Uuid,
        name: &str,
        bsb: &str,
        account: &str,
    ) -> anyhow::Result<Uuid> {
        let body = json!({"name": name, "bsb": bsb, "account": account});
        let path = format!("/v1/ledgers/{ledger}/payees");
        let proposal = self.propose_and_approve(ledger, &path, &body).await?;
        Ok(serde_json::from_value(
            proposal["change"]["payee_id"].clone(),
        )?)
    }

    /// Removes a payee through a proposal and a second operator's approval.
    pub async fn remove_payee(
        &self,
        ledger: Uuid,
        payee: Uuid,
        reason: &str,
    ) -> anyhow::Result<()> {
        let path = format!("/v1/ledgers/{ledger}/payees/{payee}/removal");
        self.propose_and_approve(ledger, &path, &json!({"reason": reason}))
            .await?;
        Ok(())
    }

    /// Submits a payment with a given key.
    pub async fn pay(
        &self,
        ledger: Uuid,
        payee: Uuid,
        amount: Value,
        key: &str,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let body = json!({"payee_id": payee, "amount_minor": amount, "currency": "AUD", "reference": "E2E"});
        self.post(&format!("/v1/ledgers/{ledger}/payments"), key, &body)
            .await
    }

    /// Polls a payment until its status is one of `wanted`.
    pub async fn wait_status(
        &self,
        ledger: Uuid,
        payment: &str,
        wanted: &[&str],
    ) -> anyhow::Result<Value> {
        let started = Instant::now();
        loop {
            let (status, body) = self
                .get(&format!("/v1/ledgers/{ledger}/payments/{payment}"))
                .await?;
            if status.is_success() && wanted.contains(&body["status"].as_str().unwrap_or("")) {
                return Ok(body);
            }
            ensure!(
                started.elapsed() < Duration::from_secs(30),
                "payment {payment} stuck: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the server and every worker.
    pub async fn stop(self) -> anyhow::Result<tempfile::TempDir> {
        self.server.stop(true).await;
        self.state.shutdown().await;
        self.sim.stop().await;
        Ok(self.dir)
    }
}

/// Path of a file under the repository's `fixtures/`.
pub fn fixture(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("fixtures")
        .join(relative)
}

/// Reads a fixture file.
pub fn read_fixture(relative: &str) -> anyhow::Result<Vec<u8>> {
    let path = fixture(relative);
    std::fs::read(&path).with_context(|| format!("cannot read fixture {}", path.display()))
}
