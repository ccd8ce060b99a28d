//! Bearer API tokens with scopes, stored hashed in `auth.sqlite`, or in the PostgreSQL
//! database that several nodes share (see [`crate::credentials`]).
//!
//! A token reads `folio_<id>_<secret>`: the id is public and appears in events
//! as the credential used; the secret is 256 random bits, stored only as a
//! keyed BLAKE3 digest and compared in constant time.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;

use actix_web::{web, FromRequest, HttpRequest};
use base64::Engine as _;
use domain::record::{Actor, ActorKind};
use sqlx::{AnyPool, Row};
use uuid::Uuid;

use crate::credentials::{CredentialsLocation, TOKENS_FILE};
use crate::problem::ApiError;

/// A permission carried by a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Create ledgers.
    LedgersCreate,
    /// Read ledgers and their heads.
    LedgersRead,
    /// Add and remove payees.
    PayeesWrite,
    /// Read the allow-list.
    PayeesRead,
    /// Submit payments and ABA files.
    PaymentsSubmit,
    /// Read payments.
    PaymentsRead,
    /// Read the dead-letter queue.
    DlqRead,
    /// Read the audit trail.
    AuditRead,
    /// Record a controls run, which appends a signed `controls.run_recorded` event.
    ControlsRun,
}

impl Scope {
    /// Every scope, in display order.
    pub const ALL: [Scope; 9] = [
        Scope::LedgersCreate,
        Scope::LedgersRead,
        Scope::PayeesWrite,
        Scope::PayeesRead,
        Scope::PaymentsSubmit,
        Scope::PaymentsRead,
        Scope::DlqRead,
        Scope::AuditRead,
        Scope::ControlsRun,
    ];

    /// Wire name, such as `payments:submit`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::LedgersCreate => "ledgers:create",
            Scope::LedgersRead => "ledgers:read",
            Scope::PayeesWrite => "payees:write",
            Scope::PayeesRead => "payees:read",
            Scope::PaymentsSubmit => "payments:submit",
            Scope::PaymentsRead => "payments:read",
            Scope::DlqRead => "dlq:read",
            Scope::AuditRead => "audit:read",
            Scope::ControlsRun => "controls:run",
        }
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == text)
            .ok_or_else(|| {
                let known: Vec<&str> = Scope::ALL.iter().map(|scope| scope.as_str()).collect();
                format!("unknown scope {text:?}; known scopes: {}", known.join(", "))
            })
    }
}

/// Parses a comma-separated scope list; `all` means every scope.
///
/// # Errors
/// Names the first unknown scope and lists the known ones.
pub fn parse_scopes(text: &str) -> Result<BTreeSet<Scope>, String> {
    if text.trim() == "all" {
        return Ok(Scope::ALL.into_iter().collect());
    }
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(Scope::from_str)
        .collect()
}

/// A stored token, without its secret.
#[derive(Debug, Clone)]
pub struct TokenInfo {
    /// Public token id.
    pub id: String,
    /// Client the token belongs to.
    pub client: String,
    /// Scopes granted.
    pub scopes: BTreeSet<Scope>,
    /// Ledgers the token may touch; `None` means every ledger.
    pub ledgers: Option<BTreeSet<Uuid>>,
}

/// The token table, in its own SQLite file or in the shared database.
#[derive(Clone)]
pub struct TokenStore {
    pool: AnyPool,
}

/// The token table, in SQL that SQLite and PostgreSQL both accept (`BLOB` becomes `BYTEA`).
pub(crate) const SCHEMA: &[&str] = &["CREATE TABLE IF NOT EXISTS api_tokens (
    id TEXT PRIMARY KEY,
    secret_hash BLOB NOT NULL,
    client TEXT NOT NULL,
    scopes TEXT NOT NULL,
    ledgers TEXT NOT NULL,
    created_at_micros BIGINT NOT NULL,
    revoked_at_micros BIGINT
)"];

const TOKEN_HASH_CONTEXT: &str = "folio api token secret v1";

fn hash_secret(secret: &str) -> [u8; 32] {
    blake3::derive_key(TOKEN_HASH_CONTEXT, secret.as_bytes())
}

impl TokenStore {
    /// Returns the connection pool, so a rotated database password can be applied to it.
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Opens or creates the token database at `location`.
    ///
    /// # Errors
    /// Fails if the database cannot be opened or the schema cannot be created, naming it.
    pub async fn open(location: &CredentialsLocation) -> anyhow::Result<Self> {
        let database = location
            .connect(TOKENS_FILE, SCHEMA, &["api_tokens"])
            .await?;
        Ok(TokenStore {
            pool: database.pool,
        })
    }

    /// Creates a token and returns it in full; the secret is not stored and cannot be shown again.
    ///
    /// # Errors
    /// Fails on a database error.
    pub async fn issue(
        &self,
        client: &str,
        scopes: &BTreeSet<Scope>,
        ledgers: Option<&BTreeSet<Uuid>>,
        now_micros: i64,
    ) -> anyhow::Result<String> {
        let mut id_bytes = [0u8; 8];
        let mut secret_bytes = [0u8; 32];
        getrandom::getrandom(&mut id_bytes)?;
        getrandom::getrandom(&mut secret_bytes)?;
        let id = hex::encode(id_bytes);
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret_bytes);
        let scope_text: Vec<&str> = scopes.iter().map(|scope| scope.as_str()).collect();
        let ledger_text = match ledgers {
            None => "*".to_owned(),
            Some(set) => set
                .iter()
                .map(Uuid::to_string)
                .collect::<Vec<_>>()
                .join(","),
        };
        sqlx::query(
            "INSERT INTO api_tokens (id, secret_hash, client, scopes, ledgers, created_at_micros)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(hash_secret(&secret).to_vec())
        .bind(client)
        .bind(scope_text.join(","))
        .bind(ledger_text)
        .bind(now_micros)
        .execute(&self.pool)
        .await?;
        Ok(format!("folio_{id}_{secret}"))
    }

    /// Revokes a token by id and returns whether an active token was revoked.
    ///
    /// # Errors
    /// Fails on a database error.
    pub async fn revoke(&self, id: &str, now_micros: i64) -> anyhow::Result<bool> {
        let result = sqlx::query(
            "UPDATE api_tokens SET revoked_at_micros = $1 WHERE id = $2 AND revoked_at_micros IS NULL",
        )
        .bind(now_micros)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Returns whether any unrevoked token exists.
    ///
    /// # Errors
    /// Fails on a database error.
    pub async fn any_active(&self) -> anyhow::Result<bool> {
        let row = sqlx::query("SELECT COUNT(*) FROM api_tokens WHERE revoked_at_micros IS NULL")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>(0)? > 0)
    }

    /// Checks a presented token and returns what it grants.
    ///
    /// # Errors
    /// `unauthenticated` for a malformed, unknown, revoked or wrong token, with no hint which.
    pub async fn authenticate(&self, presented: &str) -> Result<TokenInfo, ApiError> {
        let rejected = || {
            ApiError::unauthenticated(
                "the bearer token is malformed, unknown or revoked; \
                 send `Authorization: Bearer folio_<id>_<secret>` with a current token",
            )
        };
        let (id, secret) = split_token(presented).ok_or_else(rejected)?;
        let row = sqlx::query(
            "SELECT secret_hash, client, scopes, ledgers FROM api_tokens
             WHERE id = $1 AND revoked_at_micros IS NULL",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(rejected)?;

        let stored: Vec<u8> = row.try_get(0).map_err(ApiError::internal)?;
        let stored: [u8; 32] = stored
            .try_into()
            .map_err(|_| ApiError::internal("bad token hash"))?;
        // blake3::Hash compares in constant time.
        if blake3::Hash::from(stored) != blake3::Hash::from(hash_secret(secret)) {
            return Err(rejected());
        }
        let text = |index: usize| row.try_get::<String, _>(index).map_err(ApiError::internal);
        token_info(id, text(1)?, text(2)?, text(3)?)
    }
}

fn split_token(presented: &str) -> Option<(&str, &str)> {
    let rest = presented.strip_prefix("folio_")?;
    let (id, secret) = rest.split_once('_')?;
    let id_ok = id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit());
    (id_ok && !secret.is_empty() && secret.len() <= 64).then_some((id, secret))
}

fn token_info(
    id: &str,
    client: String,
    scopes: String,
    ledgers: String,
) -> Result<TokenInfo, ApiError> {
    let scopes = parse_scopes(&scopes).map_err(ApiError::internal)?;
    let ledgers = if ledgers == "*" {
        None
    } else {
        let parsed: Result<BTreeSet<Uuid>, _> = ledgers.split(',').map(Uuid::parse_str).collect();
        Some(parsed.map_err(ApiError::internal)?)
    };
    Ok(TokenInfo {
        id: id.to_owned(),
        client,
        scopes,
        ledgers,
    })
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller(pub TokenInfo, Option<Actor>);

impl Caller {
    /// Fails with 403 unless the token has `scope`.
    ///
    /// # Errors
    /// `forbidden`, naming the missing scope.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.0.scopes.contains(&scope) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "token {} lacks scope {}; issue a token with that scope",
                self.0.id,
                scope.as_str()
            )))
        }
    }

    /// Fails with 403 unless the token has `scope` and may touch `ledger_id`.
    ///
    /// # Errors
    /// `forbidden`, naming the scope or ledger.
    pub fn require_on(&self, scope: Scope, ledger_id: Uuid) -> Result<(), ApiError> {
        self.require(scope)?;
        match &self.0.ledgers {
            Some(ledgers) if !ledgers.contains(&ledger_id) => Err(ApiError::forbidden(format!(
                "token {} is not valid for ledger {ledger_id}",
                self.0.id
            ))),
            _ => Ok(()),
        }
    }

    /// Returns the actor recorded in events caused by this caller.
    pub fn actor(&self) -> Actor {
        if let Some(operator) = &self.1 {
            return operator.clone();
        }
        Actor {
            kind: ActorKind::ApiClient,
            id: self.0.client.clone(),
            credential: self.0.id.clone(),
        }
    }
}

impl Caller {
    /// Builds the caller of an operator session that passed a second factor: its operator's
    /// scopes mapped to the API's, on the operator's ledger only.
    pub fn from_operator(session: &crate::operators::session::OperatorSession) -> Caller {
        use domain::operators::OperatorScope;
        let mut scopes = BTreeSet::new();
        for scope in session.scopes() {
            match scope {
                OperatorScope::View => scopes.extend([
                    Scope::LedgersRead,
                    Scope::PayeesRead,
                    Scope::PaymentsRead,
                    Scope::AuditRead,
                ]),
                OperatorScope::PaymentsSubmit => {
                    scopes.insert(Scope::PaymentsSubmit);
                }
                OperatorScope::DlqRead => {
                    scopes.insert(Scope::DlqRead);
                }
                _ => {}
            }
        }
        let info = TokenInfo {
            id: format!("of operator {}", session.operator.username),
            client: session.operator.id.to_string(),
            scopes,
            ledgers: Some(BTreeSet::from([session.operator.ledger_id])),
        };
        Caller(info, Some(session.actor()))
    }
}

impl FromRequest for Caller {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(request: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let request = request.clone();
        let tokens = request.app_data::<web::Data<TokenStore>>().cloned();
        let header = request
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        Box::pin(async move {
            let tokens = tokens.ok_or_else(|| ApiError::internal("token store not configured"))?;
            let header = header.ok_or_else(|| {
                ApiError::unauthenticated("missing Authorization header; send `Bearer <token>`")
            })?;
            let token = header.strip_prefix("Bearer ").ok_or_else(|| {
                ApiError::unauthenticated("the Authorization header must use the Bearer scheme")
            })?;
            if token.trim().starts_with("fsess_") {
                let session = crate::operators::session::authenticate_person(&request).await?;
                return Ok(Caller::from_operator(&session));
            }
            let info = tokens.authenticate(token.trim()).await?;
            Ok(Caller(info, None))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Opens a token store in a new temporary directory, kept alive by the returned guard.
    async fn token_store() -> (tempfile::TempDir, TokenStore) {
        let dir = tempfile::tempdir().unwrap();
        let location = CredentialsLocation::Files(dir.path().to_path_buf());
        let store = TokenStore::open(&location).await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn issued_token_authenticates() {
        let (_dir, store) = token_store().await;
        let scopes = parse_scopes("payments:submit,payments:read").unwrap();
        let token = store.issue("payroll-co", &scopes, None, 0).await.unwrap();

        let info = store.authenticate(&token).await.unwrap();
        assert_eq!(info.client, "payroll-co");
        assert_eq!(info.scopes, scopes);
        assert!(info.ledgers.is_none());
    }

    #[tokio::test]
    async fn revoked_token_is_rejected() {
        let (_dir, store) = token_store().await;
        let token = store
            .issue("c", &parse_scopes("all").unwrap(), None, 0)
            .await
            .unwrap();
        let id = token.split('_').nth(1).unwrap().to_owned();

        assert!(store.revoke(&id, 1).await.unwrap());
        assert!(
            !store.revoke(&id, 2).await.unwrap(),
            "a second revoke finds nothing"
        );
        let error = store.authenticate(&token).await.unwrap_err();
        assert_eq!(error.code, "unauthenticated");
    }

    #[tokio::test]
    async fn wrong_secret_is_rejected() {
        let (_dir, store) = token_store().await;
        let token = store
            .issue("c", &parse_scopes("all").unwrap(), None, 0)
            .await
            .unwrap();
        let mut forged = token.clone();
        forged.pop();
        forged.push(if token.ends_with('A') { 'B' } else { 'A' });

        let error = store.authenticate(&forged).await.unwrap_err();
        assert_eq!(error.code, "unauthenticated");
    }

    #[test]
    fn unknown_scope_names_known_ones() {
        let error = parse_scopes("payments:submit,payments:delete").unwrap_err();
        assert!(error.contains("payments:delete"));
        assert!(error.contains("payments:read"));
    }
}
