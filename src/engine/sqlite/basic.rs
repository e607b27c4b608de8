//! The basic session operations in SQL (SPEC §5.2), statement for statement what the Python SDK's
//! `SQLiteSession` runs, with item JSON written by [`crate::pyjson`].

use agent_sessions_model::{parse_item, Item, Op, Outcome, RawMessage, SessionDump, SessionInfo};
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension};

use super::schema::Tables;
use crate::error::{Context, Result};

pub(super) fn execute(conn: &Connection, t: &Tables, op: &Op) -> Result<Outcome> {
    let sql = &t.sql;
    match op {
        Op::Init { structure } => {
            for ddl in &sql.ddl {
                conn.execute(ddl, []).context(format!(
                    "creating tables {} / {}",
                    t.sessions.sql(),
                    t.messages.sql()
                ))?;
            }
            if *structure {
                super::advanced::init_structure(conn, t)?;
            }
            Ok(Outcome::Done)
        }
        Op::StructureStatus => Ok(Outcome::Structure(super::advanced::structure_status(
            conn, t,
        )?)),
        Op::Advanced { session, view, op } => super::advanced::execute(conn, t, session, view, op),
        Op::AddItems { session, items } => {
            if items.is_empty() {
                return Ok(Outcome::Done);
            }
            conn.prepare_cached(&sql.insert_session)?
                .execute([session])?;
            let mut insert = conn.prepare_cached(&sql.insert_message)?;
            let mut text = String::new();
            for item in items {
                text.clear();
                crate::json::write_python_json(&mut text, item);
                insert.execute(params![session, text])?;
            }
            conn.prepare_cached(&sql.touch_session)?
                .execute([session])?;
            Ok(Outcome::Done)
        }
        Op::GetItems { session, limit } => Ok(Outcome::Items(get_items(conn, t, session, *limit)?)),
        Op::PopItem { session } => {
            let mut pop = conn.prepare_cached(&sql.pop_newest)?;
            loop {
                let row: Option<Option<String>> = pop
                    .query_row([session], |r| Ok(text_of(r.get_ref(0)?)))
                    .optional()?;
                match row {
                    None => return Ok(Outcome::Popped(None)),
                    Some(data) => {
                        if let Some(item) = data.as_deref().and_then(parse_item) {
                            return Ok(Outcome::Popped(Some(item)));
                        }
                    }
                }
            }
        }
        Op::ClearSession { session } => {
            conn.prepare_cached(&sql.delete_messages)?
                .execute([session])?;
            conn.prepare_cached(&sql.delete_session)?
                .execute([session])?;
            Ok(Outcome::Done)
        }
        Op::ListSessions => {
            let mut stmt = conn.prepare_cached(&sql.list_sessions)?;
            let rows = stmt.query_map([], |r| {
                Ok(SessionInfo {
                    session_id: text_of(r.get_ref(0)?).unwrap_or_default(),
                    created_at: text_of(r.get_ref(1)?).unwrap_or_default(),
                    updated_at: text_of(r.get_ref(2)?).unwrap_or_default(),
                    item_count: r.get::<_, i64>(3)?.max(0) as u64,
                })
            })?;
            Ok(Outcome::Sessions(rows.collect::<rusqlite::Result<_>>()?))
        }
        Op::PlantRaw { session, data } => {
            conn.prepare_cached(&sql.insert_session)?
                .execute([session])?;
            conn.prepare_cached(&sql.insert_message)?
                .execute(params![session, data])?;
            Ok(Outcome::Done)
        }
        Op::Export { session } => {
            let row = conn
                .prepare_cached(&sql.session_row)?
                .query_row([session], |r| {
                    Ok((text_of(r.get_ref(0)?), text_of(r.get_ref(1)?)))
                })
                .optional()?;
            let mut stmt = conn.prepare_cached(&sql.export_messages)?;
            let messages = stmt
                .query_map([session], |r| {
                    Ok(RawMessage {
                        message_data: text_of(r.get_ref(0)?).unwrap_or_default(),
                        created_at: text_of(r.get_ref(1)?).unwrap_or_default(),
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            let (created_at, updated_at) = match row {
                Some((c, u)) => (Some(c.unwrap_or_default()), Some(u.unwrap_or_default())),
                None => (None, None),
            };
            Ok(Outcome::Dump(SessionDump {
                session_id: session.clone(),
                created_at,
                updated_at,
                messages,
            }))
        }
        Op::Import(dump) => {
            conn.prepare_cached(&sql.import_session)?.execute(params![
                dump.session_id,
                dump.created_at,
                dump.updated_at
            ])?;
            let mut insert = conn.prepare_cached(&sql.import_message)?;
            for m in &dump.messages {
                let created = (!m.created_at.is_empty()).then_some(&m.created_at);
                insert.execute(params![dump.session_id, m.message_data, created])?;
            }
            Ok(Outcome::Done)
        }
    }
}

fn get_items(
    conn: &Connection,
    t: &Tables,
    session: &str,
    limit: Option<i64>,
) -> Result<Vec<Item>> {
    let map = |r: &rusqlite::Row<'_>| Ok(text_of(r.get_ref(0)?));
    limited_items(
        limit,
        || {
            let mut stmt = conn.prepare_cached(&t.sql.select_all)?;
            let rows: rusqlite::Result<Vec<Option<String>>> =
                stmt.query_map([session], map)?.collect();
            Ok(rows?)
        },
        |window| {
            let mut stmt = conn.prepare_cached(&t.sql.select_newest)?;
            let rows: rusqlite::Result<Vec<Option<String>>> =
                stmt.query_map(params![session, window], map)?.collect();
            Ok(rows?)
        },
    )
}

/// The limit rules of `get_items` over stored rows: `fetch_all` gives every row oldest first,
/// `fetch_newest(n)` the newest `n` rows newest first (SQLite `LIMIT n`, so a negative `n`
/// means all). Newest-`limit` reads widen their window until `limit` valid items are found or
/// history runs out, so corrupt rows never shorten the answer (SPEC §5.2).
pub(super) fn limited_items(
    limit: Option<i64>,
    fetch_all: impl Fn() -> Result<Vec<Option<String>>>,
    fetch_newest: impl Fn(i64) -> Result<Vec<Option<String>>>,
) -> Result<Vec<Item>> {
    let decode = |rows: Vec<Option<String>>| -> Vec<Item> {
        rows.iter()
            .filter_map(|d| d.as_deref().and_then(parse_item))
            .collect()
    };
    match limit {
        None => Ok(decode(fetch_all()?)),
        Some(n) if n > 0 => {
            let want = usize::try_from(n).unwrap_or(usize::MAX);
            let mut window = n;
            loop {
                let mut rows = fetch_newest(window)?;
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
            let mut rows = fetch_newest(n)?;
            rows.reverse();
            Ok(decode(rows))
        }
    }
}

/// Stored text of a column, whatever its storage class (other programs may store BLOBs or
/// numbers); `None` for NULL or bytes that are not UTF-8.
pub(super) fn text_of(v: ValueRef<'_>) -> Option<String> {
    match v {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(f) => Some(f.to_string()),
        ValueRef::Text(b) | ValueRef::Blob(b) => std::str::from_utf8(b).ok().map(str::to_owned),
    }
}
