//! Spans reach a real OpenTelemetry collector: Folio exports over OTLP/HTTP to the rotel
//! collector on loopback, which forwards them to a recording OTLP endpoint in this test.
//!
//! This file contains one test because it installs the process-wide `tracing` subscriber.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use folio_e2e::harness::Stack;
use uuid::Uuid;

/// Bodies POSTed to the recording endpoint.
type Received = Arc<Mutex<Vec<Vec<u8>>>>;

/// Kills the collector when the test ends, whatever its outcome.
struct Collector(Child);

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Finds the rotel collector binary in the Python environment named by `FOLIO_PYTHON`.
/// Without it the test is skipped with a message, except under CI, where it fails.
fn rotel_binary() -> Option<PathBuf> {
    let python = std::env::var_os("FOLIO_PYTHON").unwrap_or_else(|| "python3".into());
    let output = Command::new(python)
        .args([
            "-c",
            "import os, rotel; print(os.path.dirname(rotel.__file__))",
        ])
        .output();
    let found = output
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()))
        .map(|dir| dir.join("rotel-agent"))
        .filter(|path| path.exists());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the rotel package is missing; .ci/test installs tests/verifier/requirements.txt"
        );
        eprintln!("skipped: rotel is not installed; run .ci/test, which installs it");
    }
    found
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Starts an OTLP/HTTP endpoint that records every request body.
fn start_recorder() -> (u16, Received, actix_web::dev::ServerHandle) {
    let received: Received = Arc::default();
    let store = web::Data::new(Arc::clone(&received));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = HttpServer::new(move || {
        App::new().app_data(store.clone()).route(
            "/v1/traces",
            web::post().to(|body: web::Bytes, store: web::Data<Received>| async move {
                store.lock().unwrap().push(body.to_vec());
                HttpResponse::Ok()
                    .content_type("application/x-protobuf")
                    .finish()
            }),
        )
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    (port, received, handle)
}

fn start_collector(binary: &PathBuf, http_port: u16, forward_port: u16) -> Collector {
    let child = Command::new(binary)
        .args([
            "start",
            "--exporter",
            "otlp",
            "--otlp-exporter-protocol",
            "http",
        ])
        .args(["--otlp-exporter-compression", "none"])
        .arg("--otlp-http-endpoint")
        .arg(format!("127.0.0.1:{http_port}"))
        .arg("--otlp-grpc-endpoint")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--otlp-exporter-endpoint")
        .arg(format!("http://127.0.0.1:{forward_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Collector(child)
}

async fn wait_for_port(port: u16) {
    let started = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "collector did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_spans_reach_collector() {
    let Some(binary) = rotel_binary() else {
        return;
    };
    let (forward_port, received, recorder) = start_recorder();
    let collector_port = free_port();
    let _collector = start_collector(&binary, collector_port, forward_port);
    wait_for_port(collector_port).await;

    std::env::set_var(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        format!("http://127.0.0.1:{collector_port}"),
    );
    std::env::set_var("OTEL_SERVICE_NAME", "folio-e2e");
    let guard = api::cli::init_logging("info");
    let stack = Stack::start().await.unwrap();
    let correlation_id = Uuid::now_v7().to_string();
    let response = stack
        .http
        .get(format!("{}/healthz", stack.base))
        .header("X-Correlation-Id", &correlation_id)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    stack.stop().await.unwrap();
    // Dropping the guard flushes the batch exporter; it blocks, so off the async workers.
    tokio::task::spawn_blocking(move || drop(guard))
        .await
        .unwrap();

    let started = Instant::now();
    loop {
        let bodies = received.lock().unwrap().clone();
        let found = bodies.iter().any(|body| {
            contains(body, b"http_request") && contains(body, correlation_id.as_bytes())
        });
        if found {
            let service = bodies.iter().any(|body| contains(body, b"folio-e2e"));
            assert!(
                service,
                "the service name is missing from the exported spans"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no span with the correlation id reached the collector; {} bodies received",
            bodies.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    recorder.stop(true).await;
}
