//! `folio demo`: the main job end to end on the embedded store.
//!
//! It starts a bank simulator over mutual TLS and a Folio server on loopback,
//! and allow-lists the payees of the ABA fixtures. It submits the files and some
//! single payments over HTTP, makes the bank fail and time out, and waits for
//! dispatch to settle. Then it verifies the ledger and prints a summary. The exit
//! code is 0 only if every expectation held and the ledger verifies.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::auth::parse_scopes;
use crate::bank::sim::{BankSim, BankSimConfig, FaultMode};
use crate::config::Config;
use crate::operators::client::OperatorClient;
use crate::state::AppState;
use domain::operators::Role;

/// Arguments of `folio demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory for this run's data; default: a new `folio-data/demo-<id>`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Directory of ABA files to submit (`*.aba`; files named `bad-*` or similar are
    /// expected to be rejected).
    #[arg(long, default_value = "fixtures/aba")]
    fixtures: PathBuf,
    /// Maximum wait for dispatch to settle, in seconds.
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
}

pub(super) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let data_dir = args.data_dir.unwrap_or_else(|| {
        PathBuf::from(format!(
            "folio-data/demo-{}",
            &Uuid::now_v7().simple().to_string()[..12]
        ))
    });
    let report = run_demo(
        &data_dir,
        &args.fixtures,
        Duration::from_secs(args.timeout_secs),
    )
    .await?;
    println!("{}", report.render());
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Observations of one demo run.
#[derive(Debug, Default)]
pub struct DemoReport {
    /// Data directory of the run.
    pub data_dir: PathBuf,
    /// Ledger id.
    pub ledger_id: Option<Uuid>,
    /// ABA files accepted, with their payment counts.
    pub files_accepted: Vec<(String, usize)>,
    /// ABA files rejected, with the server's reason.
    pub files_rejected: Vec<(String, String)>,
    /// Payments by final status.
    pub statuses: Vec<(String, u64)>,
    /// Payments in the dead-letter queue.
    pub dead_lettered: u64,
    /// Receipts recorded.
    pub receipted: u64,
    /// Distinct payments the bank simulator accepted.
    pub bank_distinct_payments: u64,
    /// Calls the bank simulator received.
    pub bank_calls: u64,
    /// Checks made along the way, with their outcome.
    pub checks: Vec<(String, bool)>,
    /// Verification verdicts (store and export file).
    pub verdicts: Vec<String>,
    /// Whether every verdict was intact.
    pub verified: bool,
    /// Path of the exported ledger.
    pub export_path: Option<PathBuf>,
}

impl DemoReport {
    /// Returns whether every check passed and the ledger verified.
    pub fn ok(&self) -> bool {
        self.verified && self.checks.iter().all(|(_, passed)| *passed)
    }

    fn check(&mut self, name: impl Into<String>, passed: bool) {
        self.checks.push((name.into(), passed));
    }

    /// Human-readable summary.
    pub fn render(&self) -> String {
        let mut out = String::from("\n== Folio demo summary ==\n");
        out.push_str(&format!("data directory: {}\n", self.data_dir.display()));
        if let Some(ledger_id) = self.ledger_id {
            out.push_str(&format!("ledger:         {ledger_id}\n"));
        }
        for (file, count) in &self.files_accepted {
            out.push_str(&format!("ABA accepted:   {file}: {count} payments\n"));
        }
        for (file, reason) in &self.files_rejected {
            out.push_str(&format!("ABA rejected:   {file}: {reason}\n"));
        }
        for (status, count) in &self.statuses {
            out.push_str(&format!("payments {status:<14} {count}\n"));
        }
        out.push_str(&format!(
            "receipts: {}, dead-lettered: {}, bank calls: {}, distinct payments at the bank: {}\n",
            self.receipted, self.dead_lettered, self.bank_calls, self.bank_distinct_payments
        ));
        for (name, passed) in &self.checks {
            out.push_str(&format!(
                "[{}] {name}\n",
                if *passed { "ok" } else { "FAILED" }
            ));
        }
        for verdict in &self.verdicts {
            out.push_str(&format!("verify: {verdict}\n"));
        }
        if let (Some(ledger_id), Some(export)) = (self.ledger_id, &self.export_path) {
            out.push_str(&format!(
                "\nTry next:\n  folio verify {}\n  folio verify --data-dir {} --ledger {ledger_id}\n",
                export.display(),
                self.data_dir.display()
            ));
        }
        out.push_str(if self.ok() {
            "\nRESULT: OK\n"
        } else {
            "\nRESULT: FAILED\n"
        });
        out
    }
}

/// Runs the whole demo in `data_dir`.
///
/// # Errors
/// Fails when a component cannot start or the server returns an unexpected response.
pub async fn run_demo(
    data_dir: &Path,
    fixtures: &Path,
    timeout: Duration,
) -> anyhow::Result<DemoReport> {
    ensure!(
        !data_dir.exists(),
        "data directory {} already exists; pass a new --data-dir",
        data_dir.display()
    );
    if let Some(parent) = data_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        crate::files::create_private_dir(parent)?;
    }
    crate::files::create_private_dir(data_dir)?;
    let mut report = DemoReport {
        data_dir: data_dir.to_owned(),
        ..DemoReport::default()
    };

    // Bank simulator over mutual TLS, with certificates made for this run.
    let pki = crate::tls::generate_dev_pki(&data_dir.join("pki"))?;
    let sim = BankSim::start(BankSimConfig::new("127.0.0.1:0", &pki)).await?;
    let config = demo_config(data_dir, &pki, sim.addr().port());

    // Folio itself, in this process, on a loopback port.
    let state = AppState::open(config).await?;
    let running = crate::server::start(Arc::clone(&state), "127.0.0.1:0")?;
    let server_handle = running.handle.clone();
    let server_task = tokio::spawn(running.server);
    let token = state
        .tokens
        .issue(
            "demo-client",
            &parse_scopes("all").map_err(anyhow::Error::msg)?,
            None,
            0,
        )
        .await?;
    let client = DemoClient::new(format!("http://{}", running.addr), token);

    let outcome = drive(&client, &state, &sim, fixtures, timeout, &mut report).await;

    server_handle.stop(true).await;
    let _ = server_task.await;
    state.shutdown().await;
    let stats = sim.ledger_stats();
    report.bank_distinct_payments = stats.distinct_payments;
    report.bank_calls = stats.calls;
    sim.stop().await;
    outcome?;

    report.check(
        "every receipt is one distinct payment at the bank (no double payment)",
        report.bank_distinct_payments == report.receipted,
    );
    verify_and_export(data_dir, &mut report).await?;
    Ok(report)
}

fn demo_config(data_dir: &Path, pki: &crate::tls::PkiPaths, bank_port: u16) -> Config {
    let mut config = Config {
        data_dir: data_dir.to_owned(),
        ..Config::default()
    };
    // The largest amount an ABA record can carry, so the fixtures' edge amounts pass.
    config.payments.max_amount_minor = 9_999_999_999;
    config.bank.url = format!("https://localhost:{bank_port}");
    config.bank.ca_cert = pki.ca_cert.clone();
    config.bank.client_cert = pki.client_cert.clone();
    config.bank.client_key = pki.client_key.clone();
    // Short delays so the demo's failures settle in seconds rather than minutes.
    config.bank.request_timeout_ms = 1_000;
    config.bank.max_attempts = 4;
    config.bank.backoff_base_ms = 50;
    config.bank.backoff_max_ms = 400;
    config.bank.breaker_failure_threshold = 20;
    config.bank.breaker_open_ms = 500;
    // Payees become payable at approval, so the demo's payments flow at once; the
    // production default keeps them waiting 24 hours.
    config.allow_list.cooling_off_seconds = 0;
    // Every demo payee is new and the fixtures pay some payees many times in a minute, so
    // the anomaly rules would hold most payments for a reviewer the demo does not have.
    config.anomalies.enabled = false;
    // Checkpoints let `folio export-bundle` take evidence from the demo's ledger afterwards.
    config.checkpoints.every_events = 100;
    config
}

async fn drive(
    client: &DemoClient,
    state: &AppState,
    sim: &BankSim,
    fixtures: &Path,
    timeout: Duration,
    report: &mut DemoReport,
) -> anyhow::Result<()> {
    let ledger_id = client.create_ledger("demo-payroll").await?;
    report.ledger_id = Some(ledger_id);
    let files = aba_files(fixtures)?;
    let operators = DemoOperators::enrol(client, state, ledger_id, report).await?;
    let payees = allow_list_fixture_payees(&operators, ledger_id, &files, report).await?;
    println!(
        "allow-listed {} payees from {}",
        payees.len(),
        fixtures.display()
    );

    submit_files(client, ledger_id, &files, report).await?;
    let first_payee = *payees.first().context("the fixtures name no payee")?;
    single_payments(client, ledger_id, first_payee, report).await?;
    wait_settled(client, ledger_id, timeout).await?;

    // The bank fails every call: two payments exhaust their attempts and are parked.
    sim.set_fault(FaultMode::Fail, None);
    for amount in [1_001, 1_002] {
        client
            .submit_payment(ledger_id, first_payee, amount, &Uuid::now_v7().to_string())
            .await?;
    }
    wait_settled(client, ledger_id, timeout).await?;
    sim.set_fault(FaultMode::Ok, None);

    // The bank responds once too slowly: the retry carries the same key and pays once.
    sim.set_fault(FaultMode::Slow { delay_ms: 1_500 }, Some(1));
    client
        .submit_payment(ledger_id, first_payee, 1_003, &Uuid::now_v7().to_string())
        .await?;
    wait_settled(client, ledger_id, timeout).await?;
    sim.set_fault(FaultMode::Ok, None);

    collect_statuses(client, ledger_id, report).await
}

fn aba_files(dir: &Path) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let entries = std::fs::read_dir(dir).with_context(|| {
        format!(
            "cannot read fixtures directory {}; pass --fixtures",
            dir.display()
        )
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "aba") {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            files.push((name, std::fs::read(&path)?));
        }
    }
    files.sort();
    ensure!(!files.is_empty(), "no .aba files in {}", dir.display());
    Ok(files)
}

/// The two operators of the demo: an administrator who proposes payees, and an approver
/// the administrator created, who approves them.
struct DemoOperators {
    proposer: OperatorClient,
    approver: OperatorClient,
}

impl DemoOperators {
    /// Bootstraps the administrator as `folio operator create --admin` does, then each
    /// operator signs in and enrols an authenticator app over HTTP.
    async fn enrol(
        client: &DemoClient,
        state: &AppState,
        ledger_id: Uuid,
        report: &mut DemoReport,
    ) -> anyhow::Result<DemoOperators> {
        let admin_password = demo_password()?;
        let now = state.clock.now_micros();
        let admin = crate::operators::create_operator(
            &state.mfa.store,
            &state.mfa.hasher,
            &crate::operators::OperatorRequest {
                ledger_id,
                username: "alice.admin",
                password: &admin_password,
                roles: &[Role::Admin],
                created_recorded: false,
                now_micros: now,
            },
        )
        .await?
        .map_err(anyhow::Error::msg)?;
        let mut proposer =
            OperatorClient::sign_in(&client.base, ledger_id, "alice.admin", &admin_password)
                .await?;
        proposer.enrol().await?;
        ensure!(
            proposer.operator_id == admin,
            "signed in as another operator"
        );

        let approver_password = demo_password()?;
        proposer
            .create_operator(ledger_id, "bob.approver", &approver_password, &["approver"])
            .await?;
        let mut approver =
            OperatorClient::sign_in(&client.base, ledger_id, "bob.approver", &approver_password)
                .await?;
        approver.enrol().await?;
        println!("two operators enrolled TOTP: alice.admin (proposes), bob.approver (approves)");
        let enrolled = proposer.recovery_codes.len() == 10
            && approver.recovery_codes.len() == 10
            && proposer.operator_id != approver.operator_id;
        report.check(
            "two operators enrolled an authenticator app and recovery codes",
            enrolled,
        );
        Ok(DemoOperators { proposer, approver })
    }

    /// Proposes a payee as one operator and approves it as the other.
    async fn add_payee(
        &self,
        ledger_id: Uuid,
        name: &str,
        bsb: &str,
        account: &str,
    ) -> anyhow::Result<(Uuid, Value)> {
        let body = json!({"name": name, "bsb": bsb, "account": account});
        let path = format!("/v1/ledgers/{ledger_id}/payees");
        let proposal = self.proposer.propose(&path, &body).await?;
        let approval = self.approver.approve(ledger_id, &proposal).await?;
        let payee_id = serde_json::from_value(proposal["change"]["payee_id"].clone())?;
        Ok((payee_id, approval))
    }
}

/// Returns a random password for a demo operator (never printed).
fn demo_password() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes)?;
    Ok(format!(
        "demo {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD_NO_PAD, bytes)
    ))
}

/// Adds a payee for every distinct account in the files that parse: the administrator
/// proposes, the approver approves with a fresh second factor.
async fn allow_list_fixture_payees(
    operators: &DemoOperators,
    ledger_id: Uuid,
    files: &[(String, Vec<u8>)],
    report: &mut DemoReport,
) -> anyhow::Result<Vec<Uuid>> {
    let mut seen = std::collections::BTreeSet::new();
    let mut payees = Vec::new();
    for (_, bytes) in files {
        let Ok(file) = domain::aba::parse(bytes) else {
            continue;
        };
        for detail in &file.details {
            let account = (
                detail.bsb.digits().to_owned(),
                detail.account_number.as_str().to_owned(),
            );
            if seen.insert(account.clone()) {
                let name = if detail.account_title.trim().is_empty() {
                    "Payee"
                } else {
                    detail.account_title.trim()
                };
                let (payee_id, approval) = operators
                    .add_payee(ledger_id, name, &account.0, &account.1)
                    .await?;
                if payees.is_empty() {
                    check_self_approval_refused(operators, ledger_id, &approval, report).await?;
                }
                payees.push(payee_id);
            }
        }
    }
    Ok(payees)
}

/// Shows that a proposer cannot approve their own proposal, even with a fresh step-up.
async fn check_self_approval_refused(
    operators: &DemoOperators,
    ledger_id: Uuid,
    approved: &Value,
    report: &mut DemoReport,
) -> anyhow::Result<()> {
    let body = json!({"name": "Self Approved Pty Ltd", "bsb": "062-000", "account": "99887766"});
    let path = format!("/v1/ledgers/{ledger_id}/payees");
    let own = operators.proposer.propose(&path, &body).await?;
    let id = own["proposal_id"].as_str().unwrap_or_default();
    let approval = format!("/v1/ledgers/{ledger_id}/proposals/{id}/approval");
    let hash = json!({"content_hash": own["content_hash"]});
    let (status, refusal) = operators.proposer.post(&approval, &hash).await?;
    let refused = status == StatusCode::UNPROCESSABLE_ENTITY && refusal["code"] == "self_approval";
    report.check(
        "a proposer cannot approve their own payee proposal",
        refused,
    );
    let reason = json!({"reason": "demonstration of the self-approval rule"});
    let rejection = format!("/v1/ledgers/{ledger_id}/proposals/{id}/rejection");
    operators.proposer.post(&rejection, &reason).await?;
    report.check(
        "the first payee was approved by a second operator",
        approved["status"] == "approved",
    );
    Ok(())
}

async fn submit_files(
    client: &DemoClient,
    ledger_id: Uuid,
    files: &[(String, Vec<u8>)],
    report: &mut DemoReport,
) -> anyhow::Result<()> {
    for (name, bytes) in files {
        let expected_valid = domain::aba::parse(bytes).is_ok();
        let (status, body) = client.post_aba(ledger_id, bytes).await?;
        if status.is_success() {
            let count = body["count"].as_u64().unwrap_or(0) as usize;
            report.files_accepted.push((name.clone(), count));
        } else {
            let reason = body["detail"].as_str().unwrap_or("").to_owned();
            report.files_rejected.push((name.clone(), reason));
        }
        report.check(
            format!(
                "{name}: {}",
                if expected_valid {
                    "accepted"
                } else {
                    "rejected whole"
                }
            ),
            status.is_success() == expected_valid,
        );
    }
    Ok(())
}

async fn single_payments(
    client: &DemoClient,
    ledger_id: Uuid,
    payee: Uuid,
    report: &mut DemoReport,
) -> anyhow::Result<()> {
    let key = Uuid::now_v7().to_string();
    let first = client
        .submit_payment(ledger_id, payee, 12_345, &key)
        .await?;
    let retry = client
        .submit_payment(ledger_id, payee, 12_345, &key)
        .await?;
    report.check(
        "a retried POST with the same Idempotency-Key returns the original payment",
        first.0 == StatusCode::CREATED && retry.1["payment_id"] == first.1["payment_id"],
    );
    let changed = client
        .submit_payment(ledger_id, payee, 99_999, &key)
        .await?;
    report.check(
        "the same Idempotency-Key with another amount is rejected, naming the field",
        changed.0 == StatusCode::UNPROCESSABLE_ENTITY
            && changed.1["detail"]
                .as_str()
                .is_some_and(|d| d.contains("amount_minor")),
    );
    let stranger = client
        .submit_payment(ledger_id, Uuid::now_v7(), 500, &Uuid::now_v7().to_string())
        .await?;
    report.check(
        "a payment to a payee not on the allow-list is rejected and recorded",
        stranger.0 == StatusCode::UNPROCESSABLE_ENTITY && stranger.1["position"].is_u64(),
    );
    Ok(())
}

/// Waits until no payment is still waiting for the bank.
async fn wait_settled(
    client: &DemoClient,
    ledger_id: Uuid,
    timeout: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let head = client.ledger_head(ledger_id).await?;
        let open = client.count_open_payments(ledger_id, head).await?;
        if open == 0 {
            return Ok(());
        }
        if started.elapsed() > timeout {
            bail!(
                "{open} payments still waiting for the bank after {} s",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn collect_statuses(
    client: &DemoClient,
    ledger_id: Uuid,
    report: &mut DemoReport,
) -> anyhow::Result<()> {
    let head = client.ledger_head(ledger_id).await?;
    let payments = client.all_payments(ledger_id, head).await?;
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    for payment in &payments {
        let status = payment["status"].as_str().unwrap_or("unknown").to_owned();
        *counts.entry(status).or_default() += 1;
    }
    report.receipted = counts.get("receipted").copied().unwrap_or(0);
    report.statuses = counts.into_iter().collect();
    let dlq = client
        .get(&format!("/v1/ledgers/{ledger_id}/dlq?min_position={head}"))
        .await?;
    report.dead_lettered = dlq["items"]
        .as_array()
        .map_or(0, |items| items.len() as u64);
    report.check(
        "the two payments sent while the bank failed are in the dead-letter queue",
        report.dead_lettered == 2,
    );
    Ok(())
}

async fn verify_and_export(data_dir: &Path, report: &mut DemoReport) -> anyhow::Result<()> {
    let ledger_id = report.ledger_id.context("no ledger was created")?;
    let store_verdicts = super::verify::verify_store(data_dir, Some(ledger_id)).await?;
    let export_path = data_dir.join("ledger.folio");
    super::export::export_ledger(data_dir, ledger_id, &export_path).await?;
    let file_verdict = super::verify::verify_file(&export_path)?;
    report.verified = true;
    for verdict in store_verdicts.iter().chain(std::iter::once(&file_verdict)) {
        report.verified &= verdict.result.is_ok();
        report.verdicts.push(match &verdict.result {
            Ok(summary) => format!(
                "{}: intact, {} events",
                verdict.subject, summary.event_count
            ),
            Err(failure) => format!("{}: BROKEN: {failure}", verdict.subject),
        });
    }
    report.export_path = Some(export_path);
    Ok(())
}

/// A small HTTP client for the demo's calls.
struct DemoClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl DemoClient {
    fn new(base: String, token: String) -> Self {
        DemoClient {
            http: reqwest::Client::new(),
            base,
            token,
        }
    }

    async fn post(
        &self,
        path: &str,
        key: &str,
        body: Value,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header(crate::idempotency::HEADER, key)
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        ensure!(status.is_success(), "GET {path} returned {status}: {body}");
        Ok(body)
    }

    async fn create_ledger(&self, tenant: &str) -> anyhow::Result<Uuid> {
        let (status, body) = self
            .post(
                "/v1/ledgers",
                &Uuid::now_v7().to_string(),
                json!({"tenant": tenant}),
            )
            .await?;
        ensure!(
            status.is_success(),
            "creating the ledger returned {status}: {body}"
        );
        Ok(serde_json::from_value(body["ledger_id"].clone())?)
    }

    async fn post_aba(&self, ledger_id: Uuid, bytes: &[u8]) -> anyhow::Result<(StatusCode, Value)> {
        let response = self
            .http
            .post(format!(
                "{}/v1/ledgers/{ledger_id}/payments/batches",
                self.base
            ))
            .bearer_auth(&self.token)
            .header(crate::idempotency::HEADER, Uuid::now_v7().to_string())
            .header("Content-Type", "text/plain")
            .body(bytes.to_vec())
            .send()
            .await?;
        let status = response.status();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    async fn submit_payment(
        &self,
        ledger_id: Uuid,
        payee: Uuid,
        amount: u64,
        key: &str,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let body = json!({"payee_id": payee, "amount_minor": amount, "currency": "AUD", "reference": "DEMO"});
        self.post(&format!("/v1/ledgers/{ledger_id}/payments"), key, body)
            .await
    }

    async fn ledger_head(&self, ledger_id: Uuid) -> anyhow::Result<u64> {
        let body = self.get(&format!("/v1/ledgers/{ledger_id}")).await?;
        body["head_position"]
            .as_u64()
            .context("ledger response without head_position")
    }

    async fn all_payments(&self, ledger_id: Uuid, min_position: u64) -> anyhow::Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut after: Option<u64> = None;
        loop {
            let cursor = after
                .as_ref()
                .map(|c| format!("&after={c}"))
                .unwrap_or_default();
            let page = self
                .get(&format!("/v1/ledgers/{ledger_id}/payments?limit=500&min_position={min_position}{cursor}"))
                .await?;
            items.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_u64() {
                Some(next) => after = Some(next),
                None => return Ok(items),
            }
        }
    }

    async fn count_open_payments(
        &self,
        ledger_id: Uuid,
        min_position: u64,
    ) -> anyhow::Result<usize> {
        let payments = self.all_payments(ledger_id, min_position).await?;
        let settled = ["receipted", "dead_lettered", "rejected"];
        Ok(payments
            .iter()
            .filter(|p| !settled.contains(&p["status"].as_str().unwrap_or("")))
            .count())
    }
}
