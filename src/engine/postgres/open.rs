//! Opening PostgreSQL databases: one pool per server URL (and writer) per process through a
//! registry (I14 as on SQLite: every table pair and handle on that URL shares the pools'
//! connections), and [`Writers`], which routes each session to one of several pools.

use agent_sessions_model::{Op, Outcome};

use super::conn::{lock_key, PgEngine, PgOptions};
use super::sql::Tables;
use crate::engine::{Durability, OpenOptions};
use crate::error::{Error, Result};
use crate::protocol::handle::{Backend, BoxFuture, Handle};
use crate::protocol::latch::Latch;
use crate::protocol::pool::{Pool, PoolConfig, PoolStats};
use crate::protocol::registry::Registry;
use crate::protocol::sync::{Arc, OnceLock};

/// The most requests in one group on PostgreSQL (see [`open`]).
const MAX_GROUP: usize = 64;

fn registry() -> &'static Arc<Registry<String, PgEngine>> {
    static REGISTRY: OnceLock<Arc<Registry<String, PgEngine>>> = OnceLock::new();
    REGISTRY.get_or_init(|| Arc::new(Registry::new()))
}

/// Join (or start) the pool of the server at `url`.
pub(crate) fn open(url: &str, what: String, o: &OpenOptions) -> Result<crate::engine::Opened> {
    let tables = Tables::new(&o.sessions_table, &o.messages_table)?;
    let config: postgres::Config = url.parse().map_err(|e| {
        Error::InvalidArgument(format!("{what} is not a valid PostgreSQL URL: {e}"))
    })?;
    let options = PgOptions {
        // A server commit is durable unless asked otherwise: Normal (`synchronous_commit =
        // off`) is an opt-in here, where SQLite defaults to it.
        durability: o.durability.unwrap_or(Durability::Full),
        lock_timeout: o.busy_timeout,
        ensure_ascii: o.ensure_ascii,
    };
    let names = (
        tables.sessions.always_quoted(),
        tables.messages.always_quoted(),
    );
    // Every writing request of a group is a subtransaction; past 64 in one transaction the
    // server's per-backend subtransaction cache overflows and every other session's snapshots
    // get slower. A group of 64 already amortises the COMMIT.
    let pool = PoolConfig {
        batch_max: o.pool.batch_max.min(MAX_GROUP),
        ..o.pool
    };
    // One pool per writer. The registry key names the writer and the writer count, so every
    // opener asking for the same count shares the same pools, and another count is refused.
    // The readers are the first pool's only: any connection's statement sees every committed
    // write (READ COMMITTED; replies follow COMMITs), so reads need no particular writer, and
    // readers per writer would multiply the connections whose reads take the CPU the writers
    // need (measured: the mixed load's writes fell as reader connections grew).
    let mut shards: Vec<Arc<dyn Backend>> = Vec::with_capacity(o.writers);
    for i in 0..o.writers {
        let pool = PoolConfig {
            readers: if i == 0 { pool.readers } else { 0 },
            ..pool
        };
        let key = match o.writers {
            1 => url.to_owned(),
            n => format!("{url}\u{0}writer {i} of {n}"),
        };
        let tables = Tables::new(&o.sessions_table, &o.messages_table)?;
        let handle: Handle<String, PgEngine> = Handle::acquire(
            registry(),
            key,
            tables,
            || {
                Pool::open(
                    PgEngine::new(config.clone(), what.clone(), options.clone()),
                    pool,
                )
            },
            |running| compatible(running, &options, &pool),
        )?;
        shards.push(Arc::from_box(Box::new(handle) as Box<dyn Backend>));
    }
    if shards.len() == 1 {
        return Ok((shards.remove(0), names));
    }
    Ok((
        Arc::from_box(Box::new(Writers {
            shards,
            shared_readers: pool.readers > 0,
        }) as Box<dyn Backend>),
        names,
    ))
}

/// Several writers of one process: a session's writes always go to the same pool (by a hash of
/// its id, so its FIFO order holds), requests naming no session to the first; reads go to the
/// first pool's readers when there are any (else to the session's writer, as on one pool).
struct Writers {
    shards: Vec<Arc<dyn Backend>>,
    shared_readers: bool,
}

impl Writers {
    fn of(&self, op: &Op) -> &dyn Backend {
        if self.shared_readers && !op.is_write() {
            return &*self.shards[0];
        }
        let n = self.shards.len() as u64;
        let i = op.session().map_or(0, |s| lock_key(&[s]) as u64 % n);
        &*self.shards[i as usize]
    }
}

impl Backend for Writers {
    fn call(&self, op: Op) -> BoxFuture<'_, Result<Outcome>> {
        self.of(&op).call(op)
    }
    fn call_blocking(&self, op: Op) -> Result<Outcome> {
        self.of(&op).call_blocking(op)
    }
    fn close(&self) {
        self.shards.iter().for_each(|s| s.close());
    }
    fn is_closed(&self) -> bool {
        self.shards.iter().any(|s| s.is_closed())
    }
    fn stats(&self) -> PoolStats {
        let mut total = PoolStats::default();
        for s in &self.shards {
            let one = s.stats();
            total.write_batches += one.write_batches;
            total.write_requests += one.write_requests;
        }
        total
    }
    fn closed_latches(&self) -> Vec<Arc<Latch>> {
        self.shards
            .iter()
            .flat_map(|s| s.closed_latches())
            .collect()
    }
    #[cfg(feature = "test-hooks")]
    fn hold_writer(&self, held: bool) {
        self.shards.iter().for_each(|s| s.hold_writer(held));
    }
}

fn compatible(pool: &Pool<PgEngine>, options: &PgOptions, config: &PoolConfig) -> Result<()> {
    let (have, readers) = (&pool.engine().options, pool.config().readers);
    if have == options && readers == config.readers {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "{} is already open in this process with {have:?} and {readers} readers; this opener \
         asked for {options:?} and {} readers. Open it with the same settings.",
        pool.engine().what,
        config.readers
    )))
}
