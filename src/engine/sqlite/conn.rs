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
use rusqlite::config::DbConfig;
use rusqlite::wal::CheckpointMode;
use rusqlite::{Connection as Sql, OpenFlags};

use super::rows::SqliteRows;
use super::sql::{self, Tables};
use super::wal_hook::FrameHook;
use super::{basic, schema};
use crate::engine::{advanced, Durability};
use crate::error::{Context, Error, Result};
use crate::protocol::engine::{Connection, Engine, Role};

/// WAL frames (pages) after which the writer checkpoints between two groups even while requests
/// wait: SQLite's own auto-checkpoint size. Smaller ones were measured slower at Normal (each
/// checkpoint costs two fsyncs) without a lower maximum latency.
const BUSY_CHECKPOINT_FRAMES: usize = 2000;
/// WAL frames after which the writer checkpoints when no request waits (under load the queue is
/// empty for a moment after most groups, so this cannot be much lower than the busy size).
const IDLE_CHECKPOINT_FRAMES: usize = 1000;
/// WAL frames (16 MB of pages) beyond which the WAL has not restarted for too long: readers'
/// snapshots kept every PASSIVE checkpoint short of the WAL's end (with reads never pausing,
/// it then grows without bound — measured: 366 MB in 10 s with one reader thread). The writer
/// then runs a RESTART checkpoint, which waits (at most [`RESTART_WAIT`]) for the readers to
/// move to the newest snapshot, so the next group starts the WAL over.
const RESTART_CHECKPOINT_FRAMES: usize = 4096;
/// The longest a RESTART checkpoint waits for readers (reads are short; a long one makes it
/// give up until the next group).
const RESTART_WAIT: Duration = Duration::from_millis(20);
/// Bytes a WAL file is truncated to when it restarts after a burst grew it beyond them.
const JOURNAL_SIZE_LIMIT: i64 = 8 << 20;

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
        set_busy_timeout(&conn, self.options.busy_timeout)?;
        // Foreign keys stay off, as in Python (SPEC §5.1): the bundled SQLite turns them on by
        // default, and its `ON DELETE CASCADE`s would then delete structure rows behind a basic
        // session's pop or clear, which Python never does. Every cascade is an explicit DELETE.
        conn.pragma_update(None, "foreign_keys", "OFF")?;
        conn.set_prepared_statement_cache_capacity(64);
        // Plans do not depend on bound values (no ANALYZE data to consult anyway): without
        // this, STAT4 builds mark statements such as `MAX(..) WHERE session_id = ?1` for a
        // re-prepare on every new binding, which was most of an Advanced add's cost.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
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

/// `PRAGMA busy_timeout`, not rusqlite's `busy_timeout`: that one also clears a busy handler
/// with `sqlite3_set_clientdata`, which SQLite has only since 3.44 (see [`super::wal_hook`]).
fn set_busy_timeout(conn: &Sql, timeout: Duration) -> Result<()> {
    // The builder caps the timeout at `i32::MAX` ms, what SQLite takes.
    let ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
    conn.pragma_update(None, "busy_timeout", ms)?;
    Ok(())
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
        let mut conn = self.open_conn(role)?;
        let wal = match (&self.path, role) {
            (Some(_), Role::Writer) => {
                Some(take_checkpoints(&mut conn, self.options.busy_timeout)?)
            }
            _ => None,
        };
        Ok(SqliteConn {
            conn,
            wal,
            group: GroupSessions::default(),
            text: String::new(),
        })
    }
}

/// Turn SQLite's auto-checkpoint (run by the COMMIT that crosses 1,000 WAL frames, while every
/// queued request waits for that COMMIT) off on the writer, and count the WAL's frames instead,
/// so that [`SqliteConn::maintain`] checkpoints between groups, after their replies.
fn take_checkpoints(conn: &mut Sql, busy_timeout: Duration) -> Result<WalState> {
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.query_row(
        &format!("PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}"),
        [],
        |_| Ok(()),
    )?;
    Ok(WalState {
        frames: FrameHook::register(conn),
        checkpointed: 0,
        checkpoint_target: 0,
        restart_at: RESTART_CHECKPOINT_FRAMES,
        busy_timeout,
    })
}

/// The writer's view of its WAL.
struct WalState {
    /// Frames in the WAL after the last commit.
    frames: FrameHook,
    /// Frames the last checkpoint had copied into the database.
    checkpointed: usize,
    /// Frames in the WAL when the last checkpoint ran (it was complete if it copied them all).
    checkpoint_target: usize,
    /// WAL size (frames) at which the next checkpoint is a RESTART.
    restart_at: usize,
    /// The connection's busy timeout (restored after a RESTART checkpoint's shorter one).
    busy_timeout: Duration,
}

/// One SQLite connection, owned by one pool thread.
pub(crate) struct SqliteConn {
    conn: Sql,
    /// The writer's WAL (`None` on readers and in memory).
    wal: Option<WalState>,
    /// The sessions the open group transaction has added to (writer only).
    group: GroupSessions,
    /// The buffer items are encoded into, kept across requests.
    text: String,
}

impl Drop for SqliteConn {
    fn drop(&mut self) {
        // Before `conn` closes and `wal` drops its counter (the hook's invariant).
        if let Some(wal) = self.wal.take() {
            wal.frames.unregister(&self.conn);
        }
    }
}

/// A session of one opener's tables, as the group transaction knows it.
pub(super) struct GroupSession {
    /// Address of the opener's [`Tables`] (alive while the group runs: its requests hold them),
    /// compared only.
    tables: usize,
    /// That opener's `updated_at` touch.
    touch: String,
    session: String,
}

impl GroupSession {
    fn is(&self, t: &Tables, session: &str) -> bool {
        self.tables == address(t) && self.session == session
    }
}

/// Consecutive basic adds to one session in one group need its row upserted once and its
/// `updated_at` touched once, not per request: the touch is deferred to the COMMIT, or to the
/// first request of the group that is anything but a basic add (which might read or delete the
/// row), so every other request sees the rows as Python's statement-per-add leaves them. The
/// only difference is `updated_at` itself: the time of the touch, later in the same transaction
/// (SQLite's `CURRENT_TIMESTAMP` has one-second resolution).
#[derive(Default)]
pub(super) struct GroupSessions {
    /// Rows upserted by requests already released in this group, touch pending.
    pending: Vec<GroupSession>,
    /// Upserted by the current request (kept on its release, forgotten on its rollback).
    current: Option<GroupSession>,
    /// Touched by the current request before it ran (pending again if it rolls back).
    flushed: Vec<GroupSession>,
}

fn address(t: &Tables) -> usize {
    std::ptr::from_ref(t) as usize
}

impl GroupSessions {
    fn clear(&mut self) {
        self.pending.clear();
        self.current = None;
        self.flushed.clear();
    }

    pub(super) fn knows(&self, t: &Tables, session: &str) -> bool {
        self.pending.iter().any(|g| g.is(t, session))
    }

    /// The current request upserted `session`'s row and leaves its touch to the group.
    pub(super) fn upserted(&mut self, t: &Tables, session: &str) {
        self.current = Some(GroupSession {
            tables: address(t),
            touch: t.basic.touch_session.clone(),
            session: session.to_owned(),
        });
    }
}

impl SqliteConn {
    fn run(&self, sql: &str) -> Result<()> {
        self.conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    }

    /// Run the deferred touches (inside the current request's savepoint, which keeps them
    /// unless it rolls back).
    fn flush_touches(&mut self) -> Result<()> {
        for g in &self.group.pending {
            self.conn
                .prepare_cached(&g.touch)?
                .execute([g.session.as_str()])?;
        }
        self.group.flushed.append(&mut self.group.pending);
        Ok(())
    }
}

impl Connection for SqliteConn {
    type Ctx = Tables;

    fn begin(&mut self, _: &mut dyn Iterator<Item = (&Tables, &Op)>) -> Result<()> {
        self.group.clear();
        self.run(sql::BEGIN_WRITE)
    }

    fn savepoint(&mut self) -> Result<()> {
        self.run(sql::SAVEPOINT)
    }

    fn release(&mut self) -> Result<()> {
        self.run(sql::RELEASE)?;
        let g = &mut self.group;
        g.pending.extend(g.current.take());
        g.flushed.clear();
        Ok(())
    }

    fn rollback_to(&mut self) -> Result<()> {
        let g = &mut self.group;
        g.current = None;
        g.pending.append(&mut g.flushed);
        self.run(sql::ROLLBACK_TO)?;
        self.run(sql::RELEASE)
    }

    fn commit(&mut self) -> Result<()> {
        // Outside any savepoint now: a failed touch fails the COMMIT, i.e. the whole group.
        let touched = self.flush_touches();
        self.group.clear();
        touched?;
        self.run(sql::COMMIT)
    }

    fn rollback(&mut self) {
        self.group.clear();
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch(sql::ROLLBACK);
        }
    }

    fn in_transaction(&self) -> bool {
        !self.conn.is_autocommit()
    }

    fn execute(&mut self, tables: &Tables, op: &Op) -> Result<Outcome> {
        match op {
            Op::AddItems { session, items } if !self.conn.is_autocommit() => {
                if items.is_empty() {
                    return Ok(Outcome::Done);
                }
                let known = self.group.knows(tables, session);
                basic::append_items(&self.conn, tables, session, items, !known, &mut self.text)?;
                if !known {
                    self.group.upserted(tables, session);
                }
                Ok(Outcome::Done)
            }
            // An Advanced add reads no session row either (its numbering reads are of the
            // structure tables): its message rows go in as a basic add's do.
            Op::Advanced {
                session,
                view,
                op: op @ AdvancedOp::AddItems { .. },
            } if !self.conn.is_autocommit() => advanced::execute(
                &mut SqliteRows::in_group(&self.conn, tables, &mut self.group),
                session,
                view,
                op,
            ),
            _ => {
                self.flush_touches()?;
                dispatch(&self.conn, tables, op)
            }
        }
    }

    fn maintain(&mut self, idle: &mut dyn FnMut() -> bool) {
        let Some(wal) = &mut self.wal else { return };
        let frames = wal.frames.frames();
        // Fewer frames than checkpointed: the WAL restarted since, and all of them are new.
        let pending = frames.checked_sub(wal.checkpointed).unwrap_or(frames);
        // A checkpoint that readers kept short of the WAL's end is retried after every group
        // (as SQLite's auto-checkpoint retries on every commit): the WAL starts over only once
        // one reaches the end.
        let retry = wal.checkpointed < wal.checkpoint_target && pending > 0;
        if (!retry
            && (pending < IDLE_CHECKPOINT_FRAMES || (pending < BUSY_CHECKPOINT_FRAMES && !idle())))
            || !self.conn.is_autocommit()
        {
            return;
        }
        wal.checkpoint_target = frames;
        // PASSIVE: copies what no reader still needs, never waits for (or blocks) a reader.
        // RESTART once the WAL has not started over for too long (see RESTART_CHECKPOINT_FRAMES).
        let restart = frames >= wal.restart_at;
        let mode = if restart {
            let _ = set_busy_timeout(&self.conn, RESTART_WAIT);
            CheckpointMode::RESTART
        } else {
            CheckpointMode::PASSIVE
        };
        let result = self.conn.wal_checkpoint_v2(None::<&str>, mode);
        if restart {
            let _ = set_busy_timeout(&self.conn, wal.busy_timeout);
            // A reader that kept it waiting (a long read) is not waited for again until the
            // WAL has grown as much once more.
            wal.restart_at = match result {
                Ok((_, done)) if usize::try_from(done).is_ok_and(|d| d >= frames) => {
                    RESTART_CHECKPOINT_FRAMES
                }
                _ => frames + RESTART_CHECKPOINT_FRAMES,
            };
        }
        match result {
            // Frames up to `done` are in the database (later ones, if any, were held by a
            // reader's snapshot, and stay pending).
            Ok((_, done)) => wal.checkpointed = usize::try_from(done).unwrap_or(frames),
            Err(_e) => {
                // Another process's checkpoint (busy) or an I/O error: the next commit meets
                // any real fault; the WAL waits for the next attempt.
                crate::trace::event!(debug, error = %_e, "WAL checkpoint failed");
                wal.checkpointed = frames;
            }
        }
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
