//! The bank simulator: an actix-web server over rustls that serves the bank protocol,
//! requires a client certificate signed by the configured CA, keeps accepted payments in
//! memory by idempotency key, and injects faults on request.
//!
//! Routes: `POST /v1/payments` (the bank protocol), `POST /_sim/faults` (change faults at
//! run time) and `GET /_sim/ledger` (calls and accepted payments). All of them sit behind
//! the same mutual-TLS listener.

mod state;
mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use anyhow::Context;
use rustls::crypto::ring;
use rustls::server::WebPkiClientVerifier;
use rustls::version::{TLS12, TLS13};
use rustls::{ServerConfig, SupportedProtocolVersion};

use self::state::{Acceptance, Fault, SimBank, DEFAULT_SLOW_MS};
pub use self::state::{
    FaultMode, FaultUpdate, SimLedger, SimPayment, UnknownFaultMode, TIMEOUT_HOLD,
};
use crate::bank::BankPaymentRequest;
use crate::tls::{self, PkiPaths};

/// Largest request body accepted, in bytes.
const MAX_BODY_BYTES: usize = 16 * 1024;

/// Simulator settings; the `folio bank-sim` command fills them from its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankSimConfig {
    /// Address to listen on, such as `127.0.0.1:9443`; port 0 picks a free port.
    pub bind: String,
    /// PEM file with the CA that client certificates must chain to.
    pub ca_cert: PathBuf,
    /// PEM file with the server certificate chain.
    pub server_cert: PathBuf,
    /// PEM file with the server private key.
    pub server_key: PathBuf,
    /// Fault mode after the first `fail_first_n` calls.
    pub mode: FaultMode,
    /// Calls that get a 503 response before `mode` applies.
    pub fail_first_n: u64,
    /// TLS versions served; TLS 1.3 only by default, so TLS 1.2-only clients are rejected.
    pub tls_versions: SimTlsVersions,
}

/// TLS versions the simulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SimTlsVersions {
    /// TLS 1.3 only, as ATO services require.
    #[default]
    Tls13Only,
    /// TLS 1.3 and TLS 1.2.
    Tls13And12,
    /// TLS 1.2 only, to play a bank that has not upgraded.
    Tls12Only,
}

impl BankSimConfig {
    /// Creates a fault-free configuration on `bind` with the PKI files in `pki`.
    pub fn new(bind: impl Into<String>, pki: &PkiPaths) -> Self {
        BankSimConfig {
            bind: bind.into(),
            ca_cert: pki.ca_cert.clone(),
            server_cert: pki.server_cert.clone(),
            server_key: pki.server_key.clone(),
            mode: FaultMode::Ok,
            fail_first_n: 0,
            tls_versions: SimTlsVersions::Tls13Only,
        }
    }
}

/// A running bank simulator.
#[derive(Debug)]
pub struct BankSim {
    addr: SocketAddr,
    bank: Arc<SimBank>,
    server: actix_web::dev::ServerHandle,
    task: Mutex<Option<tokio::task::JoinHandle<std::io::Result<()>>>>,
}

impl BankSim {
    /// Starts the simulator and returns once it listens.
    ///
    /// Must run inside a Tokio runtime. The server does not react to signals: the caller
    /// stops it with [`BankSim::stop`].
    ///
    /// # Errors
    /// Fails if a PEM file cannot be loaded, rustls rejects the certificates or the address
    /// cannot be bound.
    pub async fn start(config: BankSimConfig) -> anyhow::Result<BankSim> {
        let tls = server_tls_config(&config)?;
        let bank = Arc::new(SimBank::new(config.mode, config.fail_first_n));

        let data = web::Data::from(Arc::clone(&bank));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
                .route("/v1/payments", web::post().to(post_payment))
                .route("/_sim/faults", web::post().to(post_faults))
                .route("/_sim/ledger", web::get().to(get_ledger))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .bind_rustls_0_23(config.bind.as_str(), tls)
        .with_context(|| format!("cannot bind the bank simulator to {}", config.bind))?;

        let addr = *server
            .addrs()
            .first()
            .context("bank simulator bound no address")?;
        let server = server.run();
        let handle = server.handle();
        let task = Mutex::new(Some(tokio::spawn(server)));
        let mode = config.mode.name();
        tracing::info!(%addr, mode, fail_first_n = config.fail_first_n, "bank simulator listening");
        Ok(BankSim {
            addr,
            bank,
            server: handle,
            task,
        })
    }

    /// Returns the bound address, with the real port when port 0 was requested.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Returns `https://<addr>`, a base URL for the adapter.
    pub fn base_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Applies `mode` to the next `count` payment calls (all calls when `None`), then
    /// returns to `ok`. Replaces any fault set before, `fail_first_n` included.
    pub fn set_fault(&self, mode: FaultMode, count: Option<u64>) {
        self.bank.set_fault(mode, count);
        tracing::info!(mode = mode.name(), ?count, "bank simulator fault set");
    }

    /// Returns the calls received and the payments accepted so far.
    pub fn ledger_stats(&self) -> SimLedger {
        self.bank.ledger()
    }

    /// Stops the server, waiting at most one second for calls in progress. Calling it
    /// again does nothing.
    pub async fn stop(&self) {
        self.server.stop(true).await;
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(task) = task else { return };
        match task.await {
            Ok(Ok(())) => tracing::info!(addr = %self.addr, "bank simulator stopped"),
            Ok(Err(error)) => tracing::warn!(%error, "bank simulator stopped with an error"),
            Err(error) => tracing::warn!(%error, "bank simulator task failed"),
        }
    }
}

/// Builds the server TLS configuration: ring provider, the configured TLS versions and a
/// client certificate required and verified against `config.ca_cert`.
fn server_tls_config(config: &BankSimConfig) -> anyhow::Result<ServerConfig> {
    let provider = Arc::new(ring::default_provider());
    let roots = Arc::new(tls::load_root_store(&config.ca_cert)?);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .context("cannot build the client certificate verifier")?;
    let certs = tls::load_certs(&config.server_cert)?;
    let key = tls::load_private_key(&config.server_key)?;

    let versions: &[&'static SupportedProtocolVersion] = match config.tls_versions {
        SimTlsVersions::Tls13Only => &[&TLS13],
        SimTlsVersions::Tls13And12 => &[&TLS13, &TLS12],
        SimTlsVersions::Tls12Only => &[&TLS12],
    };
    ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .context("server certificate and key do not form a valid pair")
}

async fn post_payment(
    bank: web::Data<SimBank>,
    request: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let fault = bank.begin_call();
    match fault {
        Fault::Fail => {
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "bank unavailable (simulated)",
            )
        }
        Fault::Hang(hold) => {
            tokio::time::sleep(hold).await;
            return problem(StatusCode::GATEWAY_TIMEOUT, "bank timed out (simulated)");
        }
        Fault::None | Fault::Slow(_) => {}
    }

    let (key, payment) = match parse_payment(&request, &body) {
        Ok(parsed) => parsed,
        Err(title) => return problem(StatusCode::BAD_REQUEST, title),
    };
    let acceptance = bank.accept(&key, payment);
    tracing::info!(idempotency_key = %key, outcome = ?acceptance, "bank simulator payment");

    // The payment is already stored, as at a real bank whose response is lost on the way.
    if let Fault::Slow(delay) = fault {
        tokio::time::sleep(delay).await;
    }
    match acceptance {
        Acceptance::New(reference) => accepted(StatusCode::CREATED, &reference),
        Acceptance::Repeat(reference) => accepted(StatusCode::OK, &reference),
        Acceptance::Conflict => problem(
            StatusCode::CONFLICT,
            "idempotency key reused with a different body",
        ),
    }
}

/// Reads the key header and the JSON body; the error is a problem title.
fn parse_payment(
    request: &HttpRequest,
    body: &[u8],
) -> Result<(String, BankPaymentRequest), &'static str> {
    let header = request.headers().get("Idempotency-Key");
    let key = validate::check_key(header.and_then(|value| value.to_str().ok()))?.to_owned();
    let mut payment: BankPaymentRequest =
        serde_json::from_slice(body).map_err(|_| "invalid JSON body: expected a payment object")?;
    validate::check_payment(&payment)?;
    payment.idempotency_key.clone_from(&key);
    Ok((key, payment))
}

async fn post_faults(bank: web::Data<SimBank>, body: web::Bytes) -> HttpResponse {
    let Ok(update) = serde_json::from_slice::<FaultUpdate>(&body) else {
        let title = "invalid fault update: expected mode, count and delay_ms";
        return problem(StatusCode::BAD_REQUEST, title);
    };
    let delay_ms = update.delay_ms.unwrap_or(DEFAULT_SLOW_MS);
    let mode = match FaultMode::parse(&update.mode, delay_ms) {
        Ok(mode) => mode,
        Err(_) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "invalid fault mode: expected ok, fail, timeout or slow",
            )
        }
    };
    bank.set_fault(mode, update.count);
    tracing::info!(mode = mode.name(), count = ?update.count, "bank simulator fault set");
    HttpResponse::Ok().json(update)
}

async fn get_ledger(bank: web::Data<SimBank>) -> HttpResponse {
    HttpResponse::Ok().json(bank.ledger())
}

fn accepted(status: StatusCode, reference: &str) -> HttpResponse {
    HttpResponse::build(status)
        .json(serde_json::json!({ "bank_reference": reference, "status": "accepted" }))
}

/// Builds an RFC 9457 problem response.
fn problem(status: StatusCode, title: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/problem+json")
        .json(serde_json::json!({
            "type": "about:blank",
            "title": title,
            "status": status.as_u16(),
        }))
}
