//! Shared pieces of the property tests: the operation strategies, the targets a sequence runs
//! on (real SQLite stores, or deliberately faulty wrappers for negative controls), outcome
//! normalisation for comparison with the model, and a Wing–Gong linearizability checker.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use agent_sessions::{Durability, Error, Op, Outcome, Store};
use agent_sessions_model::{parse_item, Model, RawMessage, SessionDump};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Cases per property: `PROPTEST_CASES` overrides the CI default given by each test.
pub fn cases(ci_default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ci_default)
}

/// Run `check` on `cases(n)` values of `strategy`. Failing seeds are kept in the `regressions`
/// file (relative to the crate; replayed first next time) when one is named; negative controls
/// pass `None`. Returns proptest's verdict (with the minimal failing case) as text.
pub fn run_property<S: Strategy>(
    n: u32,
    regressions: Option<&'static str>,
    strategy: S,
    check: impl Fn(S::Value) -> Result<(), String>,
) -> Result<(), String> {
    let shrink = proptest::test_runner::Config::default().max_shrink_iters;
    run_cases(cases(n), shrink, regressions, strategy, check)
}

/// [`run_property`] with the case count and the shrinking budget as given (for suites with a
/// soak variable of their own and expensive cases).
pub fn run_cases<S: Strategy>(
    cases: u32,
    max_shrink_iters: u32,
    regressions: Option<&'static str>,
    strategy: S,
    check: impl Fn(S::Value) -> Result<(), String>,
) -> Result<(), String> {
    let config = proptest::test_runner::Config {
        cases,
        max_shrink_iters,
        failure_persistence: regressions
            .map(|path| Box::new(proptest::test_runner::FileFailurePersistence::Direct(path)) as _),
        ..proptest::test_runner::Config::default()
    };
    proptest::test_runner::TestRunner::new(config)
        .run(&strategy, |v| {
            check(v).map_err(proptest::test_runner::TestCaseError::fail)
        })
        .map_err(|e| e.to_string())
}

/// Assert that the capped-file runs of this process met at least one injected "full" failure.
pub fn assert_full_was_injected() {
    let seen = FULL_SEEN.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("full-database failures injected: {seen}");
    assert!(
        seen > 0,
        "the capped file never filled up: nothing was injected"
    );
}

pub const SESSIONS: [&str; 3] = ["a", "b", "ü'%_\"; --"];

pub fn session() -> impl Strategy<Value = String> {
    prop::sample::select(SESSIONS.to_vec()).prop_map(str::to_owned)
}

pub fn item() -> impl Strategy<Value = Value> {
    let text = "[a-zé中😀'\"%_\\\\\n]{0,6}";
    prop_oneof![
        any::<i64>().prop_map(|n| json!(n)),
        (-1.0e6f64..1.0e6).prop_map(|f| json!(f)),
        text.prop_map(|s| json!(s)),
        (text, prop::bool::ANY).prop_map(|(s, user)| {
            json!({"role": if user { "user" } else { "assistant" }, "content": s})
        }),
        (text, any::<u8>()).prop_map(|(s, n)| json!({"z": [n, null, true], "a": {"k": s}})),
        // Rare and large: fills a capped database within one sequence.
        (0..3usize).prop_map(|n| json!({"big": "x".repeat(3000 + n)})),
    ]
}

/// Text another program might store: mostly not JSON at all, sometimes valid JSON.
pub fn raw_data() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "{",
        "NaN",
        "Infinity",
        "[1,]",
        "",
        "\"plain\"",
        "{\"x\":1}",
    ])
    .prop_map(str::to_owned)
}

/// Timestamps long past, for imported sessions and prune cut-offs: every row an operation
/// writes is updated "now", after all of them, so only imported rows can be idle.
pub const PAST: [&str; 3] = [
    "1999-12-31 23:59:59",
    "2010-01-01 00:00:00",
    "2020-06-01 00:00:00",
];

fn past() -> impl Strategy<Value = String> {
    prop::sample::select(PAST.to_vec()).prop_map(str::to_owned)
}

/// A session imported with old timestamps (idle since then).
fn import_op() -> impl Strategy<Value = Op> {
    (session(), past(), prop::collection::vec(item(), 0..3)).prop_map(|(session, at, items)| {
        Op::Import(SessionDump {
            session_id: session,
            created_at: Some(at.clone()),
            updated_at: Some(at.clone()),
            messages: items
                .iter()
                .map(|i| RawMessage {
                    message_data: i.to_string(),
                    created_at: at.clone(),
                })
                .collect(),
        })
    })
}

/// Prune sessions idle since a past moment; `dry_run` ones are reads.
fn prune_op(dry_run: bool) -> impl Strategy<Value = Op> {
    (past(), 1..4u64).prop_map(move |(idle_before, max)| Op::PruneSessions {
        idle_before,
        dry_run,
        max,
    })
}

pub fn write_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (session(), prop::collection::vec(item(), 0..4))
            .prop_map(|(session, items)| Op::AddItems { session, items }),
        2 => session().prop_map(|session| Op::PopItem { session }),
        1 => session().prop_map(|session| Op::ClearSession { session }),
        1 => (session(), raw_data()).prop_map(|(session, data)| Op::PlantRaw { session, data }),
        1 => (session(), prop::collection::vec(item(), 0..3))
            .prop_map(|(session, items)| Op::ReplaceItems { session, items }),
        1 => import_op(),
        1 => prune_op(false),
    ]
}

pub fn read_op() -> impl Strategy<Value = Op> {
    let limit = prop_oneof![Just(None), (-2i64..6).prop_map(Some)];
    prop_oneof![
        4 => (session(), limit).prop_map(|(session, limit)| Op::GetItems { session, limit }),
        1 => Just(Op::ListSessions),
        1 => session().prop_map(|session| Op::Export { session }),
        1 => prune_op(true),
    ]
}

pub fn any_op() -> impl Strategy<Value = Op> {
    prop_oneof![3 => write_op(), 2 => read_op()]
}

/// Outcomes in a comparable form: timestamps blanked, stored text replaced by what it parses
/// to (the store writes Python's bytes, the model canonical JSON; both must mean the same).
pub fn normalize(r: Result<Outcome, Error>) -> Result<Outcome, Error> {
    r.map(|o| match o.without_timestamps() {
        Outcome::Dump(mut d) => {
            for m in &mut d.messages {
                if let Some(v) = parse_item(&m.message_data) {
                    m.message_data = v.to_string();
                }
            }
            Outcome::Dump(d)
        }
        other => other,
    })
}

/// The model's answer to `op`, as the store's error type.
pub fn model_apply(model: &mut Model, op: &Op) -> Result<Outcome, Error> {
    model.apply(op).map_err(Error::from)
}

/// What a sequence runs on.
pub trait Target {
    /// Run `op` through handle `h` (several handles share one file).
    fn exec(&mut self, h: usize, op: Op) -> Result<Outcome, Error>;
    /// Submit `ops` back to back through one handle, then wait for all (one group commit).
    fn group(&mut self, h: usize, ops: Vec<Op>) -> Vec<Result<Outcome, Error>>;
    /// Close every handle and open the file again (a no-op for in-memory stores).
    fn reopen(&mut self);
    /// The reference model for this target's engine.
    fn model(&self) -> Model {
        Model::new()
    }
    /// Every row of a database that is not a file (`None`: no row-level comparison).
    fn rows(&mut self) -> Option<Result<advanced::Rows, String>> {
        None
    }
    /// The database file, for row-level comparison (`None` for in-memory stores).
    fn path(&self) -> Option<&std::path::Path> {
        None
    }
    /// The store behind handle `h`, for real session handles (`None`: operations only).
    fn store(&self, _h: usize) -> Option<&Store> {
        None
    }
}

/// Which real store a sequence runs on.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    File(Durability),
    /// A file capped at this many pages: writes meet a full database (injected SQLITE_FULL).
    TightFile(u32),
    Memory,
    /// Negative control: a memory store whose writer commits every request alone
    /// (`batch_max = 1`), so group steps are never one group commit.
    MemoryUngrouped,
}

/// Two handles on one SQLite database.
pub struct SqliteTarget {
    kind: Kind,
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    handles: Vec<Store>,
}

impl SqliteTarget {
    pub fn new(kind: Kind) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("prop.db");
        let mut t = SqliteTarget {
            kind,
            _dir: dir,
            path,
            handles: Vec::new(),
        };
        t.open();
        t
    }

    fn open(&mut self) {
        self.handles = match self.kind {
            Kind::Memory | Kind::MemoryUngrouped => {
                let batch_max = if matches!(self.kind, Kind::Memory) {
                    256
                } else {
                    1
                };
                let s = Store::builder(":memory:")
                    .create_structure_tables(true)
                    .batch_max(batch_max)
                    .open()
                    .expect("open memory store");
                vec![s.clone(), s]
            }
            Kind::File(_) | Kind::TightFile(_) => (0..2)
                .map(|_| {
                    let mut b = Store::builder(&self.path)
                        .create_structure_tables(true)
                        .busy_timeout(Duration::from_secs(10));
                    match self.kind {
                        Kind::File(d) => b = b.durability(d),
                        Kind::TightFile(pages) => b = b.max_page_count(pages),
                        Kind::Memory | Kind::MemoryUngrouped => {}
                    }
                    b.open().expect("open file store")
                })
                .collect(),
        };
    }
}

impl Target for SqliteTarget {
    fn exec(&mut self, h: usize, op: Op) -> Result<Outcome, Error> {
        self.handles[h % self.handles.len()].execute_blocking(op)
    }

    fn group(&mut self, h: usize, ops: Vec<Op>) -> Vec<Result<Outcome, Error>> {
        group_on(&self.handles[h % self.handles.len()], ops)
    }

    fn store(&self, h: usize) -> Option<&Store> {
        Some(&self.handles[h % self.handles.len()])
    }

    fn path(&self) -> Option<&std::path::Path> {
        (!matches!(self.kind, Kind::Memory | Kind::MemoryUngrouped)).then_some(self.path.as_path())
    }

    fn reopen(&mut self) {
        if !matches!(self.kind, Kind::Memory | Kind::MemoryUngrouped) {
            for h in self.handles.drain(..) {
                h.close();
            }
            self.open();
        }
    }
}

/// Submit `ops` through `store` as one group commit (asserted with the pool's statistics) and
/// wait for every answer.
pub fn group_on(store: &Store, ops: Vec<Op>) -> Vec<Result<Outcome, Error>> {
    group_with(store, ops, block_on)
}

/// A request's future, as [`group_with`] hands it to its waiter.
pub type Pending<'a> = std::pin::Pin<Box<dyn Future<Output = Result<Outcome, Error>> + Send + 'a>>;

/// [`group_on`], waiting for each queued answer with `wait` (e.g. one with a watchdog).
pub fn group_with<'a>(
    store: &'a Store,
    ops: Vec<Op>,
    wait: impl FnMut(Pending<'a>) -> Result<Outcome, Error>,
) -> Vec<Result<Outcome, Error>> {
    let pending = ops
        .into_iter()
        .map(|op| Box::pin(store.execute(op)) as Pending<'a>)
        .collect();
    group_of(store, pending, wait)
}

/// Requests of `store` (not yet polled: store or session-handle futures) as one group commit,
/// asserted with the pool's statistics; each queued answer waited for with `wait`.
pub fn group_of<'a>(
    store: &Store,
    mut pending: Vec<Pending<'a>>,
    mut wait: impl FnMut(Pending<'a>) -> Result<Outcome, Error>,
) -> Vec<Result<Outcome, Error>> {
    // Poll each future once, in order, with the writer held: that queues every request (FIFO)
    // before the writer takes any, so the group is one group commit and the model order is the
    // submission order.
    let before = store.pool_stats();
    store.hold_writer(true);
    let mut ready: Vec<Option<Result<Outcome, Error>>> = pending
        .iter_mut()
        .map(
            |f| match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                Poll::Ready(r) => Some(r),
                Poll::Pending => None,
            },
        )
        .collect();
    store.hold_writer(false);
    let queued = ready.iter().filter(|r| r.is_none()).count() as u64;
    for (slot, f) in ready.iter_mut().zip(pending) {
        if slot.is_none() {
            *slot = Some(wait(f));
        }
    }
    let after = store.pool_stats();
    assert_eq!(
        (
            after.write_batches - before.write_batches,
            after.write_requests - before.write_requests
        ),
        (u64::from(queued > 0), queued),
        "the {queued} requests of a group step were not committed as one group"
    );
    ready
        .into_iter()
        .map(|r| r.expect("every request answered"))
        .collect()
}

/// Drive a future to completion on this thread.
pub fn block_on<F: Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(r) = f.as_mut().poll(&mut Context::from_waker(&waker)) {
            return r;
        }
        std::thread::park();
    }
}

/// Negative control: an engine that silently drops every `n`-th non-empty add it ever sees
/// (acknowledging it). The count spans test cases, as a real engine bug's would.
pub struct DropsAdds<T> {
    pub inner: T,
    pub every: usize,
}

static ADDS_SEEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl<T> DropsAdds<T> {
    pub fn new(inner: T, every: usize) -> Self {
        DropsAdds { inner, every }
    }
}

impl<T: Target> Target for DropsAdds<T> {
    fn exec(&mut self, h: usize, op: Op) -> Result<Outcome, Error> {
        if let Op::AddItems { items, .. } = &op {
            if !items.is_empty() {
                let seen = ADDS_SEEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if seen.is_multiple_of(self.every) {
                    return Ok(Outcome::Done);
                }
            }
        }
        self.inner.exec(h, op)
    }
    fn group(&mut self, h: usize, ops: Vec<Op>) -> Vec<Result<Outcome, Error>> {
        ops.into_iter().map(|op| self.exec(h, op)).collect()
    }
    fn reopen(&mut self) {
        self.inner.reopen()
    }
}

/// Negative control: a store that writes the items of a multi-item add in reverse order.
pub struct ReordersBatches<T>(pub T);

impl<T: Target> Target for ReordersBatches<T> {
    fn exec(&mut self, h: usize, op: Op) -> Result<Outcome, Error> {
        match op {
            Op::AddItems { session, mut items } => {
                items.reverse();
                self.0.exec(h, Op::AddItems { session, items })
            }
            other => self.0.exec(h, other),
        }
    }
    fn group(&mut self, h: usize, ops: Vec<Op>) -> Vec<Result<Outcome, Error>> {
        ops.into_iter().map(|op| self.exec(h, op)).collect()
    }
    fn reopen(&mut self) {
        self.0.reopen()
    }
}

/// One step of a sequential run.
#[allow(clippy::large_enum_variant)] // test data, built once per case
#[derive(Clone, Debug)]
pub enum Step {
    Exec(usize, Op),
    /// Writes submitted together (they share a group commit, in submission order).
    Group(usize, Vec<Op>),
    Reopen,
}

pub fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        12 => (0..2usize, any_op()).prop_map(|(h, op)| Step::Exec(h, op)),
        2 => (0..2usize, prop::collection::vec(write_op(), 2..5)).prop_map(|(h, ops)| Step::Group(h, ops)),
        1 => Just(Step::Reopen),
    ]
}

/// Run `steps` on `target` and on the model; fail at the first difference, then compare every
/// session's full contents.
pub fn check_sequence(target: &mut dyn Target, steps: &[Step]) -> Result<(), String> {
    let mut model = target.model();
    for (i, step) in steps.iter().enumerate() {
        match step {
            Step::Exec(h, op) => {
                let got = normalize(target.exec(*h, op.clone()));
                if is_full(&got) && op.is_write() {
                    continue; // the model knows no page limit: a full database wrote nothing
                }
                let want = normalize(model_apply(&mut model, op));
                if got != want {
                    return Err(format!("step {i} {op:?}: store {got:?} != model {want:?}"));
                }
            }
            Step::Group(h, ops) => {
                let got = target.group(*h, ops.clone());
                for (op, got) in ops.iter().zip(got) {
                    let got = normalize(got);
                    if is_full(&got) {
                        continue;
                    }
                    let want = normalize(model_apply(&mut model, op));
                    if got != want {
                        return Err(format!(
                            "step {i} (group) {op:?}: store {got:?} != model {want:?}"
                        ));
                    }
                }
            }
            Step::Reopen => target.reopen(),
        }
    }
    final_state_matches(target, &mut model)
}

/// How many injected "full" failures the runs of this process met (so a fault-injection test
/// can prove it injected something).
pub static FULL_SEEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The injected failure of [`Kind::TightFile`]: SQLite's "database or disk is full".
pub fn is_full(r: &Result<Outcome, Error>) -> bool {
    let full = matches!(r, Err(Error::Sqlite { code: Some(13), .. }));
    if full {
        FULL_SEEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    full
}

fn final_state_matches(target: &mut dyn Target, model: &mut Model) -> Result<(), String> {
    let got = normalize(target.exec(0, Op::ListSessions));
    let want = normalize(model_apply(model, &Op::ListSessions));
    if got != want {
        return Err(format!("final sessions: store {got:?} != model {want:?}"));
    }
    for s in SESSIONS {
        let op = Op::Export { session: s.into() };
        let got = normalize(target.exec(0, op.clone()));
        let want = normalize(model_apply(model, &op));
        if got != want {
            return Err(format!(
                "final rows of {s:?}: store {got:?} != model {want:?}"
            ));
        }
    }
    Ok(())
}

// ---- linearizability -----------------------------------------------------------------------

/// One completed operation of a concurrent history, stamped with a global logical clock.
#[derive(Clone, Debug)]
pub struct Event {
    pub thread: usize,
    pub op: Op,
    pub result: Result<Outcome, Error>,
    pub invoked: u64,
    pub returned: u64,
}

/// The operation a thread actually sent, and its result.
pub type Call = (Op, Result<Outcome, Error>);

/// Run each thread's operations on its own store handle, all threads released together, and
/// stamp every call's invocation and response with one logical clock. `call` turns an input into
/// the operation actually sent (with any per-thread state, e.g. a branch pointer) and its result.
pub fn record_concurrently<T, S>(
    threads: Vec<(Store, Vec<T>)>,
    state: fn() -> S,
    call: fn(&Store, &mut S, T) -> Call,
) -> Vec<Event>
where
    T: Send + 'static,
    S: 'static,
{
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Barrier;
    let clock = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(threads.len()));
    let workers: Vec<_> = threads
        .into_iter()
        .enumerate()
        .map(|(t, (store, inputs))| {
            let (clock, barrier) = (clock.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut s = state();
                barrier.wait();
                inputs
                    .into_iter()
                    .map(|input| {
                        let invoked = clock.fetch_add(1, Ordering::SeqCst);
                        let (op, result) = call(&store, &mut s, input);
                        let returned = clock.fetch_add(1, Ordering::SeqCst);
                        Event {
                            thread: t,
                            op,
                            result,
                            invoked,
                            returned,
                        }
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    workers
        .into_iter()
        .flat_map(|w| w.join().expect("worker"))
        .collect()
}

/// Wing–Gong search: is there a total order of `history`, consistent with real time (an event
/// that returned before another was invoked comes first), in which the model, starting from
/// `initial`, gives every recorded result? Returns one such order.
pub fn linearize(initial: &Model, history: &[Event]) -> Option<Vec<usize>> {
    fn go(model: &Model, history: &[Event], done: &mut Vec<bool>, order: &mut Vec<usize>) -> bool {
        if order.len() == history.len() {
            return true;
        }
        // Candidates: pending events not preceded (in real time) by another pending event.
        let min_return = history
            .iter()
            .enumerate()
            .filter(|(i, _)| !done[*i])
            .map(|(_, e)| e.returned)
            .min()
            .unwrap_or(u64::MAX);
        for i in 0..history.len() {
            if done[i] || history[i].invoked > min_return {
                continue;
            }
            let mut m = model.clone();
            if normalize(model_apply(&mut m, &history[i].op))
                != normalize(history[i].result.clone())
            {
                continue;
            }
            done[i] = true;
            order.push(i);
            if go(&m, history, done, order) {
                return true;
            }
            order.pop();
            done[i] = false;
        }
        false
    }
    let mut done = vec![false; history.len()];
    let mut order = Vec::new();
    go(initial, history, &mut done, &mut order).then_some(order)
}
pub mod advanced;
