//! A rotated PostgreSQL password takes effect without restarting Folio.
//!
//! The test starts a private PostgreSQL cluster with `initdb` and `pg_ctl` on a free
//! loopback port with `scram-sha-256` authentication, so a wrong password is rejected
//! (the shared test server trusts every connection). A `folio serve` child process takes
//! the password from a `file:` secret for the event store, the read models, operators and
//! tokens. The role's password is changed and the old backends are terminated: requests
//! fail until the new password is written to the file, then succeed in the same process.
//! With the file gone past `secrets.max_stale_seconds`, Folio returns 503 naming the
//! setting, and the password appears in no log line.
//!
//! Without `initdb` on PATH the test is skipped with a message, except under CI.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgConnection};

/// Superuser of the private cluster.
const ADMIN: &str = "folio_admin";

/// A private PostgreSQL cluster, stopped when dropped.
struct Cluster {
    dir: tempfile::TempDir,
    port: u16,
    admin_password: String,
}

impl Cluster {
    /// Creates and starts the cluster, or returns `None` when PostgreSQL's tools are
    /// missing outside CI.
    fn start() -> Option<Cluster> {
        if Command::new("initdb").arg("--version").output().is_err() {
            assert!(
                std::env::var_os("CI").is_none(),
                "initdb is not on PATH and CI is set"
            );
            eprintln!("SKIPPED: initdb is not on PATH; install PostgreSQL's server tools");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        // PostgreSQL refuses to run as root, so as root the cluster runs as `postgres`,
        // which must be able to enter the directory.
        open_to_all(dir.path());
        let admin_password = format!("admin-{}", uuid::Uuid::now_v7().simple());
        let password_file = dir.path().join("admin-password");
        std::fs::write(&password_file, &admin_password).unwrap();
        open_to_all(&password_file);

        let data = dir.path().join("data");
        let output = pg_command("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                ADMIN,
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", password_file.display()))
            .output()
            .unwrap();
        assert!(output.status.success(), "initdb: {output:?}");
        std::fs::remove_file(&password_file).unwrap();

        let port = free_port();
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1",
            dir.path().display()
        );
        let output = pg_command("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-o", &options, "-w", "-l"])
            .arg(dir.path().join("postgres.log"))
            .arg("start")
            .output()
            .unwrap();
        assert!(output.status.success(), "pg_ctl start: {output:?}");
        Some(Cluster {
            dir,
            port,
            admin_password,
        })
    }

    /// Runs `sql` as the superuser, over password authentication.
    async fn admin(&self, sql: &str) {
        let options = PgConnectOptions::new()
            .host("127.0.0.1")
            .port(self.port)
            .username(ADMIN)
            .password(&self.admin_password)
            .database("postgres");
        let mut connection: PgConnection = options.connect().await.unwrap();
        sqlx::raw_sql(sql)
            .execute(&mut connection)
            .await
            .unwrap_or_else(|error| panic!("{sql}: {error}"));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = pg_command("pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

/// Returns a PostgreSQL tool's command, run as `postgres` when this process is root.
fn pg_command(program: &str) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.starts_with(b"0\n"));
    match root {
        true => {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--", program]);
            command
        }
        false => Command::new(program),
    }
}

fn open_to_all(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = if path.is_dir() { 0o777 } else { 0o644 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A `folio serve` child process whose every log line is kept.
struct Folio {
    child: Child,
    base: String,
    token: String,
    logs: Arc<Mutex<Vec<String>>>,
    http: reqwest::Client,
}

impl Folio {
    fn start(data_dir: &Path, url: &str, secret: &Path) -> Folio {
        let reference = format!("file:{}", secret.display());
        let mut child = support::nodes::serve_command(data_dir, url)
            .env("FOLIO_STORE__PASSWORD_SECRET", &reference)
            .env("FOLIO_READ_MODELS__BACKEND", "postgres")
            .env("FOLIO_READ_MODELS__URL", url)
            .env("FOLIO_READ_MODELS__PASSWORD_SECRET", &reference)
            .env("FOLIO_SECRETS__TTL_SECONDS", "1")
            .env("FOLIO_SECRETS__MAX_STALE_SECONDS", "2")
            .env("FOLIO_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start folio serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (found, addr) = std::sync::mpsc::channel();
        let kept = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(entry) = serde_json::from_str::<Value>(&line) {
                    if entry["fields"]["message"] == "folio serving" {
                        let _ = found.send(entry["fields"]["addr"].as_str().map(str::to_owned));
                    }
                }
                kept.lock().unwrap().push(line);
            }
        });
        let addr = match addr.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr.expect("the address is a string"),
            Err(_) => panic!("folio serve did not start: {:?}", logs.lock().unwrap()),
        };
        let token = std::fs::read_to_string(data_dir.join("bootstrap-token")).unwrap();
        Folio {
            child,
            base: format!("http://{addr}"),
            token: token.trim().to_owned(),
            logs,
            http: reqwest::Client::new(),
        }
    }

    /// Creates the ledger of `tenant`; returns the status and the body.
    async fn create_ledger(&self, tenant: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}/v1/ledgers", self.base))
            .bearer_auth(&self.token)
            .header("Idempotency-Key", format!("ledger-{tenant}"))
            .json(&json!({"tenant": tenant}))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn readiness(&self) -> (StatusCode, Value) {
        let response = self
            .http
            .get(format!("{}/readyz", self.base))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Creates ledgers until one is created, for at most `limit`.
    async fn create_ledger_within(&self, tenant: &str, limit: Duration) -> (StatusCode, Value) {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = self.create_ledger(&format!("{tenant}-{attempt}")).await;
            if outcome.0 == StatusCode::CREATED || started.elapsed() > limit {
                return outcome;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Polls `/readyz` until `done` accepts the status and body, for at most `limit`.
    async fn readiness_until(
        &self,
        done: impl Fn(StatusCode, &Value) -> bool,
        limit: Duration,
    ) -> (StatusCode, Value) {
        let started = Instant::now();
        loop {
            let outcome = self.readiness().await;
            if done(outcome.0, &outcome.1) || started.elapsed() > limit {
                return outcome;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }
}

impl Drop for Folio {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_secret(path: &PathBuf, value: &str) {
    // Written to a new file and renamed, as Kubernetes updates a mounted secret, so Folio
    // never reads half a password.
    let staged = path.with_extension("new");
    std::fs::write(&staged, value).unwrap();
    std::fs::rename(&staged, path).unwrap();
}

#[tokio::test]
async fn rotated_database_password_applies_without_restart() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let old_password = format!("planted-db-one-{}", uuid::Uuid::now_v7().simple());
    let new_password = format!("planted-db-two-{}", uuid::Uuid::now_v7().simple());
    let create_role = format!("CREATE ROLE folio LOGIN PASSWORD '{old_password}'");
    cluster.admin(&create_role).await;
    cluster.admin("CREATE DATABASE folio OWNER folio").await;

    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("db-password");
    write_secret(&secret, &old_password);
    let url = format!("postgres://folio@127.0.0.1:{}/folio", cluster.port);
    let folio = Folio::start(&dir.path().join("data"), &url, &secret);
    let (status, body) = folio.create_ledger("before").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // The database takes the new password and drops every session of the old one.
    let alter_role = format!("ALTER ROLE folio PASSWORD '{new_password}'");
    cluster.admin(&alter_role).await;
    let terminate = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE usename = 'folio'";
    cluster.admin(terminate).await;
    // Three refresh periods with the old password in the file: new connections fail.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, body) = folio.create_ledger("during").await;
    assert_ne!(
        status,
        StatusCode::CREATED,
        "the old password still works: {body}"
    );

    // The new password reaches the pools without a restart.
    write_secret(&secret, &new_password);
    let (status, body) = folio
        .create_ledger_within("after", Duration::from_secs(20))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // The projection retries with a backoff of up to 30 s before it reads the read models
    // again and clears its error.
    let ready = |status: StatusCode, _: &Value| status == StatusCode::OK;
    let (status, body) = folio.readiness_until(ready, Duration::from_secs(40)).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The provider fails past max_stale_seconds: Folio stops taking requests and reports why.
    std::fs::remove_file(&secret).unwrap();
    let limit = Duration::from_secs(20);
    let names_secret = |_: StatusCode, body: &Value| {
        let reason = body["reason"].as_str().unwrap_or_default();
        reason.contains("store.password_secret")
    };
    let (status, body) = folio.readiness_until(names_secret, limit).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let reason = body["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("store.password_secret"), "{body}");
    assert!(reason.contains("stale"), "{body}");
    let (status, body) = folio.create_ledger("stale").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("store.password_secret"), "{body}");

    // The provider recovers: so does Folio.
    write_secret(&secret, &new_password);
    let (status, body) = folio.readiness_until(ready, limit).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = folio.create_ledger_within("recovered", limit).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // The rotation is logged, and neither password is.
    let logs = folio.logs();
    let rotated = logs
        .iter()
        .any(|line| line.contains("database password rotated"));
    assert!(rotated, "no rotation log line in {} lines", logs.len());
    let refused = logs.iter().any(|line| line.contains("secret rejected"));
    assert!(refused, "no stale log line in {} lines", logs.len());
    for password in [&old_password, &new_password, &cluster.admin_password] {
        let leaked = logs.iter().find(|line| line.contains(password.as_str()));
        assert!(leaked.is_none(), "a password reached the log: {leaked:?}");
    }
}
