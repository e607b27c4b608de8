//! The PostgreSQL [`Engine`]: one client per pool thread (I1), the lock protocol of a group,
//! reconnection, and the settling of a COMMIT whose answer was lost.
//!
//! A group (one transaction, a savepoint per request, replies after COMMIT — the pool's
//! protocol) runs under READ COMMITTED and first takes its transaction-scoped advisory locks in
//! one global order ([`GroupLocks`]): each table pair it writes (shared; exclusive for a prune),
//! then each session it writes, by ascending key. Two of our hosts can then never deadlock on
//! their groups, and each session has one writing transaction at a time among our writers (I5
//! per session). Each write also takes the session row's lock the SDK's writers take, so Python and
//! Rust writers of one session serialise too. A lock not granted within the busy timeout
//! (`lock_timeout`) fails the group with [`Error::Busy`].
//!
//! Exactly once across a lost connection: the group's transaction id is read when it begins. If
//! the connection drops during COMMIT, the engine reconnects and asks `pg_xact_status`: success
//! is reported only for `committed`; `aborted` is a retryable error (nothing was written), and a
//! server that cannot be asked in time gives an error saying the outcome is unknown — never a
//! silent duplicate or a silent loss. A connection lost at any other point rolls the group back
//! (the server aborts it); the next group reconnects.

use std::time::{Duration, Instant};

use agent_sessions_model::{AdvancedOp, HandleView, Op, Outcome, StructureStatus};
use postgres::{NoTls, SimpleQueryMessage};

use super::db::Db;
use super::rows::PgRows;
use super::sql::{self, Tables};
use super::{basic, schema};
use crate::engine::pg_decide::{
    self as decide, Action, Event, Failure, LockPlan, Mode, Rules, Status, Verdict, Write,
};
use crate::engine::{advanced, Durability};
use crate::error::{Context, Error, Result};
use crate::protocol::engine::{Connection, Engine, Role};
use crate::protocol::sync::thread;

/// The rules this engine follows: the ones the model checker explores.
const RULES: &Rules = &Rules::ENGINE;

/// Settings fixed for a server URL by its first opener in the process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PgOptions {
    pub(crate) durability: Durability,
    /// `lock_timeout`: how long a write waits for another writer's lock.
    pub(crate) lock_timeout: Duration,
    /// `json.dumps(..., ensure_ascii=...)` of the items written.
    pub(crate) ensure_ascii: bool,
}

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to keep asking the server for the outcome of a COMMIT whose answer was lost.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// `idle_in_transaction_session_timeout` of writer connections. A group never idles inside its
/// transaction (its requests run back to back), so only an orphan does: a transaction whose
/// connection this host lost without the server seeing it close (a half-open TCP connection
/// after a network fault, noticed by keepalives only after hours). Until the server ends it,
/// the orphan holds its sessions' locks (every host's writes of them are `Busy`) and the
/// commit-status query says "in progress". The model checker (the `mc` crate) lets the server
/// end an orphan at some later step; this bound makes "later" seconds rather than hours, and
/// shorter than the settling deadline, so that a lost COMMIT is settled "aborted" (retryable)
/// rather than "unknown".
const ORPHAN_TIMEOUT: Duration = Duration::from_secs(10);
const _: () = assert!(ORPHAN_TIMEOUT.as_secs() * 2 <= SETTLE_TIMEOUT.as_secs());

/// The 64-bit FNV-1a hash of `parts` (each followed by a NUL byte), as an advisory-lock key.
/// Stable across hosts, processes and versions: every host must compute the same key.
pub(crate) fn lock_key(parts: &[&str]) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h as i64
}

/// The advisory locks of a group ([`decide::LockPlan`]: table pairs shared, or exclusive for a
/// pair it prunes, then sessions, all by ascending key), for the keys of this schema. Every
/// group of every host takes its locks in this one order, so none can wait for another in a
/// cycle; a prune waits for the groups in flight on its tables and holds off new ones, so no
/// write on another host can slip between its reading the idle list and its deletes.
fn lock_plan(schema: &str, batch: &mut dyn Iterator<Item = (&Tables, &Op)>) -> LockPlan<i64> {
    let writes = batch.filter(|(_, op)| op.is_write()).map(|(t, op)| Write {
        pair: lock_key(&[schema, &t.lock_scope]),
        session: op.session().map(|s| lock_key(&[schema, &t.lock_scope, s])),
        prune: matches!(op, Op::PruneSessions { dry_run: false, .. }),
        pop: matches!(op, Op::PopItem { .. }),
    });
    LockPlan::of(RULES, writes)
}

/// The locking statements of `plan`, appended to a simple-query batch, in the plan's order.
/// The keys are numbers this engine computed, never user text.
fn append_lock_sql(plan: &LockPlan<i64>, batch: &mut String) {
    for &(key, mode) in &plan.pairs {
        let f = match mode {
            Mode::Exclusive => "pg_advisory_xact_lock",
            Mode::Shared => "pg_advisory_xact_lock_shared",
        };
        batch.push_str(&format!("; SELECT {f}({key})"));
    }
    if !plan.sessions.is_empty() {
        let list: Vec<String> = plan.sessions.iter().map(i64::to_string).collect();
        batch.push_str(&sql::lock_keys(&list.join(",")));
    }
}

/// PostgreSQL 13 or later (`server_version_num`): `pg_xact_status` settles a COMMIT whose answer
/// was lost.
fn supported_version(what: &str, version: i32) -> Result<()> {
    if version < 130_000 {
        return Err(Error::Schema(format!(
            "{what} runs PostgreSQL {version}; agent-sessions needs 13 or later \
             (pg_xact_status settles a COMMIT whose answer was lost)"
        )));
    }
    Ok(())
}

/// Opens connections to one server URL.
pub(crate) struct PgEngine {
    config: postgres::Config,
    /// The URL with its password redacted, for messages.
    pub(crate) what: String,
    pub(crate) options: PgOptions,
}

impl PgEngine {
    pub(crate) fn new(mut config: postgres::Config, what: String, options: PgOptions) -> Self {
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("agent-sessions");
        }
        PgEngine {
            config,
            what,
            options,
        }
    }

    fn connect(&self, role: Role) -> Result<(Db, String)> {
        let client = self
            .config
            .connect(NoTls)
            .map_err(|e| Error::from(e).within(format!("connecting to {}", self.what)))?;
        let mut db = Db::new(client);
        let settings = self.settings(role);
        db.run(&settings)
            .context(format!("configuring a connection to {}", self.what))?;
        let row = db
            .client
            .query_one(sql::SCHEMA_AND_VERSION, &[])
            .map_err(Error::from)?;
        let schema: Option<String> = super::db::get(&row, 0)?;
        supported_version(&self.what, super::db::get(&row, 1)?)?;
        let schema = schema.ok_or_else(|| {
            Error::Schema(format!(
                "{}: no schema on the search_path exists (current_schema() is NULL)",
                self.what
            ))
        })?;
        Ok((db, schema))
    }

    /// Session settings: ours only, as every transaction on these connections is ours. The
    /// values are numbers and keywords from validated options, never user text.
    fn settings(&self, role: Role) -> String {
        let ms = self
            .options
            .lock_timeout
            .as_millis()
            .clamp(1, i32::MAX as u128);
        let sync = match self.options.durability {
            Durability::Full => "on",
            // Normal: a server crash may lose the last commits, never consistency.
            _ => "off",
        };
        match role {
            Role::Writer => format!(
                "SET lock_timeout = {ms}; SET synchronous_commit = {sync}; \
                 SET idle_in_transaction_session_timeout = {}",
                ORPHAN_TIMEOUT.as_millis()
            ),
            Role::Reader(_) => format!("SET lock_timeout = {ms}"),
        }
    }
}

impl Engine for PgEngine {
    type Ctx = Tables;
    type Conn = PgConn;

    fn open(&self, role: Role) -> Result<PgConn> {
        let (db, schema) = self.connect(role)?;
        Ok(PgConn {
            engine: PgEngine {
                config: self.config.clone(),
                what: self.what.clone(),
                options: self.options.clone(),
            },
            role,
            db: Some(db),
            schema,
            in_tx: false,
            unreleased: false,
            xid: None,
            group: decide::Group::new(),
        })
    }
}

/// One client, owned by one pool thread; reconnects when its connection was lost.
pub(crate) struct PgConn {
    engine: PgEngine,
    role: Role,
    /// `None` once the connection was lost (the next group or read reconnects).
    db: Option<Db>,
    schema: String,
    in_tx: bool,
    /// The last request's savepoint is kept but its RELEASE not sent yet.
    unreleased: bool,
    /// The open group's transaction id (`pg_current_xact_id`), to settle a lost COMMIT.
    xid: Option<String>,
    /// The open group's progress through the multi-host decisions.
    group: decide::Group,
}

/// Whether `e` says the server ended the connection (besides the client noticing it closed):
/// connection exceptions (class 08) and the server's shutdown and termination (57P0x).
fn lost(e: &Error) -> bool {
    matches!(e, Error::Postgres { code: Some(c), .. } if c.starts_with("08") || c.starts_with("57P0"))
}

impl PgConn {
    fn db(&mut self) -> Result<&mut Db> {
        if self.db.as_ref().is_none_or(|db| db.client.is_closed()) {
            self.db = None;
            let (db, schema) = self.engine.connect(self.role)?;
            crate::trace::event!(info, "reconnected to the PostgreSQL server");
            self.schema = schema;
            self.db = Some(db);
        }
        Ok(self.db.as_mut().expect("connected above"))
    }

    /// Run `f` on the connection; a lost connection is dropped (and its transaction with it).
    fn with<T>(&mut self, f: impl FnOnce(&mut Db, &str) -> Result<T>) -> Result<T> {
        let schema = self.schema.clone();
        let result = f(self.db()?, &schema);
        if let Err(e) = &result {
            if lost(e) || self.db.as_ref().is_some_and(|db| db.client.is_closed()) {
                self.db = None;
                self.in_tx = false;
            }
        }
        result
    }

    /// BEGIN, read the transaction id and take the group's advisory locks, in one round trip.
    fn begin_once(&mut self, locks: &LockPlan<i64>) -> Result<()> {
        let mut batch = format!("{}; {}", sql::BEGIN_WRITE, sql::XACT_ID);
        append_lock_sql(locks, &mut batch);
        let messages = self.with(|db, _| match db.client.simple_query(&batch) {
            Ok(messages) => Ok(messages),
            Err(e) => {
                // The BEGIN may have run before a lock timed out: leave no transaction behind.
                let _ = db.client.batch_execute(sql::ROLLBACK);
                Err(e.into())
            }
        })?;
        self.in_tx = true;
        self.xid = messages.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        });
        Ok(())
    }

    /// How the decisions see a failed step: the connection lost (this connection was dropped),
    /// a lock not granted, or anything else.
    fn failure(&self, e: &Error) -> Failure {
        if self.db.is_none() {
            Failure::Lost
        } else if e.is_retryable() {
            // `lock_timeout` and deadlocks are the retryable errors of a write's locks.
            Failure::LockTimeout
        } else {
            Failure::Other
        }
    }

    /// Perform a reply decision for a COMMIT: `Ok` or the error that tells the caller what
    /// happened.
    fn verdict(&self, verdict: Verdict, xid: &str, cause: Error) -> Result<()> {
        match verdict {
            Verdict::Ok => Ok(()),
            Verdict::Busy => Err(Error::Busy {
                message: format!(
                    "the connection was lost during COMMIT and the server rolled the group \
                     back (transaction {xid}): nothing of it was written; retry"
                ),
                source: None,
            }),
            Verdict::Failed => Err(cause),
            Verdict::Unknown => Err(Error::Postgres {
                code: None,
                message: format!(
                    "the connection was lost during COMMIT and whether transaction {xid} \
                     committed could not be learned in {SETTLE_TIMEOUT:?} ({cause}); its \
                     writes may or may not be stored"
                ),
                source: None,
            }),
        }
    }

    /// Ask the server whether the group whose COMMIT answer was lost committed, for as long as
    /// the decisions say to.
    fn settle(&mut self, commit_error: Error) -> Result<()> {
        let xid = self.xid.take();
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        let mut asked = false;
        loop {
            let answer = match &xid {
                // No transaction id to ask about: the outcome cannot be learned.
                None => Status::Unreachable,
                Some(xid) => {
                    if asked {
                        thread::sleep(Duration::from_millis(100));
                    }
                    asked = true;
                    let status = self.with(|db, _| {
                        let row = db.client.query_one(sql::XACT_STATUS, &[xid])?;
                        super::db::get::<Option<String>>(&row, 0)
                    });
                    match status.as_ref().map(|s| s.as_deref()) {
                        Ok(Some("committed")) => Status::Committed,
                        Ok(Some("aborted")) => Status::Aborted,
                        // "in progress": the server has not noticed the lost connection yet.
                        Ok(_) => Status::InProgress,
                        Err(_) => Status::Unreachable,
                    }
                }
            };
            let past_deadline = xid.is_none() || Instant::now() >= deadline;
            let event = Event::Status {
                answer,
                past_deadline,
            };
            let shown = xid.as_deref().unwrap_or("unknown");
            match self.group.on(RULES, event) {
                Action::AskStatus => continue,
                Action::Reply(Verdict::Ok) => {
                    crate::trace::event!(
                        warn,
                        xid = shown,
                        "COMMIT answer lost; the server committed"
                    );
                    return Ok(());
                }
                Action::Reply(v) => return self.verdict(v, shown, commit_error),
                // No other action follows a status answer; were one to, the outcome is unknown.
                _ => return self.verdict(Verdict::Unknown, shown, commit_error),
            }
        }
    }
}

impl Connection for PgConn {
    type Ctx = Tables;

    fn begin(&mut self, batch: &mut dyn Iterator<Item = (&Tables, &Op)>) -> Result<()> {
        let locks = lock_plan(&self.schema, batch);
        self.unreleased = false;
        self.group = decide::Group::new();
        loop {
            let event = match self.begin_once(&locks) {
                Ok(()) => Event::Begun,
                Err(e) => match self.group.on(RULES, Event::BeginFailed(self.failure(&e))) {
                    // A connection that died while idle (a restarted server) is noticed only
                    // now: nothing has been done yet, so reconnect and begin once more.
                    Action::BeginAgain => continue,
                    _ => return Err(e),
                },
            };
            return match self.group.on(RULES, event) {
                Action::RunRequests => Ok(()),
                // Nothing else follows a successful begin.
                _ => Err(Error::Postgres {
                    code: None,
                    message: "internal: no decision to run a group that began".into(),
                    source: None,
                }),
            };
        }
    }

    fn savepoint(&mut self) -> Result<()> {
        if std::mem::take(&mut self.unreleased) {
            self.with(|db, _| db.run(sql::RELEASE_THEN_SAVEPOINT))
        } else {
            self.with(|db, _| db.run(sql::SAVEPOINT))
        }
    }

    fn release(&mut self) -> Result<()> {
        // Sent with the next request's SAVEPOINT, or made moot by COMMIT (which releases every
        // savepoint): one round trip per request saved. The request's work is kept either way.
        self.unreleased = true;
        Ok(())
    }

    fn rollback_to(&mut self) -> Result<()> {
        self.unreleased = false;
        self.with(|db, _| db.run(sql::ROLLBACK_TO))
    }

    fn commit(&mut self) -> Result<()> {
        self.unreleased = false;
        let result = self.with(|db, _| db.run(sql::COMMIT));
        let was_lost = self.db.is_none();
        self.in_tx = false;
        let event = match &result {
            Ok(()) => Event::CommitOk,
            Err(_) if was_lost => Event::CommitLost,
            Err(_) => Event::CommitRefused,
        };
        match (self.group.on(RULES, event), result) {
            (Action::AskStatus, Err(e)) => self.settle(e),
            (Action::Reply(Verdict::Ok), Ok(())) => {
                self.xid = None;
                Ok(())
            }
            (_, Err(e)) => {
                self.xid = None;
                Err(e)
            }
            (_, Ok(())) => {
                self.xid = None;
                Ok(())
            }
        }
    }

    fn rollback(&mut self) {
        self.unreleased = false;
        if self.in_tx {
            if let Some(db) = self.db.as_mut() {
                if db.run(sql::ROLLBACK).is_err() {
                    self.db = None;
                }
            }
        }
        self.in_tx = false;
        self.xid = None;
    }

    fn in_transaction(&self) -> bool {
        self.in_tx && self.db.is_some()
    }

    fn execute(&mut self, t: &Tables, op: &Op) -> Result<Outcome> {
        let ascii = self.engine.options.ensure_ascii;
        self.with(|db, schema| dispatch(db, t, schema, ascii, op))
    }

    fn read(&mut self, t: &Tables, op: &Op) -> Result<Outcome> {
        let ascii = self.engine.options.ensure_ascii;
        // Each statement sees one snapshot; only reads of several statements that must agree
        // need a transaction. A limited `get_items` may widen its window, but each attempt
        // answers from its own statement alone, so it needs none (nor does a listing).
        let one_statement = matches!(
            op,
            Op::GetItems { .. } | Op::ListSessions | Op::PruneSessions { dry_run: true, .. }
        );
        let run = |db: &mut Db, schema: &str| -> Result<Outcome> {
            if one_statement {
                return dispatch(db, t, schema, ascii, op);
            }
            db.run(sql::BEGIN_READ)?;
            let result = dispatch(db, t, schema, ascii, op);
            match (result, db.run(sql::COMMIT)) {
                (Ok(outcome), Ok(())) => Ok(outcome),
                (Err(e), _) => {
                    let _ = db.run(sql::ROLLBACK);
                    Err(e)
                }
                (Ok(_), Err(e)) => Err(e),
            }
        };
        match self.with(run) {
            // A read changes nothing: after a lost connection, reconnect and read once more.
            Err(e) if self.db.is_none() => self.with(run).map_err(|_| e),
            other => other,
        }
    }
}

/// PostgreSQL text cannot hold U+0000: a session id with one is refused up front with a clear
/// error. (Item JSON never holds one — the encoder escapes it as `\u0000` — and any other text
/// with one is refused by the server with SQLSTATE 22021, undoing the request.)
fn check_session(op: &Op) -> Result<()> {
    match op.session() {
        Some(s) if s.contains('\0') => Err(Error::InvalidArgument(format!(
            "session id {s:?} contains a NUL character, which PostgreSQL text cannot store"
        ))),
        _ => Ok(()),
    }
}

/// Run one operation on `db`, inside whatever transaction the caller opened.
fn dispatch(db: &mut Db, t: &Tables, schema: &str, ascii: bool, op: &Op) -> Result<Outcome> {
    check_session(op)?;
    let done = |r: Result<()>| r.map(|()| Outcome::Done);
    match op {
        Op::Init { structure } => done(schema::init(db, t, schema, *structure)),
        Op::StructureStatus => Ok(Outcome::Structure(schema::structure_status(db, t)?)),
        Op::Advanced { session, view, op } => advanced::execute(
            &mut PgRows {
                db,
                t,
                ensure_ascii: ascii,
            },
            session,
            view,
            op,
        ),
        Op::AddItems { session, items } => done(basic::add_items(db, t, session, items, ascii)),
        Op::GetItems { session, limit } => {
            Ok(Outcome::Items(basic::get_items(db, t, session, *limit)?))
        }
        Op::PopItem { session } => Ok(Outcome::Popped(basic::pop_item(db, t, session)?)),
        Op::ClearSession { session } => done(basic::clear_session(db, t, session)),
        Op::ListSessions => Ok(Outcome::Sessions(basic::list_sessions(db, t)?)),
        Op::PlantRaw { session, data } => done(basic::plant_raw(db, t, session, data)),
        Op::Export { session } => Ok(Outcome::Dump(basic::export(db, t, session)?)),
        Op::Import(dump) => done(basic::import(db, t, dump)),
        Op::ReplaceItems { session, items } => {
            basic::clear_session(db, t, session)?;
            done(basic::add_items(db, t, session, items, ascii))
        }
        Op::PruneSessions {
            idle_before,
            dry_run,
            max,
        } => {
            if !dry_run {
                // Which sessions are idle can change under a write between reading the list
                // and deleting (a session written meanwhile is no longer idle). Our other
                // hosts' groups are held off by the pair's exclusive advisory lock (taken when
                // this group began); the SDK's writers by this table lock, which also waits for
                // those in flight. Every write of a session touches these tables (Advanced
                // ones through their foreign-key checks); reads go on.
                db.run(&t.lock_tables)?;
            }
            let idle = basic::idle_sessions(db, t, idle_before, *max)?;
            if !dry_run {
                let owned = schema::structure_status(db, t)? == StructureStatus::Owned;
                for s in &idle {
                    if owned {
                        advanced::execute(
                            &mut PgRows {
                                db,
                                t,
                                ensure_ascii: ascii,
                            },
                            &s.session_id,
                            &HandleView::main(),
                            &AdvancedOp::Clear,
                        )?;
                    } else {
                        basic::clear_session(db, t, &s.session_id)?;
                    }
                }
            }
            Ok(Outcome::Sessions(idle))
        }
        other => Err(crate::engine::unsupported(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_stable_and_separate_their_parts() {
        // Fixed values: hosts running different builds must agree on every key.
        assert_eq!(lock_key(&[]), 0xcbf2_9ce4_8422_2325_u64 as i64);
        assert_eq!(lock_key(&["a", "b"]), lock_key(&["a", "b"]));
        assert_ne!(lock_key(&["ab", ""]), lock_key(&["a", "b"]));
    }

    #[test]
    fn servers_older_than_13_are_refused_with_their_version() {
        for ok in [130_000, 130_014, 150_018, 170_000] {
            assert_eq!(supported_version("db", ok), Ok(()), "{ok}");
        }
        for old in [90_624, 120_022, 129_999] {
            let e = supported_version("db", old).unwrap_err();
            assert!(
                matches!(&e, Error::Schema(m) if m.contains(&old.to_string()) && m.contains("13")),
                "{e:?}"
            );
        }
    }
}
