//! Creating the tables on PostgreSQL and claiming the Advanced structure tables. All DDL of an
//! opener runs in the writer's transaction after an advisory lock on the schema, so openers on
//! several hosts never race `CREATE TABLE IF NOT EXISTS` (POSTGRES.md §1: the SDK's creation
//! fails intermittently without it), and a rejected claim leaves nothing behind.

use agent_sessions_model::StructureStatus;

use super::db::{get, Db};
use super::sql::{Tables, DDL_LOCK};
use crate::error::{Context, Error, Result};

/// The advisory-lock key that serialises DDL in `schema`.
pub(crate) fn ddl_key(schema: &str) -> i64 {
    super::conn::lock_key(&["agent-sessions ddl", schema])
}

pub(crate) fn init(db: &mut Db, t: &Tables, schema: &str, structure: bool) -> Result<()> {
    db.exec(DDL_LOCK, &[&ddl_key(schema)])?;
    for ddl in &t.ddl {
        db.run(ddl).context(format!(
            "creating tables {} / {}",
            t.sessions.always_quoted(),
            t.messages.always_quoted()
        ))?;
    }
    if structure {
        for ddl in &t.structure_ddl {
            db.run(ddl)
                .context("creating the Advanced structure tables")?;
        }
        if let Err(why) = ownership(db, t)? {
            return Err(Error::Schema(why));
        }
    }
    Ok(())
}

pub(crate) fn structure_status(db: &mut Db, t: &Tables) -> Result<StructureStatus> {
    let exists = |db: &mut Db, name: &str| db.exists(t.table_exists, &[&name]);
    if !exists(db, "message_structure")? && !exists(db, "turn_usage")? {
        return Ok(StructureStatus::Missing);
    }
    Ok(match ownership(db, t)? {
        Ok(()) => StructureStatus::Owned,
        Err(why) => StructureStatus::Rejected(why),
    })
}

/// The structure tables belong to this pair when each owner column has exactly one foreign key
/// and it points at the configured table (the rule of SPEC §5.3, per schema here).
fn ownership(db: &mut Db, t: &Tables) -> Result<std::result::Result<(), String>> {
    let (sessions, messages) = (t.sessions.name(), t.messages.name());
    // (table, [(column, owner table, owner column)]).
    type Owner<'a> = (&'a str, &'a str, &'a str);
    let owners: [(&str, &[Owner<'_>]); 2] = [
        (
            "message_structure",
            &[
                ("session_id", sessions, "session_id"),
                ("message_id", messages, "id"),
            ],
        ),
        ("turn_usage", &[("session_id", sessions, "session_id")]),
    ];
    for (table, wanted) in owners {
        let fks: Vec<(String, String, String)> = db
            .rows(t.foreign_keys, &[&table])?
            .iter()
            .map(|r| Ok((get(r, 0)?, get(r, 1)?, get(r, 2)?)))
            .collect::<Result<_>>()?;
        for (column, owner, to) in wanted {
            let mut found = fks.iter().filter(|fk| fk.0 == *column);
            match (found.next(), found.next()) {
                (Some(fk), None) if fk.1 == *owner && fk.2 == *to => {}
                (Some(fk), None) => {
                    return Ok(Err(format!(
                        "the `{table}` table already belongs to '{}', not to the configured \
                         '{sessions}/{messages}'; structure tables are shared per schema, so \
                         give each sessions/messages table pair its own schema",
                        fk.1
                    )))
                }
                _ => {
                    return Ok(Err(format!(
                        "the `{table}` table does not record exactly one owner foreign key for \
                         column {column}; open the store with create_structure_tables(true) \
                         (CLI: `init --advanced`) on an empty schema"
                    )))
                }
            }
        }
    }
    Ok(Ok(()))
}
