//! Conversions between Rust values and database columns.
//!
//! Positions and amounts are `u64` in the domain but `BIGINT` (signed 64-bit) in SQL,
//! so every conversion is checked instead of cast.

use sqlx::any::AnyRow;
use sqlx::Row;
use uuid::Uuid;

use crate::ProjectionError;

/// Converts a `u64` to a `BIGINT` column value.
pub(crate) fn to_db(field: &'static str, value: u64) -> Result<i64, ProjectionError> {
    i64::try_from(value).map_err(|_| ProjectionError::OutOfRange { field, value })
}

/// Reads a non-negative `BIGINT` column as `u64`.
pub(crate) fn get_u64(
    row: &AnyRow,
    table: &'static str,
    column: &str,
) -> Result<u64, ProjectionError> {
    let value: i64 = row.try_get(column)?;
    u64::try_from(value).map_err(|_| ProjectionError::CorruptRow {
        table,
        reason: format!("{column} is negative: {value}"),
    })
}

/// Reads a nullable non-negative `BIGINT` column as `Option<u64>`.
pub(crate) fn get_opt_u64(
    row: &AnyRow,
    table: &'static str,
    column: &str,
) -> Result<Option<u64>, ProjectionError> {
    let value: Option<i64> = row.try_get(column)?;
    value
        .map(|v| {
            u64::try_from(v).map_err(|_| ProjectionError::CorruptRow {
                table,
                reason: format!("{column} is negative: {v}"),
            })
        })
        .transpose()
}

/// Reads a `TEXT` column holding a UUID.
pub(crate) fn get_uuid(
    row: &AnyRow,
    table: &'static str,
    column: &str,
) -> Result<Uuid, ProjectionError> {
    let text: String = row.try_get(column)?;
    parse_uuid(table, column, &text)
}

/// Reads a nullable `TEXT` column holding a UUID.
pub(crate) fn get_opt_uuid(
    row: &AnyRow,
    table: &'static str,
    column: &str,
) -> Result<Option<Uuid>, ProjectionError> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|t| parse_uuid(table, column, &t)).transpose()
}

fn parse_uuid(table: &'static str, column: &str, text: &str) -> Result<Uuid, ProjectionError> {
    Uuid::parse_str(text).map_err(|e| ProjectionError::CorruptRow {
        table,
        reason: format!("{column} is not a UUID ({text:?}): {e}"),
    })
}
