//! The basic session operations on the SDK's `SQLAlchemySession` tables (POSTGRES.md §1): the
//! same rows, compact JSON, reads in `(created_at, id)` order, and the session-row lock the
//! SDK's writers take, so Python and Rust writers of one session serialise on it.

use agent_sessions_model::{Item, RawMessage, SessionDump, SessionInfo};

use super::db::{get, Db};
use super::sql::Tables;
use crate::engine::limit::limited_items;
use crate::error::Result;

/// An item's JSON text as the SDK's `SQLAlchemySession` writes it: compact separators.
pub(crate) fn encode_one(item: &Item, ensure_ascii: bool) -> String {
    crate::json::to_json_with(item, crate::json::PythonFormatter::compact(ensure_ascii))
}

fn encode(items: &[Item], ensure_ascii: bool) -> Vec<String> {
    items.iter().map(|i| encode_one(i, ensure_ascii)).collect()
}

/// Insert the session row (or lock it), then the texts in order; their ids, ascending.
pub(crate) fn insert(db: &mut Db, t: &Tables, session: &str, data: &[String]) -> Result<Vec<i64>> {
    let rows = db.rows(&t.insert_items, &[&session, &data])?;
    let mut ids = rows
        .iter()
        .map(|r| get::<i64>(r, 0))
        .collect::<Result<Vec<_>>>()?;
    // Ids are drawn in insertion order under the session's lock; RETURNING's order is not
    // promised, the ids' is.
    ids.sort_unstable();
    Ok(ids)
}

pub(crate) fn add_items(
    db: &mut Db,
    t: &Tables,
    session: &str,
    items: &[Item],
    ensure_ascii: bool,
) -> Result<()> {
    if !items.is_empty() {
        insert(db, t, session, &encode(items, ensure_ascii))?;
    }
    Ok(())
}

pub(crate) fn get_items(
    db: &mut Db,
    t: &Tables,
    session: &str,
    limit: Option<i64>,
) -> Result<Vec<Item>> {
    limited_items(limit, |newest| {
        let rows = match newest {
            None => db.rows(&t.select_all, &[&session])?,
            // A negative window means every row: `LIMIT NULL`.
            Some(n) => db.rows(&t.select_newest, &[&session, &(n >= 0).then_some(n)])?,
        };
        rows.iter().map(|r| get::<Option<String>>(r, 0)).collect()
    })
}

/// Remove the newest row until one holds a valid item (corrupt rows above it go too). The
/// session row is locked first, as the SDK's pop does, so no other writer races the delete.
pub(crate) fn pop_item(db: &mut Db, t: &Tables, session: &str) -> Result<Option<Item>> {
    if !db.exists(&t.lock_session, &[&session])? {
        return Ok(None);
    }
    loop {
        let Some(row) = db.opt(&t.pop_newest, &[&session])? else {
            return Ok(None);
        };
        let data: Option<String> = get(&row, 0)?;
        if let Some(item) = data.as_deref().and_then(agent_sessions_model::parse_item) {
            return Ok(Some(item));
        }
    }
}

pub(crate) fn clear_session(db: &mut Db, t: &Tables, session: &str) -> Result<()> {
    if db.exists(&t.lock_session, &[&session])? {
        db.exec(&t.delete_messages, &[&session])?;
        db.exec(&t.delete_session, &[&session])?;
    }
    Ok(())
}

pub(crate) fn list_sessions(db: &mut Db, t: &Tables) -> Result<Vec<SessionInfo>> {
    let rows = db.rows(&t.list_sessions, &[])?;
    rows.iter().map(session_info).collect()
}

/// Sessions whose row was last updated before `idle_before`, at most `max`, by id.
pub(crate) fn idle_sessions(
    db: &mut Db,
    t: &Tables,
    idle_before: &str,
    max: u64,
) -> Result<Vec<SessionInfo>> {
    let max = i64::try_from(max).unwrap_or(i64::MAX);
    let rows = db.rows(&t.idle_sessions, &[&idle_before, &max])?;
    rows.iter().map(session_info).collect()
}

fn session_info(r: &postgres::Row) -> Result<SessionInfo> {
    Ok(SessionInfo {
        session_id: get(r, 0)?,
        created_at: get(r, 1)?,
        updated_at: get(r, 2)?,
        item_count: get::<i64>(r, 3)?.max(0) as u64,
    })
}

/// A raw row, as another program could write it: the session row is created if missing but not
/// touched (as on SQLite), then locked.
pub(crate) fn plant_raw(db: &mut Db, t: &Tables, session: &str, data: &str) -> Result<()> {
    db.exec(&t.ensure_session, &[&session])?;
    db.exec(&t.lock_session, &[&session])?;
    db.exec(&t.insert_raw, &[&session, &data])?;
    Ok(())
}

pub(crate) fn export(db: &mut Db, t: &Tables, session: &str) -> Result<SessionDump> {
    let row = db.opt(&t.session_row, &[&session])?;
    let messages = db
        .rows(&t.export_messages, &[&session])?
        .iter()
        .map(|r| {
            Ok(RawMessage {
                message_data: get(r, 0)?,
                created_at: get(r, 1)?,
            })
        })
        .collect::<Result<_>>()?;
    let (created_at, updated_at) = match row {
        Some(r) => (Some(get(&r, 0)?), Some(get(&r, 1)?)),
        None => (None, None),
    };
    Ok(SessionDump {
        session_id: session.to_owned(),
        created_at,
        updated_at,
        messages,
    })
}

pub(crate) fn import(db: &mut Db, t: &Tables, dump: &SessionDump) -> Result<()> {
    let s = dump.session_id.as_str();
    db.exec(&t.import_session, &[&s, &dump.created_at, &dump.updated_at])?;
    db.exec(&t.lock_session, &[&s])?;
    for m in &dump.messages {
        db.exec(&t.import_message, &[&s, &m.message_data, &m.created_at])?;
    }
    Ok(())
}
