//! The KMS providers against real servers on loopback: an OpenBao dev server (transit)
//! and a moto server (AWS KMS), both from the Python environment named by `FOLIO_PYTHON`
//! (`.ci/test` installs `tests/kms/requirements*.txt` there). Folio's AWS calls go through
//! the official AWS SDK; the set-up steps, and the cross-check that a key Folio wrapped
//! opens with another client, use boto3. Without the tools the tests are skipped with a
//! message, except under CI, where they fail.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::kms::aws::AwsKms;
use api::kms::transit::TransitKms;
use api::kms::{random_key, Kms, KmsError, WrappedKey};
use api::kms::{AwsConfig, VaultConfig};
use api::secret::SecretString;
use api::secrets::{Secrets, SecretsConfig};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{json, Value};

/// Kills a server when the test ends, whatever its outcome.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A program in the bin directory of the Python environment of `FOLIO_PYTHON`.
fn venv_program(name: &str) -> Option<PathBuf> {
    let python = std::env::var_os("FOLIO_PYTHON").map(PathBuf::from);
    let found = python
        .and_then(|python| python.parent().map(|dir| dir.join(name)))
        .filter(|path| path.exists());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is missing; .ci/test installs tests/kms/requirements*.txt"
        );
        eprintln!("skipped: {name} is not installed; run .ci/test, which installs it");
    }
    found
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

async fn wait_until_up(url: &str) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if client.get(url).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{url} did not come up within 30 s");
}

fn root_token() -> String {
    // Built at run time so the committed text contains no token-shaped literal.
    format!("{}-{}", "bao-dev", uuid::Uuid::now_v7().simple())
}

/// Starts `bao server -dev` on a free port with the transit engine and a key `folio`.
async fn start_openbao() -> Option<(Server, String, String)> {
    let bao = venv_program("bao")?;
    let port = free_port();
    let token = root_token();
    let home = tempfile::tempdir().unwrap();
    let child = Command::new(bao)
        .args(["server", "-dev", "-dev-no-store-token"])
        .arg(format!("-dev-root-token-id={token}"))
        .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
        .env("HOME", home.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("bao starts");
    let server = Server(child);
    let addr = format!("http://127.0.0.1:{port}");
    wait_until_up(&format!("{addr}/v1/sys/health")).await;
    let client = reqwest::Client::new();
    for (path, body) in [
        ("sys/mounts/transit", json!({ "type": "transit" })),
        ("transit/keys/folio", json!({})),
    ] {
        let response = client
            .post(format!("{addr}/v1/{path}"))
            .header("X-Vault-Token", &token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
    }
    Some((server, addr, token))
}

fn transit(addr: &str, token: &str) -> TransitKms {
    let config = VaultConfig {
        addr: addr.to_owned(),
        token: SecretString::new(token.to_owned()),
        ..VaultConfig::default()
    };
    let secrets = Arc::new(Secrets::new(SecretsConfig::default()).unwrap());
    TransitKms::new(&config, Path::new(""), Duration::from_secs(5), secrets).unwrap()
}

#[tokio::test]
async fn openbao_transit_wraps_rotates_and_binds_context() {
    let Some((_server, addr, token)) = start_openbao().await else {
        return;
    };
    let kms = transit(&addr, &token);
    let key = random_key().unwrap();

    // Wrap, unwrap; a wrong context fails authentication.
    let old = kms.wrap(&key, b"ledger-1|payee-1").await.unwrap();
    assert_eq!(old.kek_version, "1");
    assert!(!old.ciphertext.windows(8).any(|w| w == &key[..8]));
    assert_eq!(*kms.unwrap(&old, b"ledger-1|payee-1").await.unwrap(), *key);
    assert!(matches!(
        kms.unwrap(&old, b"ledger-1|payee-2").await,
        Err(KmsError::Authentication { .. })
    ));

    // Rotation makes version 2 current; version 1 still unwraps; rewrap moves a key.
    assert_eq!(kms.rotate().await.unwrap(), "2");
    let new = kms.wrap(&key, b"ctx").await.unwrap();
    assert_eq!(new.kek_version, "2");
    assert_eq!(*kms.unwrap(&old, b"ledger-1|payee-1").await.unwrap(), *key);
    let moved = kms.rewrap(&old, b"ledger-1|payee-1").await.unwrap();
    assert_eq!(moved.kek_version, "2");
    assert_eq!(
        *kms.unwrap(&moved, b"ledger-1|payee-1").await.unwrap(),
        *key
    );

    // A bad token is refused, and the error does not carry the token.
    let stranger = transit(&addr, "not-the-token");
    let error = stranger.wrap(&key, b"ctx").await.unwrap_err();
    assert!(
        matches!(error, KmsError::Refused { status: 403, .. }),
        "{error}"
    );
    assert!(!error.to_string().contains(&token));
}

/// Creates a child token of `parent` that may use the transit key, and returns it.
async fn create_token(addr: &str, parent: &str) -> String {
    let response = reqwest::Client::new()
        .post(format!("{addr}/v1/auth/token/create"))
        .header("X-Vault-Token", parent)
        .json(&json!({"policies": ["root"], "ttl": "1h"}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let body: Value = response.json().await.unwrap();
    body["auth"]["client_token"].as_str().unwrap().to_owned()
}

/// Revokes `token` with the root token.
async fn revoke_token(addr: &str, root: &str, token: &str) {
    let response = reqwest::Client::new()
        .post(format!("{addr}/v1/auth/token/revoke"))
        .header("X-Vault-Token", root)
        .json(&json!({"token": token}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
}

/// The transit token is read from `kms.vault.token_file` through the secrets provider
/// before each call. After the old token is revoked and the file contains a new one, the
/// same client wraps again, and neither token reaches a log line or an error.
#[tokio::test]
async fn openbao_token_rotates_without_restart() {
    let Some((_server, addr, root)) = start_openbao().await else {
        return;
    };
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(captured.clone())
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let old_token = create_token(&addr, &root).await;
    let new_token = create_token(&addr, &root).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("vault-token");
    std::fs::write(&token_file, &old_token).unwrap();
    let config = VaultConfig {
        addr: addr.clone(),
        token_file: token_file.clone(),
        ..VaultConfig::default()
    };
    let secrets = Secrets::new(SecretsConfig {
        ttl_seconds: 0,
        max_stale_seconds: 1,
        ..SecretsConfig::default()
    });
    let secrets = Arc::new(secrets.unwrap());
    let timeout = Duration::from_secs(5);
    let kms = TransitKms::new(&config, Path::new(""), timeout, secrets).unwrap();
    let key = random_key().unwrap();
    let wrapped = kms.wrap(&key, b"ctx").await.unwrap();

    // The old token is revoked: calls fail until the file contains the new one.
    revoke_token(&addr, &root, &old_token).await;
    let mut errors = Vec::new();
    let error = kms.unwrap(&wrapped, b"ctx").await.unwrap_err();
    assert!(
        matches!(error, KmsError::Refused { status: 403, .. }),
        "{error}"
    );
    errors.push(format!("{error} {error:?}"));
    std::fs::write(&token_file, &new_token).unwrap();
    assert_eq!(*kms.unwrap(&wrapped, b"ctx").await.unwrap(), *key);

    // The token file goes away: the last token is served, then refused as stale.
    std::fs::remove_file(&token_file).unwrap();
    assert_eq!(*kms.unwrap(&wrapped, b"ctx").await.unwrap(), *key);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let error = kms.wrap(&key, b"ctx").await.unwrap_err();
    let text = error.to_string();
    assert!(text.contains("kms.vault.token_file"), "{text}");
    assert!(text.contains("stale"), "{text}");
    errors.push(format!("{error} {error:?}"));

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    for planted in [&old_token, &new_token, &root] {
        assert!(!logs.contains(planted.as_str()), "a token reached the log");
        assert!(
            errors.iter().all(|e| !e.contains(planted.as_str())),
            "{errors:?}"
        );
    }
}

#[tokio::test]
async fn openbao_backs_the_totp_key_file() {
    let Some((_server, addr, token)) = start_openbao().await else {
        return;
    };
    let kms = transit(&addr, &token);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mfa-secret.wrapped");
    let first = api::kms::wrapped_file::load_or_create(&kms, &path, b"mfa")
        .await
        .unwrap();
    let stored = api::kms::wrapped_file::read(&path).unwrap();
    assert_eq!(stored.provider, "vault");
    assert!(String::from_utf8_lossy(&stored.ciphertext).starts_with("vault:v1:"));
    let again = api::kms::wrapped_file::load_or_create(&kms, &path, b"mfa")
        .await
        .unwrap();
    assert_eq!(*first, *again);
}

/// Starts moto's server and creates a symmetric key; returns the key id.
async fn start_moto() -> Option<(Server, String, String)> {
    let moto = venv_program("moto_server")?;
    let port = free_port();
    let child = Command::new(moto)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server starts");
    let server = Server(child);
    let endpoint = format!("http://127.0.0.1:{port}");
    wait_until_up(&format!("{endpoint}/moto-api/")).await;
    let created = boto3(
        &endpoint,
        "kms",
        "create_key",
        json!({ "Description": "folio" }),
    );
    let key_id = created["KeyMetadata"]["Arn"].as_str().unwrap().to_owned();
    Some((server, endpoint, key_id))
}

/// Returns the secret access key given to moto, which accepts any value. The tests check
/// that it reaches no log line.
fn aws_secret_key() -> SecretString {
    SecretString::new(format!("{}{}", "moto-test-", "secret"))
}

/// Runs `operation` (boto3's snake-case name) of `service` with boto3, an AWS client
/// independent of Folio's, and returns the response as JSON with blobs in base64.
fn boto3(endpoint: &str, service: &str, operation: &str, params: Value) -> Value {
    const SCRIPT: &str = r#"
import base64, json, os, sys
import boto3
endpoint, service, operation, params = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
for name in ("Plaintext", "CiphertextBlob"):
    if name in params:
        params[name] = base64.b64decode(params[name])
client = boto3.client(service, endpoint_url=endpoint, region_name="ap-southeast-2",
    aws_access_key_id="AKIDFOLIOTEST", aws_secret_access_key=os.environ["FOLIO_TEST_AWS_SECRET"])
response = getattr(client, operation)(**params)
response.pop("ResponseMetadata", None)
print(json.dumps(response, default=lambda v: base64.b64encode(v).decode() if isinstance(v, bytes) else str(v)))
"#;
    let python = venv_program("python").expect("the Python environment that runs moto");
    let output = Command::new(python)
        .args([
            "-c",
            SCRIPT,
            endpoint,
            service,
            operation,
            &params.to_string(),
        ])
        .env("FOLIO_TEST_AWS_SECRET", aws_secret_key().expose())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "boto3 {service} {operation}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn aws_kms(endpoint: &str, key_id: &str) -> AwsKms {
    let config = AwsConfig {
        region: "ap-southeast-2".to_owned(),
        key_id: key_id.to_owned(),
        endpoint: endpoint.to_owned(),
        access_key_id: "AKIDFOLIOTEST".to_owned(),
        secret_access_key: aws_secret_key(),
        session_token: SecretString::default(),
    };
    AwsKms::new(&config, std::path::Path::new(""), Duration::from_secs(5)).unwrap()
}

#[tokio::test]
async fn aws_kms_on_moto_wraps_and_binds_context() {
    let Some((_server, endpoint, key_id)) = start_moto().await else {
        return;
    };
    let kms = aws_kms(&endpoint, &key_id);
    let key = random_key().unwrap();
    let wrapped = kms.wrap(&key, b"ledger-1|payee-1").await.unwrap();
    assert_eq!(wrapped.kek_version, key_id);
    assert_eq!(
        *kms.unwrap(&wrapped, b"ledger-1|payee-1").await.unwrap(),
        *key
    );
    assert!(matches!(
        kms.unwrap(&wrapped, b"ledger-1|payee-2").await,
        Err(KmsError::Authentication { .. })
    ));

    // A data key wrapped under the old KMS key still unwraps after kms.aws.key_id moves
    // to a new key; a rewrap moves it to the new key.
    let created = boto3(&endpoint, "kms", "create_key", json!({}));
    let next = created["KeyMetadata"]["Arn"].as_str().unwrap();
    let moved_kms = aws_kms(&endpoint, next);
    assert_eq!(
        *moved_kms
            .unwrap(&wrapped, b"ledger-1|payee-1")
            .await
            .unwrap(),
        *key
    );
    let moved = moved_kms
        .rewrap(&wrapped, b"ledger-1|payee-1")
        .await
        .unwrap();
    assert_eq!(moved.kek_version, next);
}

/// The wrapping is plain AWS KMS envelope encryption: another client (boto3) opens a key
/// Folio wrapped, given the same encryption context, and Folio opens a key boto3 wrapped.
/// Errors keep their kinds: an unknown key is a rejection naming AWS's error code, and a
/// closed port is an unreachable KMS.
#[tokio::test]
async fn aws_kms_interoperates_with_boto3() {
    let Some((server, endpoint, key_id)) = start_moto().await else {
        return;
    };
    let kms = aws_kms(&endpoint, &key_id);
    let context = b"ledger-7|payee-9";
    let encryption_context = json!({ "folio": hex::encode(context) });
    let key = random_key().unwrap();
    let wrapped = kms.wrap(&key, context).await.unwrap();
    let opened = boto3(
        &endpoint,
        "kms",
        "decrypt",
        json!({
            "CiphertextBlob": BASE64.encode(&wrapped.ciphertext),
            "EncryptionContext": encryption_context,
        }),
    );
    assert_eq!(opened["Plaintext"], json!(BASE64.encode(*key)));

    let theirs = random_key().unwrap();
    let sealed = boto3(
        &endpoint,
        "kms",
        "encrypt",
        json!({
            "KeyId": key_id,
            "Plaintext": BASE64.encode(*theirs),
            "EncryptionContext": encryption_context,
        }),
    );
    let foreign = WrappedKey {
        ciphertext: BASE64
            .decode(sealed["CiphertextBlob"].as_str().unwrap())
            .unwrap(),
        ..wrapped.clone()
    };
    assert_eq!(*kms.unwrap(&foreign, context).await.unwrap(), *theirs);

    let unknown = aws_kms(&endpoint, "alias/no-such-key");
    match unknown.wrap(&key, context).await {
        Err(KmsError::Refused {
            status, message, ..
        }) => {
            assert_eq!(status, 400);
            assert!(message.contains("NotFoundException"), "{message}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    drop(server);
    match kms.wrap(&key, context).await {
        Err(KmsError::Unavailable {
            operation, reason, ..
        }) => {
            assert_eq!(operation, "wrap");
            // The reason is the chain of error messages, not a `Debug` dump of the SDK's types.
            assert!(reason.contains("dispatch failure"), "{reason}");
            assert!(!reason.contains('{'), "{reason}");
        }
        other => panic!("expected an unreachable KMS, got {other:?}"),
    }
}

/// With the `aws` provider the KEK is named by an alias, as the docs allow. A rotation
/// resolves it to the key ARN (RotateKeyOnDemand takes no alias) and returns that ARN, so
/// nothing is pending. Retirement is refused for the key in use and for names Folio never
/// recorded, such as a typo, the alias or the bare key id, and allowed for a key Folio
/// moved off.
#[tokio::test]
async fn aws_alias_rotates_and_retirement_checks_versions() {
    let Some((_server, endpoint, key_arn)) = start_moto().await else {
        return;
    };
    boto3(
        &endpoint,
        "kms",
        "create_alias",
        json!({ "AliasName": "alias/folio-trial", "TargetKeyId": key_arn }),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = |key_id: &str| api::config::Config {
        data_dir: dir.path().to_owned(),
        kms: api::kms::KmsConfig {
            provider: api::kms::KmsProvider::Aws,
            aws: AwsConfig {
                region: "ap-southeast-2".to_owned(),
                key_id: key_id.to_owned(),
                endpoint: endpoint.clone(),
                access_key_id: "AKIDFOLIOTEST".to_owned(),
                secret_access_key: aws_secret_key(),
                session_token: SecretString::default(),
            },
            ..api::kms::KmsConfig::default()
        },
        ..api::config::Config::default()
    };
    let state = api::state::AppState::open(config("alias/folio-trial"))
        .await
        .unwrap();
    let actor = domain::record::Actor::system("test");
    // A ledger, so the rotation and the rewrap below are recorded as events.
    let ledger = uuid::Uuid::now_v7();
    (state.store)
        .create_ledger(ledger, "acme", actor.clone(), uuid::Uuid::now_v7())
        .await
        .unwrap();
    let version = api::key_rotation::rotate_kek(&state, &actor, uuid::Uuid::now_v7())
        .await
        .unwrap();
    assert_eq!(version, key_arn);

    let bare_id = key_arn.rsplit('/').next().unwrap().to_owned();
    for unknown in ["alias/folio-trial", bare_id.as_str(), "typo-not-a-version"] {
        let error = api::key_rotation::retire_kek(&state, unknown)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("is not one Folio has used"),
            "{unknown}: {error}"
        );
        assert!(error.contains(&key_arn), "{unknown}: {error}");
    }
    let error = api::key_rotation::retire_kek(&state, &key_arn)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("set kms.aws.key_id to a new key"), "{error}");
    state.shutdown().await;
    drop(state);

    // Moving to a new key: the old ARN still wraps the key files until the rewrap.
    let next = boto3(&endpoint, "kms", "create_key", json!({}));
    let next_arn = next["KeyMetadata"]["Arn"].as_str().unwrap();
    let state = api::state::AppState::open(config(next_arn)).await.unwrap();
    let error = api::key_rotation::retire_kek(&state, &key_arn)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("still wraps"), "{error}");
    api::key_rotation::rewrap_pass(&state).await.unwrap();
    let retired = api::key_rotation::retire_kek(&state, &key_arn)
        .await
        .unwrap();
    assert_eq!(
        retired,
        api::key_rotation::Retirement::AtProvider { provider: "aws" }
    );
    state.shutdown().await;
}

/// A request as it arrived on the socket: method, path, headers (names in lower case)
/// and body.
struct CapturedRequest {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl CapturedRequest {
    fn header(&self, name: &str) -> &str {
        let found = self.headers.iter().find(|(n, _)| n == name);
        found.map_or("", |(_, value)| value.as_str())
    }
}

/// Accepts one connection on `listener`, reads one HTTP/1.1 request and returns it after
/// replying with AWS KMS's `NotFoundException`.
async fn capture_one_request(listener: tokio::net::TcpListener) -> CapturedRequest {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut socket, _) = listener.accept().await.unwrap();
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let read = socket.read(&mut chunk).await.unwrap();
        assert!(read > 0, "connection closed before the request ended");
        raw.extend_from_slice(&chunk[..read]);
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
    };

    let head = String::from_utf8(raw[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let request_line: Vec<&str> = lines.next().unwrap().split(' ').collect();
    let headers: Vec<(String, String)> = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.trim().to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    let length: usize = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .map_or(0, |(_, value)| value.parse().unwrap());

    let mut body = raw[head_end + 4..].to_vec();
    while body.len() < length {
        let read = socket.read(&mut chunk).await.unwrap();
        assert!(read > 0, "connection closed inside the body");
        body.extend_from_slice(&chunk[..read]);
    }

    let reply = r#"{"__type":"NotFoundException","message":"captured by the test"}"#;
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/x-amz-json-1.1\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{reply}",
        reply.len()
    );
    socket.write_all(response.as_bytes()).await.unwrap();
    CapturedRequest {
        method: request_line[0].to_owned(),
        path: request_line[1].to_owned(),
        headers,
        body,
    }
}

/// moto accepts any signature, so this checks the one Folio sends. A listener captures the
/// SDK's request as Folio's HTTP client puts it on the wire, and botocore's SigV4 signer,
/// given that request and its time, computes the same signature. It would not if the
/// transport changed a signed header or the body.
#[tokio::test]
async fn aws_request_signature_matches_botocore() {
    let Some(python) = venv_program("python") else {
        return;
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let capture = tokio::spawn(capture_one_request(listener));
    let session = format!("{}{}", "session-", "token-value");
    let config = AwsConfig {
        region: "ap-southeast-2".to_owned(),
        key_id: "alias/folio".to_owned(),
        endpoint: endpoint.clone(),
        access_key_id: "AKIDFOLIOTEST".to_owned(),
        secret_access_key: aws_secret_key(),
        session_token: SecretString::new(session.clone()),
    };
    let kms = AwsKms::new(&config, Path::new(""), Duration::from_secs(5)).unwrap();
    let key = random_key().unwrap();
    let outcome = kms.wrap(&key, b"ledger-1|payee-1").await;
    assert!(
        matches!(outcome, Err(KmsError::Refused { status: 400, .. })),
        "{outcome:?}"
    );
    let request = capture.await.unwrap();

    let authorization = request.header("authorization").to_owned();
    let signed_names = authorization
        .split("SignedHeaders=")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .expect("SignedHeaders in the authorization header");
    for name in ["host", "x-amz-date", "x-amz-security-token", "x-amz-target"] {
        assert!(
            signed_names.split(';').any(|signed| signed == name),
            "{name} is not signed: {signed_names}"
        );
    }
    let signed: serde_json::Map<String, Value> = signed_names
        .split(';')
        .map(|name| (name.to_owned(), json!(request.header(name))))
        .collect();
    let script = r#"
import json, os, sys
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
url, method, headers = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
body = sys.stdin.buffer.read()
request = AWSRequest(method=method, url=url, data=body, headers=headers)
request.context["timestamp"] = headers["x-amz-date"]
credentials = Credentials("AKIDFOLIOTEST", os.environ["FOLIO_TEST_AWS_SECRET"], headers["x-amz-security-token"])
auth = SigV4Auth(credentials, "kms", "ap-southeast-2")
canonical = auth.canonical_request(request)
print(auth.signature(auth.string_to_sign(request, canonical), request))
"#;
    let url = format!("{endpoint}{}", request.path);
    let mut child = Command::new(python)
        .args([
            "-c",
            script,
            &url,
            &request.method,
            &Value::Object(signed).to_string(),
        ])
        .env("FOLIO_TEST_AWS_SECRET", aws_secret_key().expose())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&request.body).unwrap();
    }
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let theirs = String::from_utf8(output.stdout).unwrap();
    assert!(
        authorization.ends_with(&format!("Signature={}", theirs.trim())),
        "sent: {authorization}\nbotocore: {theirs}"
    );
    assert_eq!(request.header("x-amz-security-token"), session);
}

/// A `MakeWriter` that keeps every log line in memory.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// Secrets from OpenBao KV and from moto's Secrets Manager go through the cache; when
/// the providers stop, the stale value is served and then refused. The planted values
/// appear in no log line and no error.
#[tokio::test]
async fn secrets_from_openbao_and_secrets_manager_never_print() {
    let Some((bao, addr, token)) = start_openbao().await else {
        return;
    };
    let Some((moto, endpoint, _)) = start_moto().await else {
        return;
    };
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(captured.clone())
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    // Plant the values: a database password in OpenBao KV, an API key in Secrets Manager.
    let db_password = format!("{}-{}", "planted-db", uuid::Uuid::now_v7().simple());
    let api_key = format!("{}-{}", "planted-api", uuid::Uuid::now_v7().simple());
    let response = reqwest::Client::new()
        .post(format!("{addr}/v1/secret/data/folio/db"))
        .header("X-Vault-Token", &token)
        .json(&json!({"data": {"password": db_password}}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    std::env::set_var("AWS_ACCESS_KEY_ID", "AKIDFOLIOTEST");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", aws_secret_key().expose());
    let created = boto3(
        &endpoint,
        "secretsmanager",
        "create_secret",
        json!({ "Name": "folio/api", "SecretString": api_key }),
    );
    assert!(created["ARN"].is_string(), "{created}");

    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("bao-token");
    std::fs::write(&token_file, &token).unwrap();
    let secrets = api::secrets::Secrets::new(api::secrets::SecretsConfig {
        ttl_seconds: 0,
        max_stale_seconds: 1,
        vault_addr: addr.clone(),
        vault_token_file: token_file,
        aws_region: "ap-southeast-2".to_owned(),
        aws_endpoint: endpoint.clone(),
        ca_cert: std::path::PathBuf::new(),
    })
    .unwrap();
    let db = "vault:secret/folio/db#password";
    let api = "aws-sm:folio/api";
    assert_eq!(secrets.get(db).await.unwrap().expose(), db_password);
    assert_eq!(secrets.get(api).await.unwrap().expose(), api_key);

    // Both providers go away: the last good values are served, then refused.
    drop(bao);
    drop(moto);
    assert_eq!(secrets.get(db).await.unwrap().expose(), db_password);
    assert_eq!(secrets.get(api).await.unwrap().expose(), api_key);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let mut errors = Vec::new();
    for reference in [db, api] {
        let error = secrets.get(reference).await.unwrap_err();
        assert!(
            matches!(error, api::secrets::SecretError::Stale { .. }),
            "{error}"
        );
        errors.push(format!("{error} {error:?}"));
    }

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("serving the last good value"), "{logs}");
    assert!(logs.contains("secret rejected"), "{logs}");
    for planted in [&db_password, &api_key, &token, aws_secret_key().expose()] {
        assert!(!logs.contains(planted), "a planted secret reached the log");
        assert!(errors.iter().all(|e| !e.contains(planted)), "{errors:?}");
    }
}
