//! What the protocol asks of an engine: opening one connection per pool thread, and on each
//! connection the transaction steps of group commit plus the execution of one operation. The
//! pool is generic over these traits, so the same protocol code runs on SQLite, on PostgreSQL
//! and, under loom, on the reference model.
//!
//! An engine upholds I1 by construction: a [`Connection`] is `Send` but used only through
//! `&mut self` by the thread it was opened on.

use agent_sessions_model::{Op, Outcome};

use crate::error::Result;

/// Which connection an engine is asked to open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The single read-write connection, owned by the writer thread.
    Writer,
    /// A read-only connection, owned by reader thread `n`.
    Reader(usize),
}

/// Opens connections. Shared by every thread of a pool.
pub trait Engine: Send + Sync + 'static {
    /// Per-opener context carried by each request (the SQLite engine's table names).
    type Ctx: Send + Sync + 'static;
    /// The connection type, owned by one pool thread.
    type Conn: Connection<Ctx = Self::Ctx>;
    /// Open the connection for `role` (on the thread that will own it).
    fn open(&self, role: Role) -> Result<Self::Conn>;
}

/// One connection, used by exactly one thread for its whole life.
pub trait Connection: Send + 'static {
    /// The engine's per-opener context.
    type Ctx;
    /// Start the batch's write transaction (`BEGIN IMMEDIATE` on SQLite). `batch` lists the
    /// requests the transaction will run, so an engine that locks per session (PostgreSQL,
    /// where several hosts write) can take every lock up front, in one global order.
    fn begin(&mut self, batch: &mut dyn Iterator<Item = (&Self::Ctx, &Op)>) -> Result<()>;
    /// Mark the start of one request inside the batch.
    fn savepoint(&mut self) -> Result<()>;
    /// Keep the work since the last savepoint.
    fn release(&mut self) -> Result<()>;
    /// Undo the work since the last savepoint and drop it.
    fn rollback_to(&mut self) -> Result<()>;
    /// Commit the batch.
    fn commit(&mut self) -> Result<()>;
    /// Abandon the batch (if a transaction is still open).
    fn rollback(&mut self);
    /// Whether a transaction is open (SQLite may roll one back by itself, e.g. on a full disk).
    fn in_transaction(&self) -> bool;
    /// Run one operation inside the writer's open transaction.
    fn execute(&mut self, ctx: &Self::Ctx, op: &Op) -> Result<Outcome>;
    /// Run one read-only operation on a reader connection, on one consistent snapshot.
    fn read(&mut self, ctx: &Self::Ctx, op: &Op) -> Result<Outcome>;
    /// Housekeeping on the writer between groups, after the group's replies went out (SQLite
    /// checkpoints its WAL here, off the commit path). `idle()` tells whether no request is
    /// waiting; an engine asks only when it has something to do. Never fails a request.
    fn maintain(&mut self, idle: &mut dyn FnMut() -> bool) {
        let _ = idle;
    }
}
