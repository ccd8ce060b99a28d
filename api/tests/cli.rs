//! The `folio` binary as an operator runs it: `serve` with `FOLIO_` variables, the
//! bootstrap token, `import-aba`, `export-ledger` and `verify` with their exit codes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn folio() -> Command {
    Command::new(env!("CARGO_BIN_EXE_folio"))
}

fn fixture(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures")
        .join(relative)
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

struct Server {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Server {
    fn start(data_dir: &Path) -> Server {
        let port = free_port();
        let log = data_dir.with_extension("log");
        let child = folio()
            .arg("serve")
            .env("FOLIO_DATA_DIR", data_dir)
            .env("FOLIO_SERVER__LISTEN_ADDR", format!("127.0.0.1:{port}"))
            // Approved payees are payable at once, so the import below can pay them.
            .env("FOLIO_ALLOW_LIST__COOLING_OFF_SECONDS", "0")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        server.wait_healthy();
        server
    }

    fn wait_healthy(&self) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            let ok = reqwest::blocking::get(format!("{}/healthz", self.base))
                .is_ok_and(|response| response.status().is_success());
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "folio serve did not become healthy; log:\n{}",
            std::fs::read_to_string(&self.log).unwrap()
        );
    }

    fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "folio serve exited with {exit}");
        std::fs::read_to_string(&self.log).unwrap()
    }
}

fn post(base: &str, token: &str, path: &str, body: Value) -> Value {
    let response = reqwest::blocking::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .header("Idempotency-Key", uuid::Uuid::now_v7().to_string())
        .json(&body)
        .send()
        .unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().unwrap()
}

fn run(command: &mut Command) -> Output {
    command.output().unwrap()
}

const ADMIN_PASSWORD: &str = "cli harbour lantern 77";

/// Runs `folio operator create --admin` with `extra` arguments, the password on standard
/// input.
fn create_admin(data_dir: &Path, ledger_id: &str, username: &str, extra: &[&str]) -> Output {
    use std::io::Write;
    let mut child = folio()
        .args(["operator", "create", "--admin", "--ledger", ledger_id])
        .args(["--username", username])
        .args(extra)
        .env("FOLIO_DATA_DIR", data_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{ADMIN_PASSWORD}").unwrap();
    drop(stdin);
    child.wait_with_output().unwrap()
}

/// Creates the first administrator with `folio operator create --admin`. A second one is
/// refused unless it is a break-glass administrator.
fn bootstrap_admin(data_dir: &Path, ledger_id: &str) {
    let output = create_admin(data_dir, ledger_id, "cli.admin", &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let id = String::from_utf8_lossy(&output.stdout);
    assert!(uuid::Uuid::parse_str(id.trim()).is_ok(), "{id}");

    let second = create_admin(data_dir, ledger_id, "cli.second", &[]);
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("already has administrators (cli.admin)"),
        "{stderr}"
    );
    let glass = create_admin(data_dir, ledger_id, "cli.glass", &["--break-glass"]);
    let stderr = String::from_utf8_lossy(&glass.stderr);
    assert!(glass.status.success(), "{stderr}");
    assert!(stderr.contains("break-glass"), "{stderr}");
}

/// Signs in the administrator, enrols them, creates and enrols an approver, and has
/// every payee proposed by one and approved by the other. Returns the administrator's
/// TOTP secret and recovery codes.
async fn approve_payees(
    base: &str,
    ledger: uuid::Uuid,
    payees: &[Value],
) -> anyhow::Result<(String, Vec<String>)> {
    use api::operators::client::OperatorClient;
    let mut admin = OperatorClient::sign_in(base, ledger, "cli.admin", ADMIN_PASSWORD).await?;
    admin.enrol().await?;
    let approver_password = "cli approver meadow 58";
    admin
        .create_operator(ledger, "cli.approver", approver_password, &["approver"])
        .await?;
    let mut approver =
        OperatorClient::sign_in(base, ledger, "cli.approver", approver_password).await?;
    approver.enrol().await?;
    for payee in payees {
        let proposal = admin
            .propose(&format!("/v1/ledgers/{ledger}/payees"), payee)
            .await?;
        approver.approve(ledger, &proposal).await?;
    }
    let secret = admin.secret_base32().unwrap_or_default();
    Ok((secret, admin.recovery_codes.clone()))
}

#[test]
fn serve_import_export_verify() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let server = Server::start(&data_dir);

    // The bootstrap token is written once, readable only by its owner.
    let token_path = data_dir.join("bootstrap-token");
    let token = std::fs::read_to_string(&token_path)
        .unwrap()
        .trim()
        .to_owned();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let ledger = post(
        &server.base,
        &token,
        "/v1/ledgers",
        json!({"tenant": "cli"}),
    );
    let ledger_id = ledger["ledger_id"].as_str().unwrap().to_owned();
    let sidecar: Value =
        serde_json::from_slice(&std::fs::read(fixture("aba/generated-small.json")).unwrap())
            .unwrap();
    let payees: Vec<Value> = sidecar["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| {
            json!({
                "name": record["account_title"],
                "bsb": record["bsb"],
                "account": record["account_number"],
            })
        })
        .collect();
    let ledger_uuid: uuid::Uuid = ledger_id.parse().unwrap();
    bootstrap_admin(&data_dir, &ledger_id);
    // An administrator for a ledger that does not exist is refused, naming the ledger.
    let unknown = uuid::Uuid::now_v7().to_string();
    let output = run(folio()
        .args(["operator", "create", "--admin", "--ledger", &unknown])
        .args(["--username", "ghost.admin"])
        .env("FOLIO_DATA_DIR", &data_dir)
        .stdin(Stdio::null()));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("ledger {unknown} is not in")),
        "{stderr}"
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (secret, recovery_codes) = runtime
        .block_on(approve_payees(&server.base, ledger_uuid, &payees))
        .unwrap();

    let import = |file: &str| {
        run(folio()
            .args(["import-aba", fixture(file).to_str().unwrap()])
            .args(["--server", &server.base, "--ledger", &ledger_id])
            .env("FOLIO_TOKEN", &token))
    };
    let first = import("aba/generated-small.aba");
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let again = import("aba/generated-small.aba");
    assert!(again.status.success());
    assert_eq!(
        first.stdout, again.stdout,
        "a resubmitted file replays the first result"
    );
    let bad = import("aba/bad-total.aba");
    assert_eq!(bad.status.code(), Some(1));
    let bad_out = String::from_utf8_lossy(&bad.stdout);
    assert!(
        bad_out.contains("line 4") && bad_out.contains("credit_total"),
        "{bad_out}"
    );

    let log = server.stop();
    assert!(!log.contains(&token), "the token reached the log");
    // `folio_{id}_{secret}`: the id is hex, and the URL-safe base64 secret may itself hold
    // `_`, so the secret is everything after the second underscore.
    let token_secret = token.splitn(3, '_').nth(2).unwrap();
    assert!(token_secret.len() >= 40, "{token_secret}");
    assert!(
        !log.contains(token_secret),
        "the token secret reached the log"
    );
    assert!(
        !log.contains(ADMIN_PASSWORD),
        "an operator password reached the log"
    );
    assert!(!log.contains(&secret), "a TOTP secret reached the log");
    for code in &recovery_codes {
        assert!(
            !log.contains(code.as_str()),
            "a recovery code reached the log"
        );
    }

    let export = dir.path().join("ledger.folio");
    let exported = run(folio()
        .args([
            "export-ledger",
            "--ledger",
            &ledger_id,
            "--out",
            export.to_str().unwrap(),
        ])
        .env("FOLIO_DATA_DIR", &data_dir));
    assert!(
        exported.status.success(),
        "{}",
        String::from_utf8_lossy(&exported.stderr)
    );

    let verified = run(folio().args(["verify", export.to_str().unwrap()]));
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );
    let store = run(folio().args(["verify", "--data-dir", data_dir.to_str().unwrap()]));
    assert!(
        store.status.success(),
        "{}",
        String::from_utf8_lossy(&store.stdout)
    );

    // One flipped payload byte near the end of the file breaks the chain.
    let mut bytes = std::fs::read(&export).unwrap();
    let index = bytes.len() - 400;
    bytes[index] ^= 0x40;
    let tampered = dir.path().join("tampered.folio");
    std::fs::write(&tampered, bytes).unwrap();
    let broken = run(folio().args(["verify", "--json", tampered.to_str().unwrap()]));
    assert_eq!(broken.status.code(), Some(1));
    let verdict: Value = serde_json::from_slice(&broken.stdout).unwrap();
    assert_eq!(verdict["intact"], false);
    assert_eq!(verdict["code"], "changed_bytes", "{verdict}");
    assert!(verdict["position"].as_u64().is_some(), "{verdict}");
}

#[test]
fn verify_missing_file_is_a_usage_error() {
    let output = run(folio().args(["verify", "/nonexistent/ledger.folio"]));
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/ledger.folio"), "{stderr}");
}

#[test]
fn unknown_config_key_names_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(folio()
        .arg("serve")
        .env("FOLIO_DATA_DIR", dir.path())
        .env("FOLIO_BANK__MAX_ATEMPTS", "3"));
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("max_atempts"), "{stderr}");
}

#[test]
fn second_server_on_same_data_dir_stops() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let first = Server::start(&data_dir);
    let output = run(folio().arg("serve").env("FOLIO_DATA_DIR", &data_dir).env(
        "FOLIO_SERVER__LISTEN_ADDR",
        format!("127.0.0.1:{}", free_port()),
    ));
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("in use by another folio process"),
        "{stderr}"
    );
    first.stop();
}
