//! The SQLite [`Engine`]: opens the pool's connections with the file's settings, and routes
//! each operation on them to the code that runs it — [`super::basic`], [`super::schema`], or
//! the engine-neutral Advanced protocol over [`SqliteRows`].
//!
//! Each [`SqliteConn`] is owned by one pool thread (I1). Writes run inside the writer's group
//! transaction (`BEGIN IMMEDIATE`, so SQLite's busy handler applies, I5); reads on a reader run
//! in one deferred transaction so a multi-statement read sees one snapshot.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use agent_sessions_model::{AdvancedOp, HandleView, Op, Outcome, StructureStatus};
use rusqlite::{Connection as Sql, OpenFlags};

use super::rows::SqliteRows;
use super::sql::{self, Tables};
use super::{basic, schema};
use crate::engine::{advanced, Durability};
use crate::error::{Context, Error, Result};
use crate::protocol::engine::{Connection, Engine, Role};

/// Settings fixed for a file by its first opener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ConnOptions {
    pub(crate) durability: Durability,
    pub(crate) busy_timeout: Duration,
    /// Fault injection for tests: cap the file at this many pages (`PRAGMA max_page_count` on
    /// the writer), so writes meet a full database (SQLITE_FULL) at a chosen size.
    pub(crate) max_page_count: Option<u32>,
    /// Test hook: the SQLite VFS to open connections through (`None`: the default one).
    pub(crate) vfs: Option<String>,
    /// Negative control (`Faults::synchronous_off`): the writer runs `synchronous=OFF`
    /// whatever the durability claims.
    pub(crate) synchronous_off: bool,
}

/// Opens connections to one file (or one private in-memory database).
pub(crate) struct SqliteEngine {
    /// `None`: a private in-memory database (only a writer, which serves reads too).
    path: Option<PathBuf>,
    pub(crate) options: ConnOptions,
}

impl SqliteEngine {
    pub(crate) fn file(path: PathBuf, options: ConnOptions) -> Self {
        SqliteEngine {
            path: Some(path),
            options,
        }
    }

    pub(crate) fn memory(options: ConnOptions) -> Self {
        SqliteEngine {
            path: None,
            options,
        }
    }

    fn describe(&self) -> String {
        match &self.path {
            Some(p) => format!("database {}", p.display()),
            None => "in-memory database".to_owned(),
        }
    }

    fn open_conn(&self, role: Role) -> Result<Sql> {
        let what = self.describe();
        let base = OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let open = |p: &PathBuf, flags| match &self.options.vfs {
            Some(vfs) => Sql::open_with_flags_and_vfs(p, flags, vfs.as_str()),
            None => Sql::open_with_flags(p, flags),
        };
        let conn = match (&self.path, role) {
            (None, _) => Sql::open_in_memory(),
            (Some(p), Role::Writer) => open(
                p,
                base | OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
            ),
            (Some(p), Role::Reader(_)) => open(p, base | OpenFlags::SQLITE_OPEN_READ_ONLY),
        }
        .context(format!("opening {what}"))?;
        conn.busy_timeout(self.options.busy_timeout)?;
        // Foreign keys stay off, as in Python (SPEC §5.1): the bundled SQLite turns them on by
        // default, and its `ON DELETE CASCADE`s would then delete structure rows behind a basic
        // session's pop or clear, which Python never does. Every cascade is an explicit DELETE.
        conn.pragma_update(None, "foreign_keys", "OFF")?;
        conn.set_prepared_statement_cache_capacity(64);
        if let (Some(pages), Role::Writer) = (self.options.max_page_count, role) {
            conn.query_row(&sql::max_page_count(pages), [], |_| Ok(()))?;
        }
        if self.path.is_some() {
            if role == Role::Writer {
                enable_wal(&conn, self.options.busy_timeout).map_err(|e| not_a_db(e, &what))?;
                let sync = match self.options.durability {
                    _ if self.options.synchronous_off => "OFF", // negative control only
                    Durability::Normal => "NORMAL",
                    Durability::Full => "FULL",
                };
                conn.pragma_update(None, "synchronous", sync)?;
            } else {
                // Touch the schema so a non-database file fails here, not on the first read.
                conn.query_row(sql::TOUCH_SCHEMA, [], |_| Ok(()))
                    .map_err(|e| not_a_db(e.into(), &what))?;
            }
        }
        Ok(conn)
    }
}

/// `journal_mode=WAL`, retried while another connection holds the lock that switching needs.
fn enable_wal(conn: &Sql, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match conn.query_row(sql::JOURNAL_WAL, [], |r| r.get::<_, String>(0)) {
            Ok(_) => return Ok(()),
            Err(e) => {
                let err = Error::from(e);
                if !matches!(err, Error::Busy { .. }) || Instant::now() >= deadline {
                    return Err(err);
                }
                crate::trace::event!(debug, "waiting for another connection's lock to enable WAL");
                crate::protocol::sync::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn not_a_db(e: Error, what: &str) -> Error {
    match e {
        Error::Sqlite { code: Some(26), .. } => Error::Schema(format!(
            "{what} is not an SQLite database (or its header is corrupt)"
        )),
        Error::Sqlite { code: Some(11), .. } => Error::Schema(format!(
            "{what} is corrupt (SQLite: database disk image is malformed)"
        )),
        other => other,
    }
}

impl Engine for SqliteEngine {
    type Ctx = Tables;
    type Conn = SqliteConn;

    fn open(&self, role: Role) -> Result<SqliteConn> {
        Ok(SqliteConn {
            conn: self.open_conn(role)?,
        })
    }
}

/// One SQLite connection, owned by one pool thread.
pub(crate) struct SqliteConn {
    conn: Sql,
}

impl SqliteConn {
    fn run(&self, sql: &str) -> Result<()> {
        self.conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    }
}

impl Connection for SqliteConn {
    type Ctx = Tables;

    fn begin(&mut self, _: &mut dyn Iterator<Item = (&Tables, &Op)>) -> Result<()> {
        self.run(sql::BEGIN_WRITE)
    }

    fn savepoint(&mut self) -> Result<()> {
        self.run(sql::SAVEPOINT)
    }

    fn release(&mut self) -> Result<()> {
        self.run(sql::RELEASE)
    }

    fn rollback_to(&mut self) -> Result<()> {
        self.run(sql::ROLLBACK_TO)?;
        self.run(sql::RELEASE)
    }

    fn commit(&mut self) -> Result<()> {
        self.run(sql::COMMIT)
    }

    fn rollback(&mut self) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch(sql::ROLLBACK);
        }
    }

    fn in_transaction(&self) -> bool {
        !self.conn.is_autocommit()
    }

    fn execute(&mut self, tables: &Tables, op: &Op) -> Result<Outcome> {
        dispatch(&self.conn, tables, op)
    }

    fn read(&mut self, tables: &Tables, op: &Op) -> Result<Outcome> {
        self.run(sql::BEGIN_READ)?;
        let result = dispatch(&self.conn, tables, op);
        if self.conn.is_autocommit() {
            return result;
        }
        match self.run(sql::COMMIT) {
            Ok(()) => result,
            Err(e) => {
                self.rollback();
                result.and(Err(e))
            }
        }
    }
}

/// Run one operation on `conn`, inside whatever transaction the caller opened.
fn dispatch(conn: &Sql, t: &Tables, op: &Op) -> Result<Outcome> {
    let done = |r: Result<()>| r.map(|()| Outcome::Done);
    match op {
        Op::Init { structure } => done(schema::init(conn, t, *structure)),
        Op::StructureStatus => Ok(Outcome::Structure(schema::structure_status(conn, t)?)),
        Op::Advanced { session, view, op } => {
            advanced::execute(&mut SqliteRows::new(conn, t), session, view, op)
        }
        Op::AddItems { session, items } => done(basic::add_items(conn, t, session, items)),
        Op::GetItems { session, limit } => {
            Ok(Outcome::Items(basic::get_items(conn, t, session, *limit)?))
        }
        Op::PopItem { session } => Ok(Outcome::Popped(basic::pop_item(conn, t, session)?)),
        Op::ClearSession { session } => done(basic::clear_session(conn, t, session)),
        Op::ListSessions => Ok(Outcome::Sessions(basic::list_sessions(conn, t)?)),
        Op::PlantRaw { session, data } => done(basic::plant_raw(conn, t, session, data)),
        Op::Export { session } => Ok(Outcome::Dump(basic::export(conn, t, session)?)),
        Op::Import(dump) => done(basic::import(conn, t, dump)),
        Op::ReplaceItems { session, items } => {
            basic::clear_session(conn, t, session)?;
            done(basic::add_items(conn, t, session, items))
        }
        Op::PruneSessions {
            idle_before,
            dry_run,
            max,
        } => {
            let idle = basic::idle_sessions(conn, t, idle_before, *max)?;
            if !dry_run {
                // Where this pair owns structure tables, a session goes as an Advanced clear
                // takes it (structure and usage too; generation bumped, reservations kept).
                let owned = schema::structure_status(conn, t)? == StructureStatus::Owned;
                for s in &idle {
                    if owned {
                        advanced::execute(
                            &mut SqliteRows::new(conn, t),
                            &s.session_id,
                            &HandleView::main(),
                            &AdvancedOp::Clear,
                        )?;
                    } else {
                        basic::clear_session(conn, t, &s.session_id)?;
                    }
                }
            }
            Ok(Outcome::Sessions(idle))
        }
        other => Err(crate::engine::unsupported(other)),
    }
}
