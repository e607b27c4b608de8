//! The pool: one writer thread that owns the only read-write connection and commits in groups,
//! `R` reader threads that each own one read-only connection, and the bounded queues between
//! them and the callers. Generic over the [`Engine`], so the same protocol code runs on SQLite in
//! production and on the reference model under loom.
//!
//! Invariants upheld here:
//! - I1: a connection is created, used and dropped by one thread only (it never leaves it).
//! - I2: exactly `1 + R` connections exist while the pool runs, whatever the load.
//! - I3/I4: [`Pool::shutdown`] stops accepting, lets the threads drain every accepted request,
//!   drops every connection and joins every thread, then sets the pool's closed latch; each
//!   accepted request gets one reply, and a thread that dies fails what it held (its reply
//!   senders drop with [`Error::Closed`]). [`Pool::close_in_background`] runs the same shutdown
//!   on a closer thread, so closing never blocks a caller (or an async executor).
//! - I5/I6: one write transaction at a time (one writer); a batch is one `BEGIN IMMEDIATE`
//!   transaction with a savepoint per request, and replies go out only after the COMMIT.
//! - I7: a request, once queued, runs whether or not its caller still waits.

use std::panic::{catch_unwind, AssertUnwindSafe};

use agent_sessions_model::{Op, Outcome};

use super::engine::{Connection, Engine, Role};
use super::latch::Latch;
use super::queue::{AbandonOnUnwind, Queue, Request};
use super::reply::{self, ReplyReceiver};
use super::sync::{thread, Arc, AtomicBool, Mutex, Ordering};
use crate::error::{Context, Error, Result};
use crate::trace;

/// Deliberately broken protocol variants, for the negative controls of the loom and property
/// tests. Production code never sets them.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Reply to a batch before its COMMIT (breaks I5/I6).
    pub reply_before_commit: bool,
    /// Threads exit without closing their connection (breaks I2/I3).
    pub leak_connections: bool,
    /// The closed latch is set before the drain and the joins (breaks I3 for waiters).
    pub signal_closed_early: bool,
    /// The writer connection runs `synchronous=OFF` whatever the durability says (breaks
    /// `Durability::Full` on power loss).
    pub synchronous_off: bool,
    /// A batch of two or more requests is committed as two transactions (breaks I6: a power
    /// loss between them leaves the group visible in part).
    pub split_batch: bool,
}

/// Sizes of the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    /// Reader threads; 0 sends reads to the writer (required for `:memory:`).
    pub readers: usize,
    /// Most requests committed together.
    pub batch_max: usize,
    /// Most requests waiting in one queue; beyond it blocking submitters wait on the thread,
    /// async ones are suspended.
    pub queue_cap: usize,
    /// Most estimated bytes of requests waiting in one queue (a request is always admitted to
    /// an empty queue, whatever its size).
    pub queue_bytes: usize,
    /// Deliberately broken variants, for negative controls.
    pub faults: Faults,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            readers: 2,
            batch_max: 256,
            queue_cap: 4096,
            queue_bytes: 64 << 20,
            faults: Faults::default(),
        }
    }
}

/// Group-commit statistics of a pool's writer since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Transactions the writer ran (one per group).
    pub write_batches: u64,
    /// Requests those transactions carried.
    pub write_requests: u64,
}

/// A running pool. Dropping it shuts it down.
pub struct Pool<E: Engine> {
    writer: Arc<Queue<E::Ctx>>,
    readers: Option<Arc<Queue<E::Ctx>>>,
    threads: Mutex<Vec<thread::JoinHandle<()>>>,
    /// Set when a pool thread died: the pool then reports itself closed.
    dead: Arc<AtomicBool>,
    /// Set by the first shutdown; later ones wait for it to finish.
    stopping: AtomicBool,
    /// Set once shutdown has closed every connection and joined every thread.
    closed: Arc<Latch>,
    engine: Arc<E>,
    config: PoolConfig,
}

impl<E: Engine> Pool<E> {
    /// Start the writer (which opens its connection first, creating the file) and the readers.
    /// Fails, with nothing left running, if any connection cannot be opened.
    pub fn open(engine: E, config: PoolConfig) -> Result<Pool<E>> {
        let pool = Pool {
            writer: Arc::new(Queue::new(config.queue_cap, config.queue_bytes)),
            readers: (config.readers > 0)
                .then(|| Arc::new(Queue::new(config.queue_cap, config.queue_bytes))),
            threads: Mutex::new(Vec::new()),
            dead: Arc::new(AtomicBool::new(false)),
            stopping: AtomicBool::new(false),
            closed: Arc::new(Latch::new()),
            engine: Arc::new(engine),
            config,
        };
        let started = pool
            .start(Role::Writer)
            .and_then(|()| (0..config.readers).try_for_each(|n| pool.start(Role::Reader(n))));
        match started {
            Ok(()) => {
                trace::event!(info, readers = config.readers, "pool started");
                Ok(pool)
            }
            Err(e) => {
                pool.shutdown();
                Err(e)
            }
        }
    }

    /// Spawn one pool thread and wait until its connection is open (or failed to open).
    fn start(&self, role: Role) -> Result<()> {
        let (ready_tx, ready_rx) = reply::channel::<()>();
        let engine = self.engine.clone();
        let config = self.config;
        let (queue, name) = match role {
            Role::Writer => (self.writer.clone(), "agent-sessions-writer".to_owned()),
            Role::Reader(n) => (
                self.readers
                    .clone()
                    .expect("reader role without reader queue"),
                format!("agent-sessions-reader-{n}"),
            ),
        };
        let dead = self.dead.clone();
        let handle = thread::spawn(name, move || {
            let _guard = AbandonOnUnwind(queue.clone(), dead);
            let conn = match engine.open(role) {
                Ok(conn) => conn,
                Err(e) => return ready_tx.send(Err(e)),
            };
            ready_tx.send(Ok(()));
            match role {
                Role::Writer => writer_loop(conn, &queue, config),
                Role::Reader(_) => reader_loop(conn, &queue, config),
            }
        })?;
        self.threads.lock().push(handle);
        ready_rx.wait()
    }

    /// Queue `op`; the receiver yields its outcome. Fails with `Closed` once shut down.
    pub fn submit(&self, ctx: &Arc<E::Ctx>, op: Op) -> Result<ReplyReceiver<Outcome>> {
        let queue = self.queue_for(&op);
        let (tx, rx) = reply::channel();
        queue.push(Request::new(ctx.clone(), op, tx))?;
        Ok(rx)
    }

    /// The async form of [`Pool::submit`]: waits for queue space without blocking the thread.
    pub async fn submit_async(&self, ctx: &Arc<E::Ctx>, op: Op) -> Result<ReplyReceiver<Outcome>> {
        let queue = self.queue_for(&op);
        let (tx, rx) = reply::channel();
        let mut req = Some(Request::new(ctx.clone(), op, tx));
        // Dropped before the request got in (the future cancelled while it waited): give the
        // place in line, or the wake-up it was given, to the next waiter.
        let mut wait = CancelWait {
            queue,
            ticket: None,
            waiting: false,
        };
        std::future::poll_fn(|cx| {
            let polled = queue.poll_push(&mut req, &mut wait.ticket, cx);
            wait.waiting = polled.is_pending();
            polled
        })
        .await?;
        Ok(rx)
    }

    fn queue_for(&self, op: &Op) -> &Queue<E::Ctx> {
        match &self.readers {
            Some(r) if !op.is_write() => r,
            _ => &self.writer,
        }
    }

    /// Stop accepting, drain what was accepted, close every connection and join every thread,
    /// then set the closed latch. Idempotent: a later (or concurrent) call waits for the first.
    pub fn shutdown(&self) {
        self.shutdown_then(|| {});
    }

    /// [`Pool::shutdown`], running `then` after the joins and before the latch is set (so a
    /// waiter on the latch also sees what `then` did).
    fn shutdown_then(&self, then: impl FnOnce()) {
        if self.stopping.swap(true, Ordering::AcqRel) {
            return self.closed.wait();
        }
        let mut threads = std::mem::take(&mut *self.threads.lock());
        // Readers first, the writer last: the last connection to close checkpoints the WAL and
        // removes it, which only a read-write connection can do. (`start` spawns the writer
        // first, so it is `threads[0]`.)
        if let Some(r) = &self.readers {
            r.close();
        }
        let writer = (!threads.is_empty()).then(|| threads.remove(0));
        for t in threads {
            join(t);
        }
        self.writer.close();
        if let Some(t) = writer {
            join(t);
        }
        then();
        trace::event!(
            info,
            "pool closed: drained, connections closed, threads joined"
        );
        self.closed.set();
    }

    /// Start [`Pool::shutdown`] on a closer thread and return at once; `then` runs on that
    /// thread after the joins and before the latch is set (the registry frees the database's
    /// key there). If no thread can
    /// be started, both run on the calling thread instead.
    pub fn close_in_background(pool: &Arc<Self>, then: impl FnOnce() + Send + 'static) {
        // A panic under loom has already failed the model, and loom tears its execution down
        // while the scenario unwinds: a thread spawned now would be dropped outside the model.
        #[cfg(agent_sessions_loom)]
        if thread::panicking() {
            return;
        }
        if pool.config.faults.signal_closed_early {
            // Broken on purpose: report "closed" while the drain and the joins are still ahead.
            pool.closed.set();
        }
        let closing = pool.clone();
        // Shared with the closer thread so that, if the OS refuses to start it, the work can be
        // taken back and done here.
        let work = Arc::new(Mutex::new(Some(move || closing.shutdown_then(then))));
        let theirs = work.clone();
        let spawned = thread::spawn("agent-sessions-closer".to_owned(), move || {
            let job = theirs.lock().take();
            if let Some(job) = job {
                job();
            }
        });
        if spawned.is_err() {
            let job = work.lock().take();
            if let Some(job) = job {
                job();
            }
        }
    }

    /// Test hook: while held, the writer takes no new group (requests queue up), so the
    /// requests queued meanwhile are committed together once it is released.
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    pub fn hold_writer(&self, held: bool) {
        self.writer.hold(held);
    }

    /// The latch set once this pool has fully shut down.
    pub fn closed_latch(&self) -> Arc<Latch> {
        self.closed.clone()
    }

    /// Whether a pool thread died (a panic outside any request): every call then fails with
    /// `Closed`, and the file must be closed by all its handles before it can be reopened.
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// How many groups the writer committed and how many requests they carried.
    pub fn stats(&self) -> PoolStats {
        let st = self.writer.state.lock();
        PoolStats {
            write_batches: st.batches,
            write_requests: st.taken,
        }
    }

    /// The engine the pool was opened with.
    pub fn engine(&self) -> &E {
        &self.engine
    }

    /// The sizes the pool was opened with.
    pub fn config(&self) -> PoolConfig {
        self.config
    }
}

/// See [`Pool::submit_async`].
struct CancelWait<'a, C> {
    queue: &'a Queue<C>,
    /// The submitter's place in the queue's line of waiters, once it waited.
    ticket: Option<u64>,
    /// Whether its last poll left it waiting.
    waiting: bool,
}

impl<C> Drop for CancelWait<'_, C> {
    fn drop(&mut self) {
        if let (true, Some(ticket)) = (self.waiting, self.ticket) {
            self.queue.cancel_wait(ticket);
        }
    }
}

/// Join a pool thread — unless it is the calling thread (a pool thread can drop the last handle
/// of its own pool, e.g. through a waker that owned a task): it is already on its way out.
fn join(t: thread::JoinHandle<()>) {
    if !thread::is_current(&t) {
        let _ = t.join();
    }
}

impl<E: Engine> Drop for Pool<E> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn finish<C: Connection>(conn: C, config: PoolConfig) {
    if config.faults.leak_connections {
        std::mem::forget(conn);
    } else {
        drop(conn);
    }
}

fn reader_loop<C: Connection>(mut conn: C, queue: &Queue<C::Ctx>, config: PoolConfig) {
    let mut batch = Vec::with_capacity(1);
    while queue.pop_batch(1, &mut batch) {
        for req in batch.drain(..) {
            let result = guarded(|| conn.read(&req.ctx, &req.op));
            if result.is_err() && conn.in_transaction() {
                // A read that failed (or panicked) inside its snapshot must not leave it open:
                // later reads would fail and the WAL could never be checkpointed.
                conn.rollback();
            }
            req.reply.send(in_session(result, &req.op));
        }
    }
    finish(conn, config);
}

fn writer_loop<C: Connection>(mut conn: C, queue: &Queue<C::Ctx>, config: PoolConfig) {
    let mut batch = Vec::with_capacity(config.batch_max);
    let mut results = Vec::with_capacity(config.batch_max);
    while queue.pop_batch(config.batch_max.max(1), &mut batch) {
        #[cfg(feature = "tracing")]
        let (started, requests) = (std::time::Instant::now(), batch.len());
        run_batch(&mut conn, &mut batch, &mut results, config.faults);
        conn.maintain(&mut || queue.is_empty());
        #[cfg(feature = "tracing")]
        {
            let elapsed = started.elapsed();
            if elapsed > crate::trace::SLOW {
                trace::event!(warn, requests, ?elapsed, "slow group commit");
            } else {
                trace::event!(debug, requests, ?elapsed, "group committed");
            }
        }
    }
    finish(conn, config);
}

/// Group commit: one transaction, a savepoint per request, one COMMIT, then one reply per request
/// (only now that the outcome of the COMMIT is known). Empties `batch`.
fn run_batch<C: Connection>(
    conn: &mut C,
    batch: &mut Vec<Request<C::Ctx>>,
    results: &mut Vec<Result<Outcome>>,
    faults: Faults,
) {
    if let Err(e) = conn.begin(&mut batch.iter().map(|r| (&*r.ctx, &r.op))) {
        if e.is_retryable() {
            trace::event!(warn, requests = batch.len(), error = %e, "busy: write lock not obtained");
        }
        results.extend(batch.iter().map(|_| Err(e.clone())));
        return send_all(batch, results);
    }
    for (i, req) in batch.iter().enumerate() {
        if faults.split_batch && i > 0 && i == batch.len() / 2 && conn.in_transaction() {
            // Broken on purpose: the first half of the group commits on its own.
            let _ = conn.commit();
            if conn.in_transaction() {
                conn.rollback();
            }
            if let Err(e) = conn.begin(&mut batch.iter().map(|r| (&*r.ctx, &r.op))) {
                results.extend(std::iter::repeat_n(Err(e), batch.len() - i));
                return send_all(batch, results);
            }
        }
        let result = run_one(conn, req);
        if let Err(cause) = &result {
            if !conn.in_transaction() {
                // SQLite rolled the whole transaction back (full disk, I/O error): the requests
                // before this one are undone too, and none of them has been answered yet.
                for earlier in results.iter_mut().filter(|r| r.is_ok()) {
                    *earlier = Err(cause.clone());
                }
                if let Err(e) = conn.begin(&mut batch.iter().map(|r| (&*r.ctx, &r.op))) {
                    results.push(result);
                    let n = batch.len() - results.len();
                    results.extend(std::iter::repeat_n(Err(e), n));
                    return send_all(batch, results);
                }
            }
        }
        results.push(result);
    }
    if faults.reply_before_commit {
        // Broken on purpose: callers hear "done" before their writes are visible or durable.
        send_all(batch, results);
        // Outside loom, widen the window so real-thread tests catch the fault every run
        // rather than by luck (loom explores the window without it).
        #[cfg(not(agent_sessions_loom))]
        thread::sleep(std::time::Duration::from_millis(2));
        if conn.commit().is_err() {
            conn.rollback();
        }
        return;
    }
    if let Err(e) = conn.commit() {
        trace::event!(warn, requests = batch.len(), error = %e, "group commit failed");
        conn.rollback();
        let e = e.within(format!("committing a group of {} request(s)", batch.len()));
        for r in results.iter_mut() {
            *r = Err(e.clone());
        }
    }
    send_all(batch, results);
}

fn send_all<C>(batch: &mut Vec<Request<C>>, results: &mut Vec<Result<Outcome>>) {
    for (req, result) in batch.drain(..).zip(results.drain(..)) {
        req.reply.send(result);
    }
}

fn run_one<C: Connection>(conn: &mut C, req: &Request<C::Ctx>) -> Result<Outcome> {
    conn.savepoint()?;
    let result = in_session(guarded(|| conn.execute(&req.ctx, &req.op)), &req.op);
    let kept = match &result {
        Ok(_) => conn.release(),
        Err(_) => conn.rollback_to(),
    };
    if let Err(e) = kept {
        // The savepoint is gone or in an unknown state (SQLite rolls the whole transaction back
        // on some errors, e.g. a full disk): give up the transaction (the caller sees
        // `in_transaction() == false` and treats the batch so far as undone) and report the
        // request's own failure, not the savepoint's.
        conn.rollback();
        return Err(result.err().unwrap_or(e));
    }
    result
}

/// Name the session concerned in an engine error.
fn in_session(result: Result<Outcome>, op: &Op) -> Result<Outcome> {
    match (op.session(), result) {
        (Some(s), Err(e)) => Err(e).context(format!("session {s:?}")),
        (_, result) => result,
    }
}

/// Run `f`, turning a panic into an error for this request alone.
fn guarded(f: impl FnOnce() -> Result<Outcome>) -> Result<Outcome> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(Error::Internal(format!("a request panicked: {msg}")))
    })
}
