//! A fresh PostgreSQL database per test, dropped afterwards.
//!
//! The server comes from `FOLIO_TEST_POSTGRES_URL`, by default
//! `postgres://postgres@127.0.0.1:5432/test`. When it cannot be reached the test prints
//! why it is skipped and passes, unless `CI` is set, where it fails.

use std::io::Write;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Executor};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A database created for one test.
pub struct TestDatabase {
    admin: PgConnectOptions,
    name: String,
    /// URL of the new database.
    pub url: String,
}

impl TestDatabase {
    /// Creates `folio_t_<random>`, or returns `None` (after printing why) when PostgreSQL
    /// is unreachable outside CI.
    pub async fn create(test: &str) -> Option<TestDatabase> {
        let base = std::env::var("FOLIO_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.into());
        let admin: PgConnectOptions = base
            .parse()
            .unwrap_or_else(|error| panic!("invalid FOLIO_TEST_POSTGRES_URL {base:?}: {error}"));
        let mut connection = match admin.connect().await {
            Ok(connection) => connection,
            Err(error) if std::env::var_os("CI").is_some() => {
                panic!("{test}: PostgreSQL at {base} is unreachable and CI is set: {error}")
            }
            Err(error) => {
                // Written past the test harness's capture, so a skip shows in every run.
                let _ = writeln!(
                    std::io::stderr(),
                    "{test}: skipped, PostgreSQL at {base} is unreachable ({error}); \
                     start it or set FOLIO_TEST_POSTGRES_URL"
                );
                return None;
            }
        };
        let name = format!("folio_t_{}", uuid::Uuid::now_v7().simple());
        connection
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap_or_else(|error| panic!("cannot create test database {name}: {error}"));
        let _ = connection.close().await;
        let url = admin.clone().database(&name).to_url_lossy().to_string();
        Some(TestDatabase { admin, name, url })
    }

    /// Opens a connection to the test database.
    #[allow(dead_code)] // Not every test file needs a direct connection.
    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url)
            .await
            .expect("connect to the test database")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop may run inside a runtime, so the cleanup gets its own thread and runtime.
        let admin = self.admin.clone();
        let name = self.name.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            runtime.block_on(async move {
                let mut connection = admin.connect().await?;
                let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                connection.execute(sql.as_str()).await?;
                Ok::<_, sqlx::Error>(())
            })
        });
        match cleanup.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("could not drop test database {}: {error}", self.name),
            Err(_) => eprintln!("cleanup of test database {} panicked", self.name),
        }
    }
}
