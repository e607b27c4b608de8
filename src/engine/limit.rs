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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A session's stored rows, oldest first, as an engine would fetch them; counts fetches.
    struct History {
        rows: Vec<Option<String>>,
        fetches: usize,
    }

    impl History {
        fn new(rows: &[&str]) -> Self {
            History {
                rows: rows.iter().map(|r| Some(r.to_string())).collect(),
                fetches: 0,
            }
        }
        fn get(&mut self, limit: Option<i64>) -> Vec<Item> {
            self.fetches = 0;
            let rows = self.rows.clone();
            let fetches = &mut self.fetches;
            limited_items(limit, |n| {
                *fetches += 1;
                Ok(match n {
                    None => rows.clone(),
                    Some(n) => {
                        let n = usize::try_from(n).unwrap_or(usize::MAX).min(rows.len());
                        rows.iter().rev().take(n).cloned().collect()
                    }
                })
            })
            .unwrap()
        }
    }

    #[test]
    fn newest_items_widen_past_corrupt_rows_and_stop_when_history_runs_out() {
        let mut h = History::new(&["1", "2", "3"]);
        assert_eq!(h.get(Some(5)), vec![json!(1), json!(2), json!(3)]);
        assert_eq!(
            h.fetches, 1,
            "a short history is known to be exhausted at once"
        );
        assert_eq!(h.get(Some(2)), vec![json!(2), json!(3)]);
        assert_eq!(h.fetches, 1);

        // Ten rows, the newest four corrupt: windows of 3, 6 and 12 rows (the last runs out).
        let mut h = History::new(&["1", "2", "3", "4", "5", "6", "{", "{", "{", "{"]);
        assert_eq!(h.get(Some(3)), vec![json!(4), json!(5), json!(6)]);
        assert_eq!(h.fetches, 3);
        // Fewer valid items than asked for: all of them, once history runs out.
        assert_eq!(h.get(Some(9)).len(), 6);
        assert_eq!(h.fetches, 2);

        assert_eq!(h.get(Some(0)), Vec::<Item>::new());
        assert_eq!(h.get(Some(-1)).len(), 6, "a negative limit means all");
        assert_eq!(h.get(None).len(), 6);
    }
}
