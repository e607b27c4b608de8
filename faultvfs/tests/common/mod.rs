//! Shared by the power-loss and I/O-fault suites: steps built from the property suite's
//! strategies (`proptests::step`, `proptests::advanced::astep`), a live store on the
//! fault-injecting VFS compared with the reference model step by step, and watchdogs so a hang
//! fails the test instead of stalling it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use agent_sessions::hooks::pool::Faults;
use agent_sessions::{AdvancedOp, Durability, Error, HandleView, Op, Outcome, Store};
use agent_sessions_model::Model;
use faultvfs::Scope;
use proptest::prelude::*;
use proptests::advanced::AStep;
use proptests::{model_apply, normalize, Step};

/// Cases per property: `AGENT_SESSIONS_VFS_CASES` (a soak) overrides the CI default.
pub fn cases(ci_default: u32) -> u32 {
    std::env::var("AGENT_SESSIONS_VFS_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ci_default)
}

/// Run `check` on `cases` values of `strategy`; proptest's verdict (with the minimal failing
/// case) as text. `regressions`: where failing seeds are kept (none for negative controls).
pub fn run_property<S: Strategy>(
    cases: u32,
    regressions: Option<&'static str>,
    strategy: S,
    check: impl Fn(S::Value) -> Result<(), String>,
) -> Result<(), String> {
    // Negative controls (no regressions file) only need to be caught, not shrunk.
    let shrink = if regressions.is_some() { 1024 } else { 0 };
    proptests::run_cases(cases, shrink, regressions, strategy, check)
}

/// A temporary directory on tmpfs when there is one (fsync is free there; the VFS decides
/// what a power loss keeps, not the disk).
pub fn tmpdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::tempdir_in(shm) {
            return d;
        }
    }
    tempfile::tempdir().expect("temp dir")
}

/// One request of a step.
#[derive(Clone, Debug)]
pub enum Req {
    Basic(Op),
    /// Through handle `h` (one branch pointer per handle and session) on session `s`.
    Adv(usize, String, AdvancedOp),
}

/// One step: a request alone, several submitted together (one group commit), or a reopen.
#[allow(clippy::large_enum_variant)] // test data, built once per case
#[derive(Clone, Debug)]
pub enum S {
    One(Req),
    Group(Vec<Req>),
    Reopen,
}

/// Basic sequences: the state machine's steps (several sessions, groups, reopen, planted
/// corrupt rows, replace, import, prune).
pub fn basic_steps(max: usize) -> impl Strategy<Value = Vec<S>> {
    prop::collection::vec(proptests::step(), 1..max).prop_map(|steps| {
        steps
            .into_iter()
            .map(|s| match s {
                Step::Exec(_, op) => S::One(Req::Basic(op)),
                Step::Group(_, ops) => S::Group(ops.into_iter().map(Req::Basic).collect()),
                Step::Reopen => S::Reopen,
            })
            .collect()
    })
}

/// Advanced sequences: the Advanced state machine's steps (3 handles with their own branch
/// pointers, branches, usage, clears, basic writes mixed in, groups, reopen). Anchored usage
/// records become plain ones (their anchors come from earlier answers).
pub fn adv_steps(max: usize) -> impl Strategy<Value = Vec<S>> {
    prop::collection::vec(proptests::advanced::astep(), 1..max).prop_map(|steps| {
        steps
            .into_iter()
            .map(|s| match s {
                AStep::Adv(h, s, op) => S::One(Req::Adv(h, s, op)),
                AStep::RecordAnchored(h, s, usage, _) => S::One(Req::Adv(
                    h,
                    s,
                    AdvancedOp::RecordUsage {
                        usage,
                        anchor: None,
                    },
                )),
                AStep::Basic(_, op) => S::One(Req::Basic(op)),
                AStep::Group(h, ops) => {
                    S::Group(ops.into_iter().map(|(s, op)| Req::Adv(h, s, op)).collect())
                }
                AStep::Reopen => S::Reopen,
            })
            .collect()
    })
}

/// Drive a future to completion on this thread; panic (the test fails) after `limit`.
pub fn wait<F: Future>(f: F, limit: Duration, what: &str) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let deadline = Instant::now() + limit;
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(r) = f.as_mut().poll(&mut Context::from_waker(&waker)) {
            return r;
        }
        let now = Instant::now();
        assert!(
            now < deadline,
            "hang: {what} did not finish within {limit:?}"
        );
        std::thread::park_timeout(deadline - now);
    }
}

pub const LIMIT: Duration = Duration::from_secs(60);

/// The errors an injected I/O fault may legitimately cause: SQLite's I/O error family and
/// "database or disk is full".
pub fn is_fault_error(r: &Result<Outcome, Error>) -> bool {
    matches!(
        r,
        Err(Error::Sqlite {
            code: Some(10 | 13),
            ..
        })
    )
}

/// How the live run treats a failed request.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No faults: every outcome must equal the model's.
    Exact,
    /// Faults injected: a request may fail with an I/O error (then it must have changed
    /// nothing: the model skips it); every other outcome must equal the model's.
    Faulty,
}

/// A store on the fault-injecting VFS, and the model it must agree with.
pub struct Live {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub scope: Arc<Scope>,
    pub store: Option<Store>,
    pub durability: Durability,
    pub faults: Faults,
    pub model: Model,
    views: HashMap<(usize, String), HandleView>,
    /// Requests that failed with an injected fault.
    pub failed: usize,
    /// The store reported itself closed (its writer died).
    pub closed: bool,
    /// Reads whose injected I/O error SQLite reported as "no such table" (see
    /// `misreported_read_fault`).
    pub misreported: usize,
    /// The model had a group whose COMMIT failed at its fsync been applied: such a group's WAL
    /// frames are complete on disk, so the next open's WAL recovery may apply it although
    /// every request of it was told it failed — as long as nothing has written to the files
    /// since (the next commit overwrites those frames; steps that change nothing write
    /// nothing). The outcome of such a commit is unknown until a reopen shows it: whole or not
    /// at all.
    pub unknown_outcome: Option<Model>,
    /// Failed-at-fsync groups that a reopen showed applied.
    pub resurrected: usize,
    /// Each time a reopen showed such a group applied: the model without it, and the trace
    /// length then. The group's frames were never synced, so until the next successful sync a
    /// power loss may still take it away (whole, with every later one).
    pub resurrected_unsynced: Vec<(Model, usize)>,
}

impl Live {
    pub fn new(durability: Durability, faults: Faults, record: bool) -> Result<Live, String> {
        let dir = tmpdir();
        let scope = Scope::new(dir.path(), record);
        let path = scope.dir().join("prop.db");
        let mut model = Model::new();
        model_apply(&mut model, &Op::Init { structure: true }).map_err(|e| e.to_string())?;
        let mut live = Live {
            dir,
            path,
            scope,
            store: None,
            durability,
            faults,
            model,
            views: HashMap::new(),
            failed: 0,
            closed: false,
            misreported: 0,
            unknown_outcome: None,
            resurrected: 0,
            resurrected_unsynced: Vec::new(),
        };
        live.open().map_err(|e| format!("open: {e}"))?;
        Ok(live)
    }

    pub fn open(&mut self) -> Result<(), Error> {
        let store = Store::builder(&self.path)
            .create_structure_tables(true)
            .durability(self.durability)
            .faults(self.faults)
            .vfs(faultvfs::register())
            .busy_timeout(Duration::from_secs(10))
            .open()?;
        self.store = Some(store);
        self.views.clear(); // new handles start on main
        Ok(())
    }

    /// Close the store and wait (bounded) until its pool has closed every connection.
    pub fn close(&mut self) {
        if let Some(s) = self.store.take() {
            s.close();
            wait(s.wait_closed(), LIMIT, "closing the store");
        }
    }

    /// The branch pointer and generation handle `h` holds for session `s`.
    pub fn view(&self, h: usize, s: &str) -> HandleView {
        self.views
            .get(&(h, s.to_owned()))
            .cloned()
            .unwrap_or_else(HandleView::main)
    }

    fn build(&self, r: &Req) -> (Op, Option<(usize, String, HandleView)>) {
        match r {
            Req::Basic(op) => (op.clone(), None),
            Req::Adv(h, s, op) => {
                let view = self
                    .views
                    .get(&(*h, s.clone()))
                    .cloned()
                    .unwrap_or_else(HandleView::main);
                (
                    Op::Advanced {
                        session: s.clone(),
                        view: view.clone(),
                        op: op.clone(),
                    },
                    Some((*h, s.clone(), view)),
                )
            }
        }
    }

    /// Run one step on the store and the model. `Ok(true)` when the step wrote (a commit the
    /// caller may count as acknowledged).
    pub fn step(&mut self, i: usize, step: &S, mode: Mode) -> Result<bool, String> {
        let reqs: Vec<Req> = match step {
            S::One(r) => vec![r.clone()],
            S::Group(rs) => rs.clone(),
            S::Reopen => {
                self.close();
                let opened = self.open();
                if let Err(e) = opened {
                    if mode == Mode::Exact || !is_fault_error(&Err(e.clone())) {
                        return Err(format!("step {i}: reopen failed: {e}"));
                    }
                    // Opening met the fault: it must work once the fault is gone.
                    self.failed += 1;
                    self.scope.disarm();
                    self.open()
                        .map_err(|e| format!("step {i}: reopen after the fault: {e}"))?;
                }
                self.resolve_unknown_outcome()
                    .map_err(|e| format!("step {i}: reopen: {e}"))?;
                return Ok(false);
            }
        };
        let built: Vec<_> = reqs.iter().map(|r| self.build(r)).collect();
        let ops: Vec<Op> = built.iter().map(|(op, _)| op.clone()).collect();
        let wrote = ops.iter().any(Op::is_write);
        let store = self.store.as_ref().expect("store open");
        let syncs_failed = self.scope.fired(faultvfs::Kind::Sync);
        let reads_failed = self.scope.fired(faultvfs::Kind::Read);
        let writes_done = self.scope.writes_done();
        let results = if ops.len() == 1 {
            vec![wait(store.execute(ops[0].clone()), LIMIT, "a request")]
        } else {
            group(store, ops.clone())
        };
        let sync_failed = self.scope.fired(faultvfs::Kind::Sync) > syncs_failed;
        let read_failed = self.scope.fired(faultvfs::Kind::Read) > reads_failed;
        let mut with_group = self.unknown_outcome.take();
        if self.scope.writes_done() > writes_done {
            with_group = None; // written over: an earlier failed group can no longer reappear
        }
        let mut failed_commit = false;
        for ((op, view), got) in built.into_iter().zip(results) {
            if sync_failed && is_fault_error(&got) && op.is_write() {
                failed_commit = true;
            }
            if matches!(got, Err(Error::Closed)) && mode == Mode::Faulty {
                self.closed = true; // the store reports itself closed: allowed, never a hang
                continue;
            }
            if mode == Mode::Faulty && is_fault_error(&got) {
                self.failed += 1;
                continue; // it must have changed nothing: the final rows will tell
            }
            let read_fault = mode == Mode::Faulty && read_failed && !op.is_write();
            if read_fault && misreported_read_fault(&got) {
                self.failed += 1;
                self.misreported += 1;
                continue;
            }
            let got = normalize(got);
            let want = normalize(model_apply(&mut self.model, &op));
            if got != want {
                return Err(format!("step {i} {op:?}: store {got:?} != model {want:?}"));
            }
            if let (Some((h, s, sent)), Ok(Outcome::Advanced { view, .. })) = (view, &want) {
                self.views
                    .entry((h, s))
                    .or_insert_with(HandleView::main)
                    .merge(&sent, view);
            }
        }
        if failed_commit && mode == Mode::Faulty {
            // This group's COMMIT met the failed fsync: its outcome is unknown (see
            // `unknown_outcome`). The world where it survives: the model with the whole group.
            let mut m = self.model.clone();
            for r in &reqs {
                let _ = model_apply(&mut m, &self.build(r).0);
            }
            with_group = Some(m);
        }
        self.unknown_outcome = with_group;
        Ok(wrote)
    }

    /// After a reopen: if a group's outcome was unknown, the rows now say which world holds —
    /// the model without it, or with the whole group (never a part).
    pub fn resolve_unknown_outcome(&mut self) -> Result<(), String> {
        let Some(with_group) = self.unknown_outcome.take() else {
            return Ok(());
        };
        let without = proptests::advanced::compare_rows(&self.path, &self.model);
        let with = proptests::advanced::compare_rows(&self.path, &with_group);
        // A group can leave the rows as they were (an add, then a clear) and still have run:
        // the ids it drew tell.
        let ids_say_with = || -> Result<bool, String> {
            let db = rusqlite::Connection::open(&self.path).map_err(|e| e.to_string())?;
            let seq = |table: &str| -> i64 {
                db.query_row(
                    "SELECT seq FROM sqlite_sequence WHERE name = ?1",
                    [table],
                    |r| r.get(0),
                )
                .unwrap_or(0)
            };
            let stored = (seq("agent_messages"), seq("message_structure"));
            Ok(stored == with_group.last_ids() && stored != self.model.last_ids())
        };
        if without.is_ok() && (with.is_err() || !ids_say_with()?) {
            return Ok(());
        }
        match with {
            Ok(()) => {
                let without = std::mem::replace(&mut self.model, with_group);
                self.resurrected_unsynced
                    .push((without, self.scope.events()));
                self.resurrected += 1;
                Ok(())
            }
            Err(e) => Err(format!(
                "the rows match neither the model without the group whose COMMIT failed at \
                 fsync ({}) nor with it ({e})",
                without.unwrap_err()
            )),
        }
    }
}

/// A read on a reader whose schema is stale (the writer created a table after the reader
/// opened: the tables at the first open, `session_clear_generations` at the first clear)
/// re-checks the schema cookie when its prepare fails with "no such table"; when that check's
/// own read meets the I/O error, SQLite (`schemaIsValid`, `prepare.c`) returns without it and
/// the statement fails with the stale "no such table" instead. The store passes it on as is,
/// or (Advanced) as "the structure tables are missing". A misleading report of a real read
/// fault — no wrong data: counted, and tolerated only for a read during which a read fault
/// fired.
fn misreported_read_fault(got: &Result<Outcome, Error>) -> bool {
    match got {
        Err(Error::Sqlite {
            code: Some(1),
            message,
            ..
        }) => message.contains("no such table"),
        Err(Error::Schema(message)) => message.contains("structure tables"),
        _ => false,
    }
}

/// Submit `ops` with the writer held so they queue first, then release it: one group commit
/// (checked through the pool's statistics), answered in submission order, each answer awaited
/// under the watchdog.
pub fn group(store: &Store, ops: Vec<Op>) -> Vec<Result<Outcome, Error>> {
    proptests::group_with(store, ops, |f| wait(f, LIMIT, "a group's request"))
}

/// `PRAGMA integrity_check` on a file (default VFS): "ok" or the problems found.
pub fn integrity(path: &Path) -> Result<(), String> {
    let db = rusqlite::Connection::open(path).map_err(|e| format!("integrity open: {e}"))?;
    let rows: Vec<String> = db
        .prepare("PRAGMA integrity_check")
        .and_then(|mut s| {
            s.query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<_>>()
        })
        .map_err(|e| format!("integrity_check: {e}"))?;
    if rows == ["ok"] {
        Ok(())
    } else {
        Err(format!("integrity_check: {rows:?}"))
    }
}

/// The write [`serves`] makes.
pub fn serve_write() -> Op {
    Op::AddItems {
        session: "after".into(),
        items: vec![serde_json::json!({"role": "user", "content": "still here"})],
    }
}

/// The store serves after whatever happened: a write acknowledged and read back.
pub fn serves(store: &Store, model: &mut Model) -> Result<(), String> {
    serves_settled(store, model, false)
}

/// Wait until every group the writer took so far has committed, even on a store that
/// acknowledges before its COMMIT (a negative control): a request that writes nothing is
/// answered only after the groups before it were committed (its own COMMIT changes nothing).
pub fn drain_writer(store: &Store) {
    let nothing = Op::AddItems {
        session: "drain".into(),
        items: Vec::new(),
    };
    let _ = wait(store.execute(nothing), LIMIT, "draining the writer");
}

/// [`serves`]; with `settle`, the writer is drained between the write and the read (for a
/// negative control whose acknowledgement comes before its COMMIT).
pub fn serves_settled(store: &Store, model: &mut Model, settle: bool) -> Result<(), String> {
    let add = serve_write();
    let got = wait(store.execute(add.clone()), LIMIT, "a write after the fault");
    let want = model_apply(model, &add);
    if normalize(got.clone()) != normalize(want) {
        return Err(format!("write after the fault: {got:?}"));
    }
    if settle {
        drain_writer(store);
    }
    let read = Op::GetItems {
        session: "after".into(),
        limit: None,
    };
    let got = normalize(wait(store.execute(read.clone()), LIMIT, "a read"));
    let want = normalize(model_apply(model, &read));
    if got != want {
        return Err(format!(
            "read after the fault: store {got:?} != model {want:?}"
        ));
    }
    Ok(())
}
