//! Bank dispatch against the real simulator over mutual TLS on loopback, with certificates
//! generated per test: the TLS refusals, retries, dead-lettering, the timeout that must not
//! pay twice, and the circuit breaker's probe.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::bank::sim::{BankSim, BankSimConfig, FaultMode, SimTlsVersions};
use api::bank::{
    client_tls_config, dispatch_payment, BankAdapter, BankError, BankMetrics, BankPaymentRequest,
    BankReceipt, BreakerConfig, BreakerState, CircuitBreaker, DispatchOutcome, DispatchRecorder,
    HttpsBankAdapter, HttpsBankConfig, RetryPolicy,
};
use api::secrets::{Secrets, SecretsConfig};
use api::tls::{self, PkiPaths};
use async_trait::async_trait;
use domain::events::PayeeAccount;
use rustls::crypto::ring;
use rustls::version::TLS12;
use rustls::ClientConfig;
use uuid::Uuid;

/// A simulator on a free loopback port with its own PKI.
struct Bank {
    _dir: tempfile::TempDir,
    pki: PkiPaths,
    sim: BankSim,
}

async fn start_bank(configure: impl FnOnce(&mut BankSimConfig)) -> Bank {
    let dir = tempfile::tempdir().unwrap();
    let pki = tls::generate_dev_pki(&dir.path().join("pki")).unwrap();
    let mut config = BankSimConfig::new("127.0.0.1:0", &pki);
    configure(&mut config);
    let sim = BankSim::start(config).await.unwrap();
    Bank {
        _dir: dir,
        pki,
        sim,
    }
}

fn https_config(bank: &Bank, host: &str) -> HttpsBankConfig {
    let mut config = HttpsBankConfig::new(
        format!("https://{host}:{}", bank.sim.addr().port()),
        &bank.pki.ca_cert,
        &bank.pki.client_cert,
        &bank.pki.client_key,
    );
    config.request_timeout = Duration::from_secs(5);
    config
}

fn adapter(config: &HttpsBankConfig) -> HttpsBankAdapter {
    HttpsBankAdapter::new(config, Arc::new(BankMetrics::new())).unwrap()
}

fn payment(key: &str, amount_minor: u64) -> BankPaymentRequest {
    BankPaymentRequest {
        idempotency_key: key.to_owned(),
        amount_minor,
        currency: "AUD".to_owned(),
        account: PayeeAccount::Bsb {
            bsb: "062000".to_owned(),
            account: "00012345".to_owned(),
        },
        payee_name: "Harbour Payroll Pty Ltd".to_owned(),
        reference: "PAY 2026-01".to_owned(),
    }
}

fn fast_policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(40),
    }
}

fn breaker(failure_threshold: u32, cool_down: Duration) -> CircuitBreaker {
    let config = BreakerConfig {
        failure_threshold,
        cool_down,
    };
    CircuitBreaker::new(config, Arc::new(BankMetrics::new()))
}

/// Posts one payment through a reqwest client on a hand-made TLS configuration, for clients
/// the adapter cannot be configured as.
async fn raw_post(bank: &Bank, tls: ClientConfig) -> Result<reqwest::Response, reqwest::Error> {
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/v1/payments", bank.sim.addr().port());
    client
        .post(url)
        .header("Idempotency-Key", "raw-1")
        .json(&payment("raw-1", 100))
        .send()
        .await
}

fn client_builder_tls13() -> rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier> {
    ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
}

/// A recorder that keeps one line per call, in order.
#[derive(Default)]
struct Log(Mutex<Vec<String>>);

impl Log {
    fn push(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }

    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    fn count(&self, prefix: &str) -> usize {
        self.lines()
            .iter()
            .filter(|line| line.starts_with(prefix))
            .count()
    }
}

#[async_trait]
impl DispatchRecorder for Log {
    async fn attempted(&self, _: Uuid, attempt: u32) -> anyhow::Result<()> {
        self.push(format!("attempted {attempt}"));
        Ok(())
    }

    async fn failed(
        &self,
        _: Uuid,
        attempt: u32,
        error: &BankError,
        will_retry: bool,
        retry_in: Option<Duration>,
    ) -> anyhow::Result<()> {
        assert_eq!(will_retry, retry_in.is_some());
        self.push(format!(
            "failed {attempt} {} retry={will_retry}",
            error.kind()
        ));
        Ok(())
    }

    async fn receipted(&self, _: Uuid, attempt: u32, receipt: &BankReceipt) -> anyhow::Result<()> {
        self.push(format!("receipted {attempt} {}", receipt.status));
        Ok(())
    }

    async fn dead_lettered(&self, _: Uuid, attempts: u32, error: &BankError) -> anyhow::Result<()> {
        self.push(format!("dead_lettered {attempts} {}", error.kind()));
        Ok(())
    }

    async fn breaker_changed(&self, from: &str, to: &str, _: &str) -> anyhow::Result<()> {
        self.push(format!("breaker {from}->{to}"));
        Ok(())
    }
}

/// Wraps the real adapter and keeps the idempotency key of every call.
struct KeyTap<'a> {
    inner: &'a HttpsBankAdapter,
    keys: Mutex<Vec<String>>,
}

#[async_trait]
impl BankAdapter for KeyTap<'_> {
    async fn submit(&self, request: &BankPaymentRequest) -> Result<BankReceipt, BankError> {
        self.keys
            .lock()
            .unwrap()
            .push(request.idempotency_key.clone());
        self.inner.submit(request).await
    }
}

#[tokio::test]
async fn receipt_over_mutual_tls() {
    let bank = start_bank(|_| {}).await;
    let metrics = Arc::new(BankMetrics::new());
    let adapter =
        HttpsBankAdapter::new(&https_config(&bank, "localhost"), metrics.clone()).unwrap();

    let first = adapter.submit(&payment("key-1", 12_345)).await.unwrap();
    assert_eq!(first.status, 201);
    assert!(
        first.bank_reference.starts_with("SIM-"),
        "{}",
        first.bank_reference
    );
    let body: serde_json::Value = serde_json::from_slice(&first.raw_body).unwrap();
    assert_eq!(body["status"], "accepted");

    let repeat = adapter.submit(&payment("key-1", 12_345)).await.unwrap();
    assert_eq!(repeat.status, 200);
    assert_eq!(repeat.bank_reference, first.bank_reference);

    let conflict = adapter.submit(&payment("key-1", 99)).await.unwrap_err();
    assert_eq!(
        conflict,
        BankError::Http4xx {
            status: 409,
            detail: "idempotency key reused with a different body".to_owned(),
        }
    );
    assert!(!conflict.is_retryable());

    let stats = bank.sim.ledger_stats();
    assert_eq!(stats.distinct_payments, 1);
    assert_eq!(stats.calls, 3);
    assert_eq!(stats.payments[0].idempotency_key, "key-1");
    assert_eq!(metrics.attempts("ok"), 2);
    assert_eq!(metrics.attempts("http_4xx"), 1);
    bank.sim.stop().await;
}

#[tokio::test]
async fn invalid_payment_is_final_400() {
    let bank = start_bank(|_| {}).await;
    let adapter = adapter(&https_config(&bank, "127.0.0.1"));
    let mut request = payment("key-bad", 100);
    request.account = PayeeAccount::Bsb {
        bsb: "06200".to_owned(),
        account: "1".to_owned(),
    };

    let error = adapter.submit(&request).await.unwrap_err();
    assert_eq!(
        error,
        BankError::Http4xx {
            status: 400,
            detail: "invalid bsb: expected six digits".to_owned(),
        }
    );
    assert!(!error.is_retryable());
    assert_eq!(bank.sim.ledger_stats().distinct_payments, 0);
    bank.sim.stop().await;
}

#[tokio::test]
async fn client_without_certificate_rejected() {
    let bank = start_bank(|_| {}).await;
    let roots = tls::load_root_store(&bank.pki.ca_cert).unwrap();
    let tls = client_builder_tls13()
        .with_root_certificates(roots)
        .with_no_client_auth();

    let result = raw_post(&bank, tls).await;
    assert!(
        result.is_err(),
        "the bank answered a client with no certificate: {result:?}"
    );
    assert_eq!(bank.sim.ledger_stats().calls, 0);
    bank.sim.stop().await;
}

#[tokio::test]
async fn client_from_other_ca_rejected() {
    let bank = start_bank(|_| {}).await;
    let other_dir = tempfile::tempdir().unwrap();
    let other = tls::generate_dev_pki(other_dir.path()).unwrap();
    let mut config = https_config(&bank, "localhost");
    config.client_cert = other.client_cert;
    config.client_key = other.client_key;

    let error = adapter(&config)
        .submit(&payment("key-1", 100))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "tls", "{error}");
    assert_eq!(bank.sim.ledger_stats().calls, 0);
    bank.sim.stop().await;
}

/// Writes a certificate or key file by renaming a staged copy, as a secret mount does.
fn replace_file(from: &std::path::Path, to: &std::path::Path) {
    let staged = to.with_extension("new");
    std::fs::copy(from, &staged).unwrap();
    std::fs::rename(&staged, to).unwrap();
}

/// The bank accepts only the new client certificate: dispatch fails on the old pair and
/// succeeds, in the same adapter, once the new pair is in the files. Past the stale limit
/// of a failing provider, dispatch stops with a `tls` error naming the secret.
#[tokio::test]
async fn rotated_client_certificate_used_without_restart() {
    let bank = start_bank(|_| {}).await;
    let old_dir = tempfile::tempdir().unwrap();
    let old = tls::generate_dev_pki(old_dir.path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("client.pem"), dir.path().join("client.key"));
    replace_file(&old.client_cert, &cert);
    replace_file(&old.client_key, &key);
    let mut config = https_config(&bank, "localhost");
    config.client_cert = format!("file:{}", cert.display()).into();
    config.client_key = format!("file:{}", key.display()).into();
    let secrets = Secrets::new(SecretsConfig {
        ttl_seconds: 0,
        max_stale_seconds: 1,
        ..SecretsConfig::default()
    });
    let secrets = Arc::new(secrets.unwrap());
    let metrics = Arc::new(BankMetrics::new());
    let adapter = HttpsBankAdapter::with_secrets(&config, metrics, secrets)
        .await
        .unwrap();

    let error = adapter.submit(&payment("rotate-1", 100)).await.unwrap_err();
    assert_eq!(error.kind(), "tls", "{error}");
    assert_eq!(bank.sim.ledger_stats().calls, 0);

    replace_file(&bank.pki.client_cert, &cert);
    replace_file(&bank.pki.client_key, &key);
    let receipt = adapter.submit(&payment("rotate-1", 100)).await.unwrap();
    assert_eq!(receipt.status, 201);
    assert_eq!(bank.sim.ledger_stats().distinct_payments, 1);

    // The files go away: the last pair is used, then refused once stale.
    std::fs::remove_file(&cert).unwrap();
    let receipt = adapter.submit(&payment("rotate-2", 100)).await.unwrap();
    assert_eq!(receipt.status, 201);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let error = adapter.submit(&payment("rotate-3", 100)).await.unwrap_err();
    assert_eq!(error.kind(), "tls", "{error}");
    assert!(error.to_string().contains("stale"), "{error}");
    let key_pem = std::fs::read_to_string(&bank.pki.client_key).unwrap();
    assert!(!format!("{error} {error:?} {adapter:?}").contains(key_pem.trim()));
    assert_eq!(bank.sim.ledger_stats().distinct_payments, 2);
    bank.sim.stop().await;
}

#[tokio::test]
async fn server_from_other_ca_rejected() {
    let bank = start_bank(|_| {}).await;
    let other_dir = tempfile::tempdir().unwrap();
    let other = tls::generate_dev_pki(other_dir.path()).unwrap();
    let mut config = https_config(&bank, "localhost");
    config.ca_cert = other.ca_cert;

    let error = adapter(&config)
        .submit(&payment("key-1", 100))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "tls", "{error}");
    assert!(
        error.to_string().contains("invalid peer certificate"),
        "{error}"
    );
    bank.sim.stop().await;
}

#[tokio::test]
async fn hostname_mismatch_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let pki = tls::generate_dev_pki_for(dir.path(), &["bank.invalid"]).unwrap();
    let sim = BankSim::start(BankSimConfig::new("127.0.0.1:0", &pki))
        .await
        .unwrap();
    let bank = Bank {
        _dir: dir,
        pki,
        sim,
    };

    let error = adapter(&https_config(&bank, "127.0.0.1"))
        .submit(&payment("k", 1))
        .await;
    let error = error.unwrap_err();
    assert_eq!(error.kind(), "tls", "{error}");
    assert!(error.to_string().contains("not valid for name"), "{error}");
    assert_eq!(bank.sim.ledger_stats().calls, 0);
    bank.sim.stop().await;
}

fn tls12_only_client(pki: &PkiPaths) -> ClientConfig {
    ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_protocol_versions(&[&TLS12])
        .unwrap()
        .with_root_certificates(tls::load_root_store(&pki.ca_cert).unwrap())
        .with_client_auth_cert(
            tls::load_certs(&pki.client_cert).unwrap(),
            tls::load_private_key(&pki.client_key).unwrap(),
        )
        .unwrap()
}

#[tokio::test]
async fn tls12_client_rejected_by_default() {
    let bank = start_bank(|_| {}).await;
    let result = raw_post(&bank, tls12_only_client(&bank.pki)).await;
    assert!(
        result.is_err(),
        "a TLS 1.2-only client was served: {result:?}"
    );
    assert_eq!(bank.sim.ledger_stats().calls, 0);
    bank.sim.stop().await;

    // The same client is served once the bank opts into TLS 1.2, so the version was the cause.
    let lenient = start_bank(|config| config.tls_versions = SimTlsVersions::Tls13And12).await;
    let response = raw_post(&lenient, tls12_only_client(&lenient.pki))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    lenient.sim.stop().await;
}

#[tokio::test]
async fn tls12_only_bank_rejected_by_default() {
    let bank = start_bank(|config| config.tls_versions = SimTlsVersions::Tls12Only).await;
    let mut config = https_config(&bank, "localhost");

    let error = adapter(&config)
        .submit(&payment("key-12", 100))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "tls", "{error}");
    assert_eq!(bank.sim.ledger_stats().calls, 0);

    config.allow_tls12 = true;
    let receipt = adapter(&config)
        .submit(&payment("key-12", 100))
        .await
        .unwrap();
    assert_eq!(receipt.status, 201);
    bank.sim.stop().await;
}

#[tokio::test]
async fn retries_then_receipt() {
    let bank = start_bank(|config| config.fail_first_n = 2).await;
    let adapter = adapter(&https_config(&bank, "localhost"));
    let (breaker, log) = (breaker(10, Duration::from_secs(30)), Log::default());

    let outcome = dispatch_payment(
        &adapter,
        &breaker,
        &fast_policy(5),
        &payment("key-r", 700),
        Uuid::now_v7(),
        1,
        &log,
    )
    .await
    .unwrap();

    assert!(matches!(outcome, DispatchOutcome::Receipted(ref receipt) if receipt.status == 201));
    assert_eq!(
        log.lines(),
        [
            "attempted 1",
            "failed 1 http_5xx retry=true",
            "attempted 2",
            "failed 2 http_5xx retry=true",
            "attempted 3",
            "receipted 3 201",
        ]
    );
    let stats = bank.sim.ledger_stats();
    assert_eq!((stats.calls, stats.distinct_payments), (3, 1));
    assert_eq!(breaker.metrics().retries(), 2);
    bank.sim.stop().await;
}

#[tokio::test]
async fn outage_dead_letters_after_max_attempts() {
    let bank = start_bank(|config| config.mode = FaultMode::Fail).await;
    let real = adapter(&https_config(&bank, "localhost"));
    let tap = KeyTap {
        inner: &real,
        keys: Mutex::new(Vec::new()),
    };
    let (breaker, log) = (breaker(10, Duration::from_secs(30)), Log::default());

    let outcome = dispatch_payment(
        &tap,
        &breaker,
        &fast_policy(4),
        &payment("key-dlq", 800),
        Uuid::now_v7(),
        1,
        &log,
    )
    .await
    .unwrap();

    assert_eq!(outcome, DispatchOutcome::DeadLettered);
    assert_eq!(log.count("attempted"), 4);
    assert_eq!(log.lines().last().unwrap(), "dead_lettered 4 http_5xx");
    assert_eq!(*tap.keys.lock().unwrap(), ["key-dlq"; 4]);
    let stats = bank.sim.ledger_stats();
    assert_eq!(stats.calls, 4);
    assert!(stats.distinct_payments <= 1);
    bank.sim.stop().await;
}

#[tokio::test]
async fn timeout_then_retry_pays_once() {
    let bank = start_bank(|_| {}).await;
    bank.sim
        .set_fault(FaultMode::Slow { delay_ms: 1_000 }, Some(1));
    let mut config = https_config(&bank, "localhost");
    config.request_timeout = Duration::from_millis(300);
    let (adapter, breaker, log) = (
        adapter(&config),
        breaker(10, Duration::from_secs(30)),
        Log::default(),
    );

    let outcome = dispatch_payment(
        &adapter,
        &breaker,
        &fast_policy(3),
        &payment("key-t", 900),
        Uuid::now_v7(),
        1,
        &log,
    )
    .await
    .unwrap();

    // The bank stored the first call but responded too late. The retry with the same key
    // gets the stored payment back (200), not a second payment.
    let DispatchOutcome::Receipted(receipt) = outcome else {
        panic!("dead-lettered: {:?}", log.lines())
    };
    assert_eq!(receipt.status, 200);
    assert_eq!(
        log.lines()[..2],
        ["attempted 1", "failed 1 timeout retry=true"]
    );
    let stats = bank.sim.ledger_stats();
    assert_eq!(stats.distinct_payments, 1);
    assert_eq!(stats.calls, 2);
    assert_eq!(stats.payments[0].bank_reference, receipt.bank_reference);
    bank.sim.stop().await;
}

#[tokio::test]
async fn unanswered_call_retried_once_paid() {
    let bank = start_bank(|_| {}).await;
    bank.sim.set_fault(FaultMode::Timeout, Some(1));
    let mut config = https_config(&bank, "localhost");
    config.request_timeout = Duration::from_millis(200);
    let (adapter, breaker, log) = (
        adapter(&config),
        breaker(10, Duration::from_secs(30)),
        Log::default(),
    );

    let outcome = dispatch_payment(
        &adapter,
        &breaker,
        &fast_policy(3),
        &payment("key-u", 950),
        Uuid::now_v7(),
        1,
        &log,
    )
    .await
    .unwrap();

    let DispatchOutcome::Receipted(receipt) = outcome else {
        panic!("dead-lettered: {:?}", log.lines())
    };
    assert_eq!(receipt.status, 201, "the unanswered call stored nothing");
    assert_eq!(bank.sim.ledger_stats().distinct_payments, 1);
    bank.sim.stop().await;
}

#[tokio::test]
async fn breaker_opens_probes_and_closes() {
    let bank = start_bank(|config| config.mode = FaultMode::Fail).await;
    let adapter = adapter(&https_config(&bank, "localhost"));
    let breaker = breaker(2, Duration::from_millis(200));

    // Two 503s open the breaker; the third attempt never reaches the bank.
    let outage = Log::default();
    let outcome = dispatch_payment(
        &adapter,
        &breaker,
        &fast_policy(3),
        &payment("key-b1", 1_000),
        Uuid::now_v7(),
        1,
        &outage,
    )
    .await
    .unwrap();
    assert_eq!(outcome, DispatchOutcome::DeadLettered);
    assert_eq!(outage.count("breaker closed->open"), 1);
    // The third attempt met the open breaker; the dead letter names the bank's 503.
    assert_eq!(outage.lines().last().unwrap(), "dead_lettered 3 http_5xx");
    assert_eq!(bank.sim.ledger_stats().calls, 2);
    assert_eq!(breaker.state(), BreakerState::Open);

    // After the cool-down a slow probe is in flight; a concurrent payment is rejected.
    bank.sim
        .set_fault(FaultMode::Slow { delay_ms: 400 }, Some(1));
    tokio::time::sleep(Duration::from_millis(250)).await;
    let (probe_log, second_log) = (Log::default(), Log::default());
    let probe_request = payment("key-b2", 1_001);
    let second_request = payment("key-b3", 1_002);
    let single = fast_policy(1);
    let probe = dispatch_payment(
        &adapter,
        &breaker,
        &single,
        &probe_request,
        Uuid::now_v7(),
        1,
        &probe_log,
    );
    let second = async {
        wait_for_calls(&bank.sim, 3).await;
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        dispatch_payment(
            &adapter,
            &breaker,
            &single,
            &second_request,
            Uuid::now_v7(),
            1,
            &second_log,
        )
        .await
    };
    let (probe, second) = tokio::join!(probe, second);

    assert!(matches!(probe.unwrap(), DispatchOutcome::Receipted(_)));
    assert_eq!(
        probe_log.lines(),
        [
            "breaker open->half_open",
            "attempted 1",
            "breaker half_open->closed",
            "receipted 1 201",
        ]
    );
    assert_eq!(second.unwrap(), DispatchOutcome::DeadLettered);
    assert_eq!(
        second_log.lines(),
        [
            "failed 1 breaker_open retry=false",
            "dead_lettered 1 breaker_open"
        ]
    );
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(
        bank.sim.ledger_stats().calls,
        3,
        "the rejected payment never reached the bank"
    );
    bank.sim.stop().await;
}

async fn wait_for_calls(sim: &BankSim, calls: u64) {
    let started = Instant::now();
    while sim.ledger_stats().calls < calls {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "bank never saw call {calls}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn sim_control_endpoints() {
    let bank = start_bank(|_| {}).await;
    let config = https_config(&bank, "localhost");
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(client_tls_config(&config).unwrap())
        .build()
        .unwrap();
    let base = bank.sim.base_url();

    let faults = serde_json::json!({"mode": "fail", "count": 1, "delay_ms": null});
    let response = client
        .post(format!("{base}/_sim/faults"))
        .json(&faults)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let bad = serde_json::json!({"mode": "explode"});
    let response = client
        .post(format!("{base}/_sim/faults"))
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);

    let adapter = adapter(&config);
    assert_eq!(
        adapter
            .submit(&payment("key-s", 5))
            .await
            .unwrap_err()
            .kind(),
        "http_5xx"
    );
    assert_eq!(
        adapter.submit(&payment("key-s", 5)).await.unwrap().status,
        201
    );

    let ledger: serde_json::Value = client
        .get(format!("{base}/_sim/ledger"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ledger["distinct_payments"], 1);
    assert_eq!(ledger["calls"], 2);
    assert_eq!(ledger["payments"][0]["idempotency_key"], "key-s");
    assert!(
        ledger["payments"][0].get("account").is_none(),
        "the ledger view leaves accounts out"
    );
    bank.sim.stop().await;
}
