//! The basic session operations in SQL (SPEC §5.2), statement for statement what the Python SDK's
//! `SQLiteSession` runs, with item JSON written by [`crate::json`].

use agent_sessions_model::{parse_item, Item, RawMessage, SessionDump, SessionInfo};
use rusqlite::{params, Connection, OptionalExtension};

use super::sql::Tables;
use super::value::text_of;
use crate::engine::limit::limited_items;
use crate::error::Result;

pub(crate) fn add_items(
    conn: &Connection,
    t: &Tables,
    session: &str,
    items: &[Item],
) -> Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    append_items(conn, t, session, items, true, &mut String::new())?;
    conn.prepare_cached(&t.basic.touch_session)?
        .execute([session])?;
    Ok(())
}

/// The rows of [`add_items`] without the `updated_at` touch (the writer defers it to the end of
/// its group), and without the session-row upsert unless `upsert` (the group already made it);
/// items are encoded through `text`.
pub(crate) fn append_items(
    conn: &Connection,
    t: &Tables,
    session: &str,
    items: &[Item],
    upsert: bool,
    text: &mut String,
) -> Result<()> {
    let sql = &t.basic;
    if upsert {
        conn.prepare_cached(&sql.insert_session)?
            .execute([session])?;
    }
    let mut insert = conn.prepare_cached(&sql.insert_message)?;
    for item in items {
        text.clear();
        crate::json::write_python_json(text, item);
        insert.execute(params![session, text.as_str()])?;
    }
    Ok(())
}

pub(crate) fn get_items(
    conn: &Connection,
    t: &Tables,
    session: &str,
    limit: Option<i64>,
) -> Result<Vec<Item>> {
    let map = |r: &rusqlite::Row<'_>| Ok(text_of(r.get_ref(0)?));
    limited_items(limit, |newest| {
        let rows: rusqlite::Result<Vec<Option<String>>> = match newest {
            None => conn
                .prepare_cached(&t.basic.select_all)?
                .query_map([session], map)?
                .collect(),
            Some(n) => conn
                .prepare_cached(&t.basic.select_newest)?
                .query_map(params![session, n], map)?
                .collect(),
        };
        Ok(rows?)
    })
}

/// Remove the newest row until one holds a valid item (corrupt rows above it go too).
pub(crate) fn pop_item(conn: &Connection, t: &Tables, session: &str) -> Result<Option<Item>> {
    let mut pop = conn.prepare_cached(&t.basic.pop_newest)?;
    loop {
        let row: Option<Option<String>> = pop
            .query_row([session], |r| Ok(text_of(r.get_ref(0)?)))
            .optional()?;
        match row {
            None => return Ok(None),
            Some(data) => {
                if let Some(item) = data.as_deref().and_then(parse_item) {
                    return Ok(Some(item));
                }
            }
        }
    }
}

pub(crate) fn clear_session(conn: &Connection, t: &Tables, session: &str) -> Result<()> {
    conn.prepare_cached(&t.basic.delete_messages)?
        .execute([session])?;
    conn.prepare_cached(&t.basic.delete_session)?
        .execute([session])?;
    Ok(())
}

pub(crate) fn list_sessions(conn: &Connection, t: &Tables) -> Result<Vec<SessionInfo>> {
    sessions(conn, &t.basic.list_sessions, rusqlite::params![])
}

/// Sessions whose row was last updated before `idle_before`, at most `max`, by id.
pub(crate) fn idle_sessions(
    conn: &Connection,
    t: &Tables,
    idle_before: &str,
    max: u64,
) -> Result<Vec<SessionInfo>> {
    let max = i64::try_from(max).unwrap_or(i64::MAX);
    sessions(
        conn,
        &t.basic.idle_sessions,
        rusqlite::params![idle_before, max],
    )
}

fn sessions(conn: &Connection, sql: &str, p: impl rusqlite::Params) -> Result<Vec<SessionInfo>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(p, |r| {
        Ok(SessionInfo {
            session_id: text_of(r.get_ref(0)?).unwrap_or_default(),
            created_at: text_of(r.get_ref(1)?).unwrap_or_default(),
            updated_at: text_of(r.get_ref(2)?).unwrap_or_default(),
            item_count: r.get::<_, i64>(3)?.max(0) as u64,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(crate) fn plant_raw(conn: &Connection, t: &Tables, session: &str, data: &str) -> Result<()> {
    conn.prepare_cached(&t.basic.insert_session)?
        .execute([session])?;
    conn.prepare_cached(&t.basic.insert_message)?
        .execute(params![session, data])?;
    Ok(())
}

pub(crate) fn export(conn: &Connection, t: &Tables, session: &str) -> Result<SessionDump> {
    let row = conn
        .prepare_cached(&t.basic.session_row)?
        .query_row([session], |r| {
            Ok((text_of(r.get_ref(0)?), text_of(r.get_ref(1)?)))
        })
        .optional()?;
    let mut stmt = conn.prepare_cached(&t.basic.export_messages)?;
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
    Ok(SessionDump {
        session_id: session.to_owned(),
        created_at,
        updated_at,
        messages,
    })
}

pub(crate) fn import(conn: &Connection, t: &Tables, dump: &SessionDump) -> Result<()> {
    conn.prepare_cached(&t.basic.import_session)?
        .execute(params![dump.session_id, dump.created_at, dump.updated_at])?;
    let mut insert = conn.prepare_cached(&t.basic.import_message)?;
    for m in &dump.messages {
        let created = (!m.created_at.is_empty()).then_some(&m.created_at);
        insert.execute(params![dump.session_id, m.message_data, created])?;
    }
    Ok(())
}
