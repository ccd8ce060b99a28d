//! A full Folio stack for end-to-end tests: a bank simulator over mutual TLS,
//! the embedded store in a temporary directory and the HTTP server on a loopback
//! port, driven with a real HTTP client.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use api::bank::sim::{BankSim, BankSimConfig};
use api::config::Config;
use api::state::AppState;
use reqwest::StatusCode;
use serde_json::{json, Value};
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
}

impl Stack {
    /// Starts a stack whose bank retries quickly, so failures settle in about a second.
    pub async fn start() -> anyhow::Result<Stack> {
        Self::start_with(|_| {}).await
    }

    /// Starts a stack after letting `adjust` change the configuration.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> anyhow::Result<Stack> {
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
        adjust(&mut config);

        let state = AppState::open(config).await?;
        let running = api::server::start(Arc::clone(&state), "127.0.0.1:0")?;
        let server = running.handle.clone();
        tokio::spawn(running.server);
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

    /// Adds a BSB payee and returns its id.
    pub async fn add_payee(
        &self,
        ledger: Uuid,
        name: &str,
        bsb: &str,
        account: &str,
    ) -> anyhow::Result<Uuid> {
        let body = json!({"name": name, "bsb": bsb, "account": account});
        let (status, body) = self
            .post(
                &format!("/v1/ledgers/{ledger}/payees"),
                &Uuid::now_v7().to_string(),
                &body,
            )
            .await?;
        ensure!(status == StatusCode::CREATED, "add payee: {status} {body}");
        Ok(serde_json::from_value(body["payee_id"].clone())?)
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
