//! A store handle: one opener's view of a pool, and the type-erased [`Backend`] the public API
//! talks to, whatever the engine behind it.
//!
//! Owns the `closed` flag that makes every call after `close()` fail with `Closed` (I3), and gives
//! its share of the pool back exactly once, on close or drop (I14). Closing never blocks: the
//! drain and the joins run on a closer thread (see [`Pool::close_in_background`]), and
//! [`Handle::wait_closed`] waits for them when a caller wants to.

use std::future::Future;
use std::pin::Pin;

use agent_sessions_model::{AdvancedOp, Op, Outcome};

use super::engine::Engine;
use super::latch::Latch;
use super::pool::{Pool, PoolStats};
use super::registry::{Key, Registry};
use super::reply::ReplyReceiver;
use super::sync::{Arc, AtomicBool, Ordering};
use crate::error::{Error, Result};

/// A boxed future, so backends and sessions can be used as trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the public API needs of an opened database, engine-erased.
pub trait Backend: Send + Sync + 'static {
    /// Run `op` and await its outcome without blocking the thread.
    fn call(&self, op: Op) -> BoxFuture<'_, Result<Outcome>>;
    /// Run `op` and wait for its outcome on this thread.
    fn call_blocking(&self, op: Op) -> Result<Outcome>;
    /// Close this handle; returns at once.
    fn close(&self);
    /// Closed by `close()`, or the pool behind it died.
    fn is_closed(&self) -> bool;
    /// Group-commit statistics of the pool behind this handle.
    fn stats(&self) -> PoolStats;
    /// The latches the pools behind this handle set once they have fully shut down (one per
    /// pool: a PostgreSQL store with several writers has several).
    fn closed_latches(&self) -> Vec<Arc<Latch>>;
    /// Test hook: hold or release the pool's writer ([`Pool::hold_writer`]).
    #[cfg(feature = "test-hooks")]
    fn hold_writer(&self, held: bool);
}

/// Who owns the pool behind a handle.
pub enum Owner<K: Key, E: Engine> {
    /// The handle alone (in-memory stores): closing it shuts the pool down.
    Private,
    /// A registry entry shared with every other opener of the same database.
    Shared {
        /// The registry the pool came from.
        registry: Arc<Registry<K, E>>,
        /// The database's key in it.
        key: K,
    },
}

/// One opener's handle on a pool, with the context (table names) its requests carry.
pub struct Handle<K: Key, E: Engine> {
    closed: AtomicBool,
    pool: Arc<Pool<E>>,
    owner: Owner<K, E>,
    ctx: Arc<E::Ctx>,
}

impl<K: Key, E: Engine> Handle<K, E> {
    /// A handle on `pool` for requests carrying `ctx`.
    pub fn new(pool: Arc<Pool<E>>, owner: Owner<K, E>, ctx: E::Ctx) -> Self {
        Handle {
            closed: AtomicBool::new(false),
            pool,
            owner,
            ctx: Arc::new(ctx),
        }
    }

    /// Open a handle on the registry's pool for `key`, starting one with `open` if needed.
    pub fn acquire(
        registry: &Arc<Registry<K, E>>,
        key: K,
        ctx: E::Ctx,
        open: impl FnOnce() -> Result<Pool<E>>,
        check: impl FnOnce(&Pool<E>) -> Result<()>,
    ) -> Result<Self> {
        let pool = registry.acquire(&key, open, check)?;
        Ok(Handle::new(
            pool,
            Owner::Shared {
                registry: registry.clone(),
                key,
            },
            ctx,
        ))
    }

    fn admit(&self, op: &Op) -> Result<()> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        if !cfg!(feature = "test-hooks") && plants_raw_rows(op) {
            return Err(Error::InvalidArgument(
                "PlantRaw writes a corrupt row on purpose; it is a test hook, available only \
                 with the `test-hooks` feature"
                    .into(),
            ));
        }
        Ok(op.validate()?)
    }

    /// Queue `op`. Nothing is queued on a closed handle, nor an op with invalid arguments.
    pub fn submit(&self, op: Op) -> Result<ReplyReceiver<Outcome>> {
        self.admit(&op)?;
        self.pool.submit(&self.ctx, op)
    }

    /// Run `op` and wait for its outcome on this thread.
    pub fn call_blocking(&self, op: Op) -> Result<Outcome> {
        self.submit(op)?.wait()
    }

    /// Run `op` and await its outcome, suspending (never blocking the thread) while the queue
    /// is full. Once the request is queued, dropping the future does not cancel it (I7).
    pub async fn call(&self, op: Op) -> Result<Outcome> {
        self.admit(&op)?;
        self.pool.submit_async(&self.ctx, op).await?.await
    }

    /// Closed by `close()`, or its pool died.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) || self.pool.is_dead()
    }

    /// Close this handle (idempotent) and return at once. The pool stops when its last handle
    /// is closed, after serving every request already accepted; [`Handle::wait_closed`] waits
    /// for that.
    pub fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        match &self.owner {
            Owner::Private => Pool::close_in_background(&self.pool, || {}),
            Owner::Shared { registry, key } => Registry::release(registry, key),
        }
    }

    /// Block until the pool behind this handle has shut down: every accepted request served,
    /// every connection closed, every thread joined. Returns at once if it already has; waits
    /// for the other handles of a shared pool to close too.
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    pub fn wait_closed(&self) {
        self.pool.closed_latch().wait();
    }

    /// The pool behind this handle.
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    pub fn pool(&self) -> &Pool<E> {
        &self.pool
    }

    /// The context this handle's requests carry.
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    pub fn ctx(&self) -> &E::Ctx {
        &self.ctx
    }
}

/// Whether `op` plants a corrupt row (a test hook).
fn plants_raw_rows(op: &Op) -> bool {
    matches!(
        op,
        Op::PlantRaw { .. }
            | Op::Advanced {
                op: AdvancedOp::PlantRaw { .. },
                ..
            }
    )
}

impl<K: Key, E: Engine> Backend for Handle<K, E> {
    fn call(&self, op: Op) -> BoxFuture<'_, Result<Outcome>> {
        Box::pin(Handle::call(self, op))
    }
    fn call_blocking(&self, op: Op) -> Result<Outcome> {
        Handle::call_blocking(self, op)
    }
    fn close(&self) {
        Handle::close(self)
    }
    fn is_closed(&self) -> bool {
        Handle::is_closed(self)
    }
    fn stats(&self) -> PoolStats {
        self.pool.stats()
    }
    fn closed_latches(&self) -> Vec<Arc<Latch>> {
        vec![self.pool.closed_latch()]
    }
    #[cfg(feature = "test-hooks")]
    fn hold_writer(&self, held: bool) {
        self.pool.hold_writer(held)
    }
}

impl<K: Key, E: Engine> Drop for Handle<K, E> {
    fn drop(&mut self) {
        self.close();
    }
}
