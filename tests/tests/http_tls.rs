//! The API listener over TLS: TLS 1.3 is served, TLS 1.2 and plain HTTP are rejected.

use std::sync::Arc;

use api::config::Config;
use api::state::AppState;
use reqwest::{tls::Version, Certificate, StatusCode};

struct TlsServer {
    _dir: tempfile::TempDir,
    state: Arc<AppState>,
    handle: actix_web::dev::ServerHandle,
    port: u16,
    ca_pem: Vec<u8>,
}

async fn start_tls_server() -> anyhow::Result<TlsServer> {
    let dir = tempfile::tempdir()?;
    let pki = api::tls::generate_dev_pki(&dir.path().join("pki"))?;
    let mut config = Config {
        data_dir: dir.path().join("data"),
        ..Config::default()
    };
    config.server.tls_cert = pki.server_cert.clone();
    config.server.tls_key = pki.server_key.clone();

    let state = AppState::open(config).await?;
    let running = api::server::start(Arc::clone(&state), "127.0.0.1:0")?;
    let handle = running.handle.clone();
    tokio::spawn(running.server);
    Ok(TlsServer {
        ca_pem: std::fs::read(&pki.ca_cert)?,
        port: running.addr.port(),
        _dir: dir,
        state,
        handle,
    })
}

fn client(ca_pem: &[u8], max_version: Version) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(Certificate::from_pem(ca_pem)?)
        .max_tls_version(max_version)
        .build()?)
}

impl TlsServer {
    async fn stop(self) {
        self.handle.stop(true).await;
        self.state.shutdown().await;
    }
}

#[tokio::test]
async fn tls13_client_is_served() {
    let server = start_tls_server().await.unwrap();
    let client = client(&server.ca_pem, Version::TLS_1_3).unwrap();

    let url = format!("https://localhost:{}/healthz", server.port);
    let response = client.get(&url).send().await.unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn tls12_client_is_rejected() {
    let server = start_tls_server().await.unwrap();
    let client = client(&server.ca_pem, Version::TLS_1_2).unwrap();

    let url = format!("https://localhost:{}/healthz", server.port);
    let error = client.get(&url).send().await.unwrap_err();

    assert!(error.is_connect(), "{error:?}");
    server.stop().await;
}

#[tokio::test]
async fn plain_http_is_rejected_on_tls_port() {
    let server = start_tls_server().await.unwrap();

    let url = format!("http://127.0.0.1:{}/healthz", server.port);
    let result = reqwest::Client::new().get(&url).send().await;

    assert!(result.is_err(), "plain HTTP got an answer: {result:?}");
    server.stop().await;
}

#[tokio::test]
async fn mismatched_key_names_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let first = api::tls::generate_dev_pki(&dir.path().join("a")).unwrap();
    let second = api::tls::generate_dev_pki(&dir.path().join("b")).unwrap();

    let error = api::tls::api_server_config(&first.server_cert, &second.server_key)
        .unwrap_err()
        .to_string();

    assert!(error.contains("server.tls_cert"), "{error}");
    assert!(error.contains("do not form a valid pair"), "{error}");
}
