//! A store handle: one opener's view of a pool. Owns the `closed` flag that makes every call after
//! `close()` fail with `Closed` (I3), and gives its share of the pool back to the registry exactly
//! once, on close or drop (I14).

use std::path::PathBuf;

use session_model::{Op, Outcome};

use crate::error::{Error, Result};
use crate::pool::{Engine, Pool};
use crate::registry::Registry;
use crate::reply::ReplyReceiver;
use crate::sync::{Arc, AtomicBool, Ordering};

/// Who owns the pool behind a handle.
pub enum Owner<E: Engine> {
    /// The handle alone (in-memory stores): closing it shuts the pool down.
    Private,
    /// A registry entry shared with every other opener of the same file.
    Shared {
        registry: Arc<Registry<PathBuf, E>>,
        key: PathBuf,
    },
}

/// One opener's handle on a pool, with the context (table names) its requests carry.
pub struct Handle<E: Engine> {
    closed: AtomicBool,
    pool: Arc<Pool<E>>,
    owner: Owner<E>,
    ctx: Arc<E::Ctx>,
}

impl<E: Engine> Handle<E> {
    pub fn new(pool: Arc<Pool<E>>, owner: Owner<E>, ctx: E::Ctx) -> Self {
        Handle {
            closed: AtomicBool::new(false),
            pool,
            owner,
            ctx: Arc::new(ctx),
        }
    }

    /// Open a handle on the registry's pool for `key`, starting one with `open` if needed.
    pub fn acquire(
        registry: &Arc<Registry<PathBuf, E>>,
        key: PathBuf,
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

    /// Queue `op`. Nothing is queued on a closed handle, nor an op with invalid arguments.
    pub fn submit(&self, op: Op) -> Result<ReplyReceiver<Outcome>> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        op.validate()?;
        self.pool.submit(&self.ctx, op)
    }

    /// Run `op` and wait for its outcome on this thread.
    pub fn call_blocking(&self, op: Op) -> Result<Outcome> {
        self.submit(op)?.wait()
    }

    /// Run `op` and await its outcome, suspending (never blocking the thread) while the queue
    /// is full. Once the request is queued, dropping the future does not cancel it (I7).
    pub async fn call(&self, op: Op) -> Result<Outcome> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        op.validate()?;
        self.pool.submit_async(&self.ctx, op).await?.await
    }

    /// Fail with `Closed` if the handle is closed.
    pub fn check_open(&self) -> Result<()> {
        if self.is_closed() {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Closed by `close()`, or its pool died.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) || self.pool.is_dead()
    }

    /// Close this handle (idempotent). The pool stops when its last handle is closed, after
    /// serving every request already accepted.
    pub fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        match &self.owner {
            Owner::Private => self.pool.shutdown(),
            Owner::Shared { registry, key } => registry.release(key),
        }
    }

    pub fn pool(&self) -> &Pool<E> {
        &self.pool
    }

    pub fn ctx(&self) -> &E::Ctx {
        &self.ctx
    }
}

impl<E: Engine> Drop for Handle<E> {
    fn drop(&mut self) {
        self.close();
    }
}
