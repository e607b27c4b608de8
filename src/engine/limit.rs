//! The `limit` rules of `get_items` (SPEC §5.2), written once for every engine and for both
//! session kinds: an engine only says how to fetch stored rows, oldest first or newest first.

use agent_sessions_model::{parse_item, Item};

use crate::error::Result;

/// The items of `get_items(limit)` over stored `message_data` texts (`None`: NULL or not text).
///
/// `fetch(None)` gives every row oldest first; `fetch(Some(n))` the newest `n` rows newest first,
/// where a negative `n` means all (SQLite's `LIMIT`). Newest-`limit` reads widen their window
/// until `limit` valid items are found or history runs out, so corrupt rows never shorten the
/// answer.
pub(crate) fn limited_items(
    limit: Option<i64>,
    mut fetch: impl FnMut(Option<i64>) -> Result<Vec<Option<String>>>,
) -> Result<Vec<Item>> {
    let decode = |rows: Vec<Option<String>>| -> Vec<Item> {
        rows.iter()
            .filter_map(|d| d.as_deref().and_then(parse_item))
            .collect()
    };
    match limit {
        None => Ok(decode(fetch(None)?)),
        Some(n) if n > 0 => {
            let want = usize::try_from(n).unwrap_or(usize::MAX);
            let mut window = n;
            loop {
                let mut rows = fetch(Some(window))?;
                let exhausted = (rows.len() as i64) < window;
                rows.reverse();
                let mut items = decode(rows);
                if items.len() >= want {
                    return Ok(items.split_off(items.len() - want));
                }
                if exhausted || window == i64::MAX {
                    return Ok(items);
                }
                window = window.saturating_mul(2);
            }
        }
        Some(n) => {
            let mut rows = fetch(Some(n))?;
            rows.reverse();
            Ok(decode(rows))
        }
    }
}
