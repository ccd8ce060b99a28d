//! An HTTP client that acts as one operator: signs in, enrols an authenticator app from
//! the secret the server returns, answers TOTP challenges and sends commands. The demo
//! and the end-to-end tests drive the API with it, as a console would.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context};
use domain::mfa::totp::{step_at, DIGITS, STEP_SECONDS, WINDOW_STEPS};
use domain::mfa::TotpSecret;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

/// User-Agent the client sends; the session is bound to it.
const USER_AGENT: &str = concat!("folio-operator-client/", env!("CARGO_PKG_VERSION"));

/// A signed-in operator.
pub struct OperatorClient {
    http: reqwest::Client,
    base: String,
    token: String,
    secret: Option<TotpSecret>,
    last_step: Option<u64>,
    /// Operator id.
    pub operator_id: Uuid,
    /// Session id.
    pub session_id: Uuid,
    /// Recovery codes downloaded at enrolment.
    pub recovery_codes: Vec<String>,
}

impl OperatorClient {
    /// Signs in with a password. The session still needs a second factor: call
    /// [`OperatorClient::enrol`] the first time, [`OperatorClient::verify_totp`] later.
    ///
    /// # Errors
    /// Fails on a transport error or a refused sign-in, with the server's problem.
    pub async fn sign_in(
        base: &str,
        ledger_id: Uuid,
        username: &str,
        password: &str,
    ) -> anyhow::Result<OperatorClient> {
        let http = reqwest::Client::builder().user_agent(USER_AGENT).build()?;
        let body = json!({"ledger_id": ledger_id, "username": username, "password": password});
        let response = http
            .post(format!("{base}/v1/sessions"))
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        ensure!(
            status == StatusCode::CREATED,
            "sign-in of {username}: {status} {body}"
        );
        Ok(OperatorClient {
            http,
            base: base.to_owned(),
            token: field(&body, "session_token")?,
            secret: None,
            last_step: None,
            operator_id: field(&body, "operator_id")?.parse()?,
            session_id: field(&body, "session_id")?.parse()?,
            recovery_codes: Vec::new(),
        })
    }

    /// Uses a known TOTP secret (base32) for later codes, as an authenticator app would.
    ///
    /// # Errors
    /// Fails if the secret is not base32 or too short.
    pub fn set_secret(&mut self, base32: &str) -> anyhow::Result<()> {
        let bytes = domain::mfa::base32::decode(base32).context("TOTP secret is not base32")?;
        self.secret = Some(TotpSecret::from_bytes(bytes)?);
        Ok(())
    }

    /// Uses the authenticator app of `other`, a session of the same operator: its secret,
    /// and the last step it used, so the next code is one the server has not seen.
    pub fn share_authenticator(&mut self, other: &OperatorClient) {
        self.secret = other.secret.clone();
        self.last_step = other.last_step;
    }

    /// Sends later requests to `base`, another node of the same cluster.
    pub fn move_to(&mut self, base: &str) {
        base.clone_into(&mut self.base);
    }

    /// Returns the enrolled TOTP secret in base32, to sign in again later.
    pub fn secret_base32(&self) -> Option<String> {
        self.secret
            .as_ref()
            .map(|s| s.to_base32().as_str().to_owned())
    }

    /// Enrols: starts TOTP, downloads the recovery codes, and activates with a current
    /// code and the first recovery code. The session then has a fresh second factor.
    ///
    /// # Errors
    /// Fails when a step is refused.
    pub async fn enrol(&mut self) -> anyhow::Result<()> {
        let (status, started) = self
            .post_json("/v1/operators/me/totp", None, &json!({}))
            .await?;
        ensure!(
            status == StatusCode::CREATED,
            "start enrolment: {status} {started}"
        );
        self.set_secret(&field(&started, "secret_base32")?)?;

        let response = self
            .request(reqwest::Method::POST, "/v1/operators/me/recovery-codes")
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        ensure!(
            status == StatusCode::OK,
            "download recovery codes: {status} {text}"
        );
        self.recovery_codes = text
            .lines()
            .filter(|line| line.len() == 24 && line.matches('-').count() == 4)
            .map(str::to_owned)
            .collect();
        let first = self
            .recovery_codes
            .first()
            .context("no recovery codes in the file")?
            .clone();

        let code = self.next_code().await?;
        let body = json!({"totp_code": code, "recovery_code": first});
        let (status, body) = self
            .post_json("/v1/operators/me/totp/activation", None, &body)
            .await?;
        ensure!(
            status == StatusCode::OK,
            "activate enrolment: {status} {body}"
        );
        Ok(())
    }

    /// Passes a TOTP code in the session (completes sign-in or refreshes step-up).
    ///
    /// # Errors
    /// Fails when the code is refused.
    pub async fn verify_totp(&mut self) -> anyhow::Result<()> {
        let code = self.next_code().await?;
        let (status, body) = self
            .post_json(
                "/v1/sessions/current/verification",
                None,
                &json!({"totp_code": code}),
            )
            .await?;
        ensure!(status == StatusCode::OK, "verification: {status} {body}");
        Ok(())
    }

    /// Returns a code for a step not used yet. The server accepts one step ahead, so two
    /// codes in one 30-second step need no wait; a third waits for the next step.
    async fn next_code(&mut self) -> anyhow::Result<String> {
        let Some(secret) = &self.secret else {
            bail!("no TOTP secret: enrol first or call set_secret");
        };
        loop {
            let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
            let current = step_at(now);
            let step = self
                .last_step
                .map_or(current, |last| (last + 1).max(current));
            if step <= current + WINDOW_STEPS {
                self.last_step = Some(step);
                return Ok(secret.code_at_step(step, DIGITS).as_str().to_owned());
            }
            let wait = STEP_SECONDS - now % STEP_SECONDS;
            tokio::time::sleep(Duration::from_secs(wait)).await;
        }
    }

    /// Returns the code of the enrolled secret for a Unix time, as an app would show it.
    pub fn code_at(&self, unix_seconds: u64) -> Option<String> {
        let secret = self.secret.as_ref()?;
        Some(secret.code_at_time(unix_seconds).as_str().to_owned())
    }

    /// Sends a verification body as given (a code, a recovery code, or something
    /// malformed) and returns the status and body.
    ///
    /// # Errors
    /// Transport errors only.
    pub async fn verification(&self, body: &Value) -> anyhow::Result<(StatusCode, Value)> {
        self.post_json("/v1/sessions/current/verification", None, body)
            .await
    }

    /// Starts a request to `path` with this session's token, for calls the helpers do
    /// not cover.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// POSTs JSON, with an idempotency key when given.
    ///
    /// # Errors
    /// Transport errors only; the status is returned.
    pub async fn post_json(
        &self,
        path: &str,
        key: Option<&str>,
        body: &Value,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut request = self.request(reqwest::Method::POST, path).json(body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await?;
        let status = response.status();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// POSTs JSON with a new idempotency key.
    ///
    /// # Errors
    /// Transport errors only.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<(StatusCode, Value)> {
        let key = Uuid::now_v7().to_string();
        self.post_json(path, Some(&key), body).await
    }

    /// GETs JSON.
    ///
    /// # Errors
    /// Transport errors only.
    pub async fn get(&self, path: &str) -> anyhow::Result<(StatusCode, Value)> {
        let response = self.request(reqwest::Method::GET, path).send().await?;
        let status = response.status();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// GETs JSON with another User-Agent, as a different client holding the token would.
    ///
    /// # Errors
    /// Transport errors only.
    pub async fn get_as(
        &self,
        user_agent: &str,
        path: &str,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let response = self
            .request(reqwest::Method::GET, path)
            .header(reqwest::header::USER_AGENT, user_agent)
            .send()
            .await?;
        let status = response.status();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// Creates another operator (this client must be an administrator with step-up).
    ///
    /// # Errors
    /// Fails when refused.
    pub async fn create_operator(
        &self,
        ledger_id: Uuid,
        username: &str,
        password: &str,
        roles: &[&str],
    ) -> anyhow::Result<Uuid> {
        let body = json!({"username": username, "password": password, "roles": roles});
        let (status, body) = self
            .post(&format!("/v1/ledgers/{ledger_id}/operators"), &body)
            .await?;
        ensure!(
            status == StatusCode::CREATED,
            "create operator {username}: {status} {body}"
        );
        Ok(field(&body, "operator_id")?.parse()?)
    }

    /// Proposes a change (the JSON of `POST .../payees` or similar) and returns the
    /// proposal's body.
    ///
    /// # Errors
    /// Fails when refused.
    pub async fn propose(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let (status, body) = self.post(path, body).await?;
        ensure!(
            status == StatusCode::ACCEPTED,
            "proposal at {path}: {status} {body}"
        );
        Ok(body)
    }

    /// Approves a proposal by its id and content hash, returning the approval's body.
    ///
    /// # Errors
    /// Fails when refused.
    pub async fn approve(&self, ledger_id: Uuid, proposal: &Value) -> anyhow::Result<Value> {
        let id = field(proposal, "proposal_id")?;
        let hash = field(proposal, "content_hash")?;
        let path = format!("/v1/ledgers/{ledger_id}/proposals/{id}/approval");
        let (status, body) = self.post(&path, &json!({"content_hash": hash})).await?;
        ensure!(
            status == StatusCode::OK,
            "approval of {id}: {status} {body}"
        );
        Ok(body)
    }
}

fn field(body: &Value, name: &str) -> anyhow::Result<String> {
    body[name]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("response has no {name}: {body}"))
}
