//! A fresh PostgreSQL database per test, dropped when the test ends.
//!
//! The server is `FOLIO_TEST_POSTGRES_URL`, by default `postgres://postgres@127.0.0.1:5432/test`.
//! When it cannot be reached, [`TestDatabase::create`] prints that the test is skipped and why,
//! and returns `None`, except when `CI` is set: CI must run these tests, so there it panics.

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

/// Server used when `FOLIO_TEST_POSTGRES_URL` is not set.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A database created for one test. Dropping it drops the database.
pub struct TestDatabase {
    admin: PgConnectOptions,
    name: String,
    url: String,
}

impl TestDatabase {
    /// Creates `folio_t_<random>` on the test server, or returns `None` (after saying why) when
    /// the server is unreachable outside CI.
    pub async fn create() -> Option<TestDatabase> {
        let admin_url =
            std::env::var("FOLIO_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
        let admin = PgConnectOptions::from_str(&admin_url)
            .unwrap_or_else(|e| panic!("FOLIO_TEST_POSTGRES_URL {admin_url:?} is invalid: {e}"));
        let mut connection = match admin.connect().await {
            Ok(connection) => connection,
            Err(error) if std::env::var_os("CI").is_some() => {
                panic!("PostgreSQL at {admin_url} is unreachable and CI is set: {error}")
            }
            Err(error) => {
                eprintln!(
                    "SKIPPED: PostgreSQL at {admin_url} is unreachable ({error}); start it or set \
                     FOLIO_TEST_POSTGRES_URL to run this test"
                );
                return None;
            }
        };
        let name = format!("folio_t_{}", uuid::Uuid::now_v7().simple());
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut connection)
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on {admin_url}: {e}"));
        let _ = connection.close().await;
        let url = with_database(&admin_url, &name);
        Some(TestDatabase { admin, name, url })
    }

    /// URL of the test database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Name of the test database.
    #[allow(dead_code)]
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Replaces the database name in a `postgres://` URL, keeping its query string.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{database}", &base[..path_start]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot block on a future, so the database
        // is dropped from a thread with a runtime of its own.
        let admin = self.admin.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime for dropping a test database");
            runtime.block_on(async move {
                let mut connection = admin.connect().await?;
                sqlx::raw_sql(&sql).execute(&mut connection).await?;
                connection.close().await
            })
        })
        .join();
        if let Ok(Err(error)) = dropped {
            eprintln!("could not drop test database {}: {error}", self.name);
        }
    }
}
