//! Copying operators and API tokens from one node's SQLite files into a shared PostgreSQL
//! database, for `folio migrate`.
//!
//! Rows are copied table by table with `INSERT ... ON CONFLICT DO NOTHING`, so a row the
//! target already has (the same operator or token, copied before) stays as it is. Sessions
//! and failure counts are not copied: they last hours at most, and migrating needs the
//! writers stopped anyway, so operators sign in again on the new nodes.

use anyhow::{bail, Context};
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, Row};

use super::{CredentialsLocation, Database, OPERATORS_FILE, TOKENS_FILE};

/// Type of a copied column.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Integer,
    Blob,
}

/// A table to copy and its columns. Every column may be NULL in the copy's binds, so the
/// target's constraints decide.
struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Kind)],
}

/// Tables of the operator store, in an order where each row's references come first.
const OPERATOR_TABLES: &[Table] = &[
    Table {
        name: "operators",
        columns: &[
            ("id", Kind::Text),
            ("ledger_id", Kind::Text),
            ("username", Kind::Text),
            ("password_hash", Kind::Text),
            ("roles", Kind::Text),
            ("created_at_micros", Kind::Integer),
            ("created_recorded", Kind::Integer),
            ("totp_sealed", Kind::Blob),
            ("totp_active", Kind::Integer),
            ("last_step", Kind::Integer),
            ("recovery_generation", Kind::Integer),
            ("recovery_acknowledged", Kind::Integer),
            ("locked_until_micros", Kind::Integer),
        ],
    },
    Table {
        name: "recovery_codes",
        columns: &[
            ("operator_id", Kind::Text),
            ("generation", Kind::Integer),
            ("code_id", Kind::Text),
            ("hash", Kind::Text),
            ("used_at_micros", Kind::Integer),
        ],
    },
    Table {
        name: "mfa_resets",
        columns: &[
            ("operator_id", Kind::Text),
            ("proposed_by", Kind::Text),
            ("reason", Kind::Text),
            ("proposed_at_micros", Kind::Integer),
        ],
    },
    Table {
        name: "operator_key_check",
        columns: &[
            ("id", Kind::Integer),
            ("sealed", Kind::Blob),
            ("created_at_micros", Kind::Integer),
        ],
    },
];

/// The table of the token store.
const TOKEN_TABLES: &[Table] = &[Table {
    name: "api_tokens",
    columns: &[
        ("id", Kind::Text),
        ("secret_hash", Kind::Blob),
        ("client", Kind::Text),
        ("scopes", Kind::Text),
        ("ledgers", Kind::Text),
        ("created_at_micros", Kind::Integer),
        ("revoked_at_micros", Kind::Integer),
    ],
}];

/// Rows copied by [`copy_credentials`], and rows the target already had.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopiedCredentials {
    /// Operators inserted.
    pub operators: u64,
    /// API tokens inserted.
    pub tokens: u64,
    /// Rows of any table that the target already had.
    pub skipped: u64,
}

/// Copies the operators, their second-factor state and the API tokens of the data
/// directory `from` into the shared database `to`, creating its tables if missing.
///
/// # Errors
/// A database cannot be opened, or the target's TOTP secrets were sealed under another MFA
/// key than the source's (then nothing is copied).
pub async fn copy_credentials(
    from: &CredentialsLocation,
    to: &CredentialsLocation,
) -> anyhow::Result<CopiedCredentials> {
    let (CredentialsLocation::Files(dir), CredentialsLocation::Postgres(_)) = (from, to) else {
        bail!("operators and tokens are copied from a data directory to PostgreSQL only");
    };
    let mut copied = CopiedCredentials::default();
    if dir.join(OPERATORS_FILE).exists() {
        use crate::operators::store::{SCHEMA, TABLES};
        let source = from.connect(OPERATORS_FILE, SCHEMA, TABLES).await?;
        let target = to.connect(OPERATORS_FILE, SCHEMA, TABLES).await?;
        check_same_key(&source, &target, from, to).await?;
        for table in OPERATOR_TABLES {
            let (inserted, skipped) = copy_table(&source, &target, table).await?;
            if table.name == "operators" {
                copied.operators = inserted;
            }
            copied.skipped += skipped;
        }
    }
    if dir.join(TOKENS_FILE).exists() {
        let tables = ["api_tokens"];
        let source = from
            .connect(TOKENS_FILE, crate::auth::SCHEMA, &tables)
            .await?;
        let target = to
            .connect(TOKENS_FILE, crate::auth::SCHEMA, &tables)
            .await?;
        for table in TOKEN_TABLES {
            let (inserted, skipped) = copy_table(&source, &target, table).await?;
            copied.tokens = inserted;
            copied.skipped += skipped;
        }
    }
    Ok(copied)
}

/// Refuses a target whose TOTP secrets were sealed under another key, because the copied
/// secrets would not open on its nodes. The check values are equal bytes only when one
/// was copied from the other.
async fn check_same_key(
    source: &Database,
    target: &Database,
    from: &CredentialsLocation,
    to: &CredentialsLocation,
) -> anyhow::Result<()> {
    let query = "SELECT sealed FROM operator_key_check WHERE id = 1";
    let sealed = |row: Option<AnyRow>| row.map(|row| row.try_get::<Vec<u8>, _>(0)).transpose();
    let theirs = sealed(sqlx::query(query).fetch_optional(&source.pool).await?)?;
    let ours = sealed(sqlx::query(query).fetch_optional(&target.pool).await?)?;
    match (theirs, ours) {
        (Some(theirs), Some(ours)) if theirs != ours => bail!(
            "the operators in {} use another MFA secret key than those already in {}; \
             migrate them into a database of their own, or enrol them again there",
            from.describe(),
            to.describe()
        ),
        _ => Ok(()),
    }
}

/// Copies every row of `table` and returns the rows inserted and the rows skipped.
async fn copy_table(
    source: &Database,
    target: &Database,
    table: &Table,
) -> anyhow::Result<(u64, u64)> {
    let names: Vec<&str> = table.columns.iter().map(|(name, _)| *name).collect();
    let select = format!("SELECT {} FROM {}", names.join(", "), table.name);
    let placeholders: Vec<String> = (1..=names.len()).map(|n| format!("${n}")).collect();
    let insert = format!(
        "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT DO NOTHING",
        table.name,
        names.join(", "),
        placeholders.join(", ")
    );
    let rows = sqlx::query(&select)
        .fetch_all(&source.pool)
        .await
        .with_context(|| format!("cannot read {}", table.name))?;

    let mut tx = target.pool.begin().await?;
    let (mut inserted, mut skipped) = (0, 0);
    for row in &rows {
        let mut query = sqlx::query(&insert);
        for (index, (_, kind)) in table.columns.iter().enumerate() {
            query = bind(query, row, index, *kind)?;
        }
        match query.execute(&mut *tx).await?.rows_affected() {
            0 => skipped += 1,
            _ => inserted += 1,
        }
    }
    tx.commit()
        .await
        .with_context(|| format!("cannot copy {}", table.name))?;
    Ok((inserted, skipped))
}

/// Binds column `index` of `row` with its type, NULL included.
fn bind<'q>(
    query: Query<'q, Any, AnyArguments<'q>>,
    row: &AnyRow,
    index: usize,
    kind: Kind,
) -> Result<Query<'q, Any, AnyArguments<'q>>, sqlx::Error> {
    Ok(match kind {
        Kind::Text => query.bind(row.try_get::<Option<String>, _>(index)?),
        Kind::Integer => query.bind(row.try_get::<Option<i64>, _>(index)?),
        Kind::Blob => query.bind(row.try_get::<Option<Vec<u8>>, _>(index)?),
    })
}
