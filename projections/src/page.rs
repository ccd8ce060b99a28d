//! Cursor pagination and the checkpoint every query result reports.

use serde::{Deserialize, Serialize};

/// Page size used when a request gives none.
pub const DEFAULT_PAGE_LIMIT: u32 = 100;

/// Largest page size a request may ask for; larger requests are capped to it.
pub const MAX_PAGE_LIMIT: u32 = 500;

/// A cursor request: items after a position, at most `limit` of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRequest {
    /// Return only items whose cursor position is greater than this.
    pub after_position: Option<u64>,
    /// Page size; `None` means [`DEFAULT_PAGE_LIMIT`], and values are capped to
    /// 1..=[`MAX_PAGE_LIMIT`].
    pub limit: Option<u32>,
}

impl PageRequest {
    /// Returns the page size after applying the default and the cap.
    pub fn effective_limit(&self) -> u32 {
        self.limit
            .unwrap_or(DEFAULT_PAGE_LIMIT)
            .clamp(1, MAX_PAGE_LIMIT)
    }

    /// Returns the lowest cursor position to skip, as a `BIGINT` bound.
    ///
    /// No position is below zero, so `-1` skips nothing; positions above `i64::MAX`
    /// cannot be stored, so such a cursor is clamped to the maximum.
    pub(crate) fn after_bound(&self) -> i64 {
        match self.after_position {
            None => -1,
            Some(after) => i64::try_from(after).unwrap_or(i64::MAX),
        }
    }

    /// Returns the number of rows to fetch: one more than the page, to detect a next page.
    pub(crate) fn fetch_limit(&self) -> i64 {
        i64::from(self.effective_limit()) + 1
    }
}

/// One page of a list query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Page<T> {
    /// Items in cursor order.
    pub items: Vec<T>,
    /// Cursor to pass as `after_position` for the next page; `None` on the last page.
    pub next_cursor: Option<u64>,
    /// Ledger position the read models reflect; `None` before the first event is applied.
    pub as_of_position: Option<u64>,
    /// Hash (hex) of the event at `as_of_position`.
    pub as_of_hash: Option<String>,
}

/// A single item with the checkpoint it was read at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AsOf<T> {
    /// The item.
    #[serde(flatten)]
    pub item: T,
    /// Ledger position the read models reflect.
    pub as_of_position: Option<u64>,
    /// Hash (hex) of the event at `as_of_position`.
    pub as_of_hash: Option<String>,
}

/// Cuts a fetched list of `fetch_limit` rows down to a page and computes the next cursor.
pub(crate) fn into_page<T>(
    request: &PageRequest,
    mut rows: Vec<(u64, T)>,
    checkpoint: Option<&crate::Checkpoint>,
) -> Page<T> {
    let limit = request.effective_limit() as usize;
    let has_more = rows.len() > limit;
    rows.truncate(limit);
    let next_cursor = if has_more {
        rows.last().map(|(cursor, _)| *cursor)
    } else {
        None
    };
    Page {
        items: rows.into_iter().map(|(_, item)| item).collect(),
        next_cursor,
        as_of_position: checkpoint.map(|c| c.position),
        as_of_hash: checkpoint.map(|c| hex::encode(c.head_hash)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_defaults_and_caps() {
        assert_eq!(PageRequest::default().effective_limit(), DEFAULT_PAGE_LIMIT);
        let huge = PageRequest {
            after_position: None,
            limit: Some(10_000),
        };
        assert_eq!(huge.effective_limit(), MAX_PAGE_LIMIT);
        let zero = PageRequest {
            after_position: None,
            limit: Some(0),
        };
        assert_eq!(zero.effective_limit(), 1);
    }

    #[test]
    fn next_cursor_only_when_more_rows() {
        let request = PageRequest {
            after_position: None,
            limit: Some(2),
        };
        let page = into_page(&request, vec![(3, 'a'), (5, 'b'), (9, 'c')], None);
        assert_eq!(page.items, vec!['a', 'b']);
        assert_eq!(page.next_cursor, Some(5));
        let last = into_page(&request, vec![(3, 'a'), (5, 'b')], None);
        assert_eq!(last.next_cursor, None);
    }
}
