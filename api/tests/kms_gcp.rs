//! The Google Cloud KMS provider against responses replayed by a local HTTP server.
//!
//! Google publishes no Cloud KMS emulator. The responses in
//! `fixtures/gcp-kms/responses.json` were written by hand from the published REST
//! reference and are labelled so in the file; they were not captured from the live
//! service. These tests check what Folio sends (paths, token, base64 fields) and how it
//! reads the answers, not Google's behaviour.

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use api::kms::gcp::GcpKms;
use api::kms::{GcpConfig, Kms, KmsError};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::Value;
use zeroize::Zeroizing;

const KEY: &str =
    "projects/folio-test/locations/australia-southeast1/keyRings/folio/cryptoKeys/ledger";

/// A request the replay server received: path, authorization header, JSON body.
type Seen = Arc<Mutex<Vec<(String, String, Value)>>>;

fn responses() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/gcp-kms/responses.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Picks the recorded response for a request, by path and (for decrypt) the AAD sent.
fn answer_for(path: &str, body: &Value, fixtures: &Value, deny: bool) -> Value {
    let name = if deny {
        "permission_denied"
    } else if path.ends_with(":encrypt") {
        "encrypt"
    } else if path.ends_with(":decrypt") {
        let aad = BASE64.encode(b"ledger-1|payee-1");
        if body["additionalAuthenticatedData"] == aad {
            "decrypt"
        } else {
            "decrypt_wrong_aad"
        }
    } else if path.ends_with("/cryptoKeyVersions") {
        "create_version"
    } else {
        "update_primary"
    };
    fixtures[name].clone()
}

fn start(deny: bool) -> (String, Seen, actix_web::dev::ServerHandle) {
    let seen: Seen = Arc::default();
    let state = web::Data::new((Arc::clone(&seen), responses()));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = HttpServer::new(move || {
        App::new().app_data(state.clone()).default_service(web::to(
            move |request: HttpRequest, body: web::Bytes, state: web::Data<(Seen, Value)>| async move {
                let body: Value = serde_json::from_slice(&body).unwrap_or_default();
                let auth = request
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let path = request.path().to_owned();
                state.0.lock().unwrap().push((path.clone(), auth, body.clone()));
                let answer = answer_for(&path, &body, &state.1, deny);
                let status = answer["status"].as_u64().unwrap() as u16;
                HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
                    .json(&answer["body"])
            },
        ))
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    (format!("http://127.0.0.1:{port}"), seen, handle)
}

fn token() -> String {
    format!("{}.{}", "ya29", "folio-test-access")
}

fn gcp(endpoint: &str, token_file: &std::path::Path) -> GcpKms {
    std::fs::write(token_file, format!("{}\n", token())).unwrap();
    let config = GcpConfig {
        key_name: KEY.to_owned(),
        endpoint: endpoint.to_owned(),
        access_token_file: token_file.to_owned(),
        ..GcpConfig::default()
    };
    GcpKms::new(&config, std::path::Path::new(""), Duration::from_secs(5)).unwrap()
}

#[actix_web::test]
async fn requests_and_recorded_answers_round_trip() {
    let (endpoint, seen, handle) = start(false);
    let dir = tempfile::tempdir().unwrap();
    let kms = gcp(&endpoint, &dir.path().join("token"));
    let key = Zeroizing::new([0x5a; 32]);

    let wrapped = kms.wrap(&key, b"ledger-1|payee-1").await.unwrap();
    assert_eq!(wrapped.kek_version, "3");
    assert_eq!(wrapped.kek_id, KEY);
    assert_eq!(
        *kms.unwrap(&wrapped, b"ledger-1|payee-1").await.unwrap(),
        *key
    );
    assert!(matches!(
        kms.unwrap(&wrapped, b"ledger-1|payee-2").await,
        Err(KmsError::Authentication { .. })
    ));
    assert_eq!(kms.rotate().await.unwrap(), "4");

    let seen = seen.lock().unwrap().clone();
    let paths: Vec<&str> = seen.iter().map(|(path, _, _)| path.as_str()).collect();
    assert_eq!(
        paths,
        [
            format!("/v1/{KEY}:encrypt"),
            format!("/v1/{KEY}:decrypt"),
            format!("/v1/{KEY}:decrypt"),
            format!("/v1/{KEY}/cryptoKeyVersions"),
            format!("/v1/{KEY}:updatePrimaryVersion"),
        ]
    );
    assert!(seen
        .iter()
        .all(|(_, auth, _)| *auth == format!("Bearer {}", token())));
    let encrypt = &seen[0].2;
    assert_eq!(encrypt["plaintext"], BASE64.encode(key.as_ref()));
    assert_eq!(
        encrypt["additionalAuthenticatedData"],
        BASE64.encode(b"ledger-1|payee-1")
    );
    assert_eq!(seen[1].2["ciphertext"], BASE64.encode(&wrapped.ciphertext));
    assert_eq!(seen[4].2["cryptoKeyVersionId"], "4");
    handle.stop(true).await;
}

#[actix_web::test]
async fn a_refusal_names_the_status_and_hides_the_token() {
    let (endpoint, _seen, handle) = start(true);
    let dir = tempfile::tempdir().unwrap();
    let kms = gcp(&endpoint, &dir.path().join("token"));
    let error = kms
        .wrap(&Zeroizing::new([1; 32]), b"ctx")
        .await
        .unwrap_err();
    assert!(
        matches!(error, KmsError::Refused { status: 403, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("useToEncrypt"), "{error}");
    assert!(!error.to_string().contains(&token()));
    handle.stop(true).await;
}
