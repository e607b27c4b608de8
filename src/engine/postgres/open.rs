//! Opening PostgreSQL databases: one pool per server URL per process through a registry (I14
//! as on SQLite: every table pair and handle on that URL shares the pool's connections).

use super::conn::{PgEngine, PgOptions};
use super::sql::Tables;
use crate::engine::{Durability, OpenOptions};
use crate::error::{Error, Result};
use crate::protocol::handle::{Backend, Handle};
use crate::protocol::pool::{Pool, PoolConfig};
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
    let handle: Handle<String, PgEngine> = Handle::acquire(
        registry(),
        url.to_owned(),
        tables,
        || {
            Pool::open(
                PgEngine::new(config.clone(), what.clone(), options.clone()),
                pool,
            )
        },
        |running| compatible(running, &options, &pool),
    )?;
    Ok((Arc::new(Box::new(handle) as Box<dyn Backend>), names))
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
