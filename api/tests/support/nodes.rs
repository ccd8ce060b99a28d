//! `folio serve` child processes on one PostgreSQL database, and the operators that drive
//! them over HTTP, for the tests of several nodes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use api::operators::client::OperatorClient;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

/// Password of the test operators; long enough and not a known pattern.
pub const PASSWORD: &str = "nodes marigold lantern 73";

/// A `folio serve` child process on the test database.
pub struct Node {
    child: Child,
    /// Base URL, such as `http://127.0.0.1:40123`.
    pub base: String,
    /// API token with every scope: the node's bootstrap token, or another node's.
    pub token: String,
    http: reqwest::Client,
}

/// Returns the `folio serve` command of a node with its own data directory on the
/// PostgreSQL store at `url`. New payees are payable at once.
pub fn serve_command(data_dir: &Path, url: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_folio"));
    command
        .arg("serve")
        .env("FOLIO_DATA_DIR", data_dir)
        .env("FOLIO_STORE__BACKEND", "postgres")
        .env("FOLIO_STORE__URL", url)
        .env("FOLIO_SERVER__LISTEN_ADDR", "127.0.0.1:0")
        .env("FOLIO_ALLOW_LIST__COOLING_OFF_SECONDS", "0")
        .env("FOLIO_LOG_FORMAT", "json")
        .env("FOLIO_LOG", "info");
    command
}

impl Node {
    /// Starts `folio serve` on `data_dir` and the store at `url`, and waits until it
    /// listens. The token is the bootstrap token the node wrote, if it wrote one.
    pub fn start(data_dir: &Path, url: &str) -> Node {
        Self::start_with(data_dir, url, &[])
    }

    /// Starts a node as [`Node::start`] does, with more `FOLIO_` variables.
    pub fn start_with(data_dir: &Path, url: &str, vars: &[(&str, &str)]) -> Node {
        let mut command = serve_command(data_dir, url);
        command.envs(vars.iter().copied());
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start folio serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let (found, addr) = std::sync::mpsc::channel();
        // The thread keeps draining the log after the address is found, so the child never
        // blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let Ok(entry) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if entry["fields"]["message"] == "folio serving" {
                    let _ = found.send(entry["fields"]["addr"].as_str().map(str::to_owned));
                }
            }
        });
        let addr = addr
            .recv_timeout(Duration::from_secs(60))
            .expect("folio serve logs its address")
            .expect("the address is a string");
        let token = std::fs::read_to_string(data_dir.join("bootstrap-token"))
            .map(|text| text.trim().to_owned())
            .unwrap_or_default();
        Node {
            child,
            base: format!("http://{addr}"),
            token,
            http: reqwest::Client::new(),
        }
    }

    /// POSTs JSON with an idempotency key; a connection failure is `None`.
    pub async fn post(&self, path: &str, key: &str, body: &Value) -> Option<(StatusCode, Value)> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("Idempotency-Key", key)
            .json(body)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .ok()?;
        let status = response.status();
        Some((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// GETs `path` with `token` and returns the status.
    pub async fn get_status(&self, path: &str, token: &str) -> StatusCode {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .expect("the node answers")
            .status()
    }

    /// Returns the ledgers whose workers run on this node, from `/readyz`, or an empty list
    /// while the node is not ready. The local read models of a node can report a passing
    /// `database is locked` while two ledgers are projected at once.
    pub async fn leased_ledgers(&self) -> Vec<Uuid> {
        let response = self
            .http
            .get(format!("{}/readyz", self.base))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .expect("the node answers");
        let body: Value = response.json().await.expect("a JSON body");
        if body["status"] == "not_ready" {
            eprintln!("not ready yet: {body}");
            return Vec::new();
        }
        serde_json::from_value(body["leased_ledgers"].clone())
            .unwrap_or_else(|_| panic!("/readyz lists no leased ledgers: {body}"))
    }

    /// Creates the ledger of `tenant` and returns its id.
    pub async fn create_ledger(&self, tenant: &str) -> Uuid {
        let body = json!({"tenant": tenant});
        let key = format!("ledger-{tenant}");
        let (status, body) = self.post("/v1/ledgers", &key, &body).await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
        serde_json::from_value(body["ledger_id"].clone()).unwrap()
    }

    /// Submits a payment; returns its id when acknowledged, `None` on a conflict or when the
    /// node is gone.
    pub async fn pay(&self, ledger: Uuid, payee: Uuid, key: &str) -> Option<Uuid> {
        let body = json!({
            "payee_id": payee, "amount_minor": 1234, "currency": "AUD", "reference": "NODES",
        });
        let (status, body) = self
            .post(&format!("/v1/ledgers/{ledger}/payments"), key, &body)
            .await?;
        match status {
            StatusCode::CREATED => {
                Some(serde_json::from_value(body["payment_id"].clone()).unwrap())
            }
            StatusCode::CONFLICT => None,
            other => panic!("payment: {other} {body}"),
        }
    }

    /// Kills the process with SIGKILL: the node gets no chance to finish anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Copies the signing keys and the MFA secret key of one node to another's data directory:
/// the nodes of a cluster share them.
pub fn share_keys(from: &Path, to: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let keys = to.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o700)).unwrap();
    for entry in std::fs::read_dir(from.join("keys")).unwrap() {
        let path = entry.unwrap().path();
        let copy = keys.join(path.file_name().unwrap());
        std::fs::copy(&path, &copy).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

/// Starts two nodes on the test database with shared keys. Only the first writes a
/// bootstrap token, because the second finds the first's in the shared database; both
/// nodes' clients use it.
pub fn two_nodes(dir: &Path, url: &str) -> (Node, Node, PathBuf) {
    let first_dir = dir.join("node-a");
    let second_dir = dir.join("node-b");
    let first = Node::start(&first_dir, url);
    assert!(
        !first.token.is_empty(),
        "the first node issues a bootstrap token"
    );
    share_keys(&first_dir, &second_dir);
    let mut second = Node::start(&second_dir, url);
    assert!(
        second.token.is_empty(),
        "the second node finds the shared token and issues none"
    );
    second.token = first.token.clone();
    (first, second, first_dir)
}

/// Runs `folio` with `args` and returns its standard output, failing the test on a
/// non-zero exit.
pub fn folio(args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_folio"))
        .args(args)
        .env_remove("FOLIO_STORE__URL")
        .env_remove("FOLIO_DATA_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run folio");
    let mut input = child.stdin.take().expect("piped stdin");
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .unwrap();
    drop(input);
    let output = child.wait_with_output().expect("folio finishes");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "folio {args:?}: {stdout} {stderr}");
    stdout
}

/// Bootstraps administrator `username` of `ledger` with `folio operator create` against the
/// shared database; no node's data directory is involved.
pub fn bootstrap_admin(url: &str, ledger: Uuid, username: &str) {
    create_admin(url, ledger, username, &[]);
}

/// Creates another administrator with the CLI, as a break-glass recovery would.
pub fn break_glass_admin(url: &str, ledger: Uuid, username: &str) {
    create_admin(url, ledger, username, &["--break-glass"]);
}

fn create_admin(url: &str, ledger: Uuid, username: &str, extra: &[&str]) {
    let ledger = ledger.to_string();
    let mut args = vec![
        "operator",
        "create",
        "--admin",
        "--store-url",
        url,
        "--ledger",
        &ledger,
        "--username",
        username,
    ];
    args.extend_from_slice(extra);
    folio(&args, Some(&format!("{PASSWORD}\n")));
}

/// Runs `folio verify` on the PostgreSQL store for one ledger and returns its JSON verdict.
pub fn folio_verify(url: &str, ledger: Uuid) -> Value {
    let ledger = ledger.to_string();
    let args = ["verify", "--json", "--ledger", &ledger, "--store-url", url];
    serde_json::from_str(folio(&args, None).trim()).expect("one JSON verdict")
}

/// The two operators of a ledger: an administrator bootstrapped with the command line who
/// signed in on the first node, and an approver they created who signed in on the second.
pub struct Approvals {
    /// Proposes changes on the first node.
    pub proposer: OperatorClient,
    /// Approves them on the second node.
    pub approver: OperatorClient,
}

impl Approvals {
    /// Bootstraps `ann` with the command line, enrols her on `first`, has her create the
    /// approver `bob`, and enrols him on `second`.
    pub async fn enrol(url: &str, ledger: Uuid, first: &Node, second: &Node) -> Approvals {
        bootstrap_admin(url, ledger, "ann");
        let mut proposer = OperatorClient::sign_in(&first.base, ledger, "ann", PASSWORD)
            .await
            .unwrap();
        proposer.enrol().await.unwrap();
        proposer
            .create_operator(ledger, "bob", PASSWORD, &["approver"])
            .await
            .unwrap();
        let mut approver = OperatorClient::sign_in(&second.base, ledger, "bob", PASSWORD)
            .await
            .unwrap();
        approver.enrol().await.unwrap();
        Approvals { proposer, approver }
    }

    /// Adds payee number `n`: proposed on the first node and approved on the second.
    /// Returns `None` when every retry lost a race for the allow-list.
    pub async fn add_payee(&self, ledger: Uuid, n: u32) -> Option<Uuid> {
        let body = json!({
            "name": format!("Payee {}", name_for(n)),
            "bsb": "062000",
            "account": format!("{}", 30_000_000 + n),
        });
        let path = format!("/v1/ledgers/{ledger}/payees");
        for _ in 0..20 {
            let (status, proposal) = self.proposer.post(&path, &body).await.unwrap();
            match status {
                StatusCode::ACCEPTED => {}
                StatusCode::CONFLICT => continue,
                other => panic!("proposal of payee {n}: {other} {proposal}"),
            }
            if self.approve(ledger, &proposal).await {
                return serde_json::from_value(proposal["change"]["payee_id"].clone()).ok();
            }
        }
        None
    }

    /// Approves a proposal, retrying when another change to the allow-list won the race.
    async fn approve(&self, ledger: Uuid, proposal: &Value) -> bool {
        let id = proposal["proposal_id"].as_str().unwrap();
        let path = format!("/v1/ledgers/{ledger}/proposals/{id}/approval");
        let body = json!({"content_hash": proposal["content_hash"]});
        for _ in 0..20 {
            let (status, answer) = self.approver.post(&path, &body).await.unwrap();
            match status {
                StatusCode::OK => return true,
                StatusCode::CONFLICT => continue,
                other => panic!("approval of {id}: {other} {answer}"),
            }
        }
        false
    }
}

/// Spells a number as words, so payee names do not look alike to the allow-list's checks.
pub fn name_for(n: u32) -> String {
    const WORDS: [&str; 10] = [
        "Acacia",
        "Banksia",
        "Casuarina",
        "Dianella",
        "Eremophila",
        "Ficus",
        "Grevillea",
        "Hakea",
        "Isopogon",
        "Jacksonia",
    ];
    let mut name = String::new();
    let mut rest = n;
    loop {
        name.push_str(WORDS[(rest % 10) as usize]);
        rest /= 10;
        if rest == 0 {
            return name;
        }
        name.push(' ');
    }
}
