//! The model engine: the reference model behind the same [`Engine`] interface as SQLite, so the
//! real pool, registry and handle code can run under loom (which cannot see inside SQLite) and in
//! tests that want an in-memory double.
//!
//! Its fake connections check the protocol from the inside: the engine counts opens, closes and
//! the most connections ever open at once (I2, I3), and chosen requests or commits can be made to
//! fail or panic, a request can take its whole transaction with it (as SQLite does on a full
//! disk), and BEGINs or reader opens can fail (I4, I6, I15). I1 holds by construction — each connection is moved into its thread
//! and used through `&mut` — so the probe each method enters ([`UseProbe`]) is a tripwire for a
//! future change that shares one; the loom negative controls show it fires when shared.

use agent_sessions_model::{Item, Model, Op, Outcome};

use crate::error::{Error, Result};
use crate::protocol::engine::{Connection, Engine, Role};
use crate::protocol::sync::{Arc, AtomicBool, AtomicUsize, Mutex, Ordering};

/// An item that makes its request fail after it has been applied (so only a rollback undoes it).
pub fn failing_item() -> Item {
    serde_json::json!({"__fail__": true})
}

/// An item that makes its request panic inside the engine.
pub fn panicking_item() -> Item {
    serde_json::json!({"__panic__": true})
}

/// An item whose request fails *and takes the whole transaction with it*, as SQLite does on a
/// full disk or an I/O error: the savepoints are gone and the requests before it are undone.
pub fn aborting_item() -> Item {
    serde_json::json!({"__abort__": true})
}

/// Detects two threads inside one connection at once (I1).
#[derive(Debug, Default)]
pub struct UseProbe {
    busy: AtomicBool,
}

impl UseProbe {
    /// Mark the connection in use until the guard drops; panics if it already is.
    pub fn enter(&self) -> UseGuard<'_> {
        assert!(
            !self.busy.swap(true, Ordering::AcqRel),
            "I1 violated: two threads used one connection at once"
        );
        UseGuard(self)
    }
}

/// Marks a connection in use until dropped.
pub struct UseGuard<'a>(&'a UseProbe);

impl Drop for UseGuard<'_> {
    fn drop(&mut self) {
        self.0.busy.store(false, Ordering::Release);
    }
}

/// Counters and switches shared by every connection of a model engine.
#[derive(Debug, Default)]
pub struct ModelStats {
    /// Connections opened so far.
    pub opened: AtomicUsize,
    /// The most connections ever open at once (I2).
    pub peak_open: AtomicUsize,
    /// Connections closed so far.
    pub closed: AtomicUsize,
    /// Commits that succeeded.
    pub commits: AtomicUsize,
    /// The next this-many commits fail.
    pub fail_commits: AtomicUsize,
    /// The next commit panics — outside any request, so the writer thread itself dies.
    pub panic_commits: AtomicUsize,
    /// The next this-many BEGINs fail (as a busy or failing database's would).
    pub fail_begins: AtomicUsize,
    /// An [`aborting_item`]'s request also makes the BEGIN after it fail.
    pub abort_fails_next_begin: AtomicBool,
    /// Reader connections fail to open.
    pub fail_reader_opens: AtomicBool,
}

impl ModelStats {
    /// Connections open right now.
    pub fn open_now(&self) -> usize {
        self.opened.load(Ordering::SeqCst) - self.closed.load(Ordering::SeqCst)
    }
}

/// "The database file" of the model engine: committed state plus statistics.
#[derive(Clone, Default)]
pub struct ModelEngine {
    db: Arc<Mutex<Model>>,
    /// Shared counters and fault switches.
    pub stats: Arc<ModelStats>,
}

impl ModelEngine {
    /// An empty database.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of the committed state.
    pub fn snapshot(&self) -> Model {
        self.db.lock().clone()
    }
}

impl Engine for ModelEngine {
    type Ctx = ();
    type Conn = ModelConn;

    fn open(&self, role: Role) -> Result<ModelConn> {
        if matches!(role, Role::Reader(_)) && self.stats.fail_reader_opens.load(Ordering::SeqCst) {
            return Err(Error::Io("injected open failure".into()));
        }
        self.stats.opened.fetch_add(1, Ordering::SeqCst);
        let now = self.stats.open_now();
        self.stats.peak_open.fetch_max(now, Ordering::SeqCst);
        Ok(ModelConn {
            db: self.db.clone(),
            stats: self.stats.clone(),
            probe: UseProbe::default(),
            tx: None,
            savepoints: Vec::new(),
        })
    }
}

/// A fake connection onto the model.
pub struct ModelConn {
    db: Arc<Mutex<Model>>,
    stats: Arc<ModelStats>,
    probe: UseProbe,
    tx: Option<Model>,
    savepoints: Vec<Model>,
}

impl Drop for ModelConn {
    fn drop(&mut self) {
        self.stats.closed.fetch_add(1, Ordering::SeqCst);
    }
}

/// Take one from a "the next n fail" counter: whether this one fails.
fn take_one(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

fn injected(op: &Op) -> Option<&'static str> {
    let Op::AddItems { items, .. } = op else {
        return None;
    };
    if items.contains(&panicking_item()) {
        Some("panic")
    } else if items.contains(&aborting_item()) {
        Some("abort")
    } else if items.contains(&failing_item()) {
        Some("fail")
    } else {
        None
    }
}

impl Connection for ModelConn {
    type Ctx = ();

    fn begin(&mut self, _: &mut dyn Iterator<Item = (&(), &Op)>) -> Result<()> {
        let _u = self.probe.enter();
        assert!(self.tx.is_none(), "BEGIN inside a transaction");
        if take_one(&self.stats.fail_begins) {
            return Err(Error::Io("injected BEGIN failure".into()));
        }
        self.tx = Some(self.db.lock().clone());
        Ok(())
    }

    fn savepoint(&mut self) -> Result<()> {
        let _u = self.probe.enter();
        let tx = self.tx.as_ref().expect("SAVEPOINT outside a transaction");
        self.savepoints.push(tx.clone());
        Ok(())
    }

    fn release(&mut self) -> Result<()> {
        let _u = self.probe.enter();
        self.savepoints.pop().expect("RELEASE without SAVEPOINT");
        Ok(())
    }

    fn rollback_to(&mut self) -> Result<()> {
        let _u = self.probe.enter();
        if self.tx.is_none() {
            // As SQLite answers after rolling the transaction back by itself.
            return Err(Error::Io(
                "no such savepoint: the transaction was rolled back".into(),
            ));
        }
        self.tx = Some(
            self.savepoints
                .pop()
                .expect("ROLLBACK TO without SAVEPOINT"),
        );
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        let _u = self.probe.enter();
        assert!(self.savepoints.is_empty(), "COMMIT with open savepoints");
        let tx = self.tx.take().expect("COMMIT outside a transaction");
        if take_one(&self.stats.fail_commits) {
            return Err(Error::Io("injected commit failure".into()));
        }
        let die = take_one(&self.stats.panic_commits);
        assert!(!die, "injected panic at commit: the writer thread dies");
        *self.db.lock() = tx;
        self.stats.commits.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn rollback(&mut self) {
        let _u = self.probe.enter();
        self.tx = None;
        self.savepoints.clear();
    }

    fn in_transaction(&self) -> bool {
        self.tx.is_some()
    }

    fn execute(&mut self, _ctx: &(), op: &Op) -> Result<Outcome> {
        let _u = self.probe.enter();
        let tx = self.tx.as_mut().expect("execute outside a transaction");
        let outcome = tx.apply(op)?;
        match injected(op) {
            Some("panic") => panic!("injected panic"),
            Some("abort") => {
                self.tx = None;
                self.savepoints.clear();
                if self.stats.abort_fails_next_begin.load(Ordering::SeqCst) {
                    self.stats.fail_begins.fetch_add(1, Ordering::SeqCst);
                }
                Err(Error::Io(
                    "injected failure that rolled the transaction back".into(),
                ))
            }
            Some(_) => Err(Error::Io("injected request failure".into())),
            None => Ok(outcome),
        }
    }

    fn read(&mut self, _ctx: &(), op: &Op) -> Result<Outcome> {
        let _u = self.probe.enter();
        assert!(!op.is_write(), "a write reached a reader connection");
        let mut snapshot = self.db.lock().clone();
        Ok(snapshot.apply(op)?)
    }
}
