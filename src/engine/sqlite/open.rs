//! Opening SQLite databases: one pool per file per process through the process-wide registry
//! (I14), keyed by the file's canonical path (symlinks followed, also before the file exists);
//! a private pool for an in-memory database.

use std::path::{Path, PathBuf};

use super::conn::{ConnOptions, SqliteEngine};
use super::sql::Tables;
use crate::engine::{Durability, OpenOptions, Opened};
use crate::error::{Error, Result};
use crate::protocol::handle::{Handle, Owner};
use crate::protocol::pool::{Pool, PoolConfig};
use crate::protocol::registry::Registry;
use crate::protocol::sync::{Arc, OnceLock};

type SqliteHandle = Handle<PathBuf, SqliteEngine>;

fn registry() -> &'static Arc<Registry<PathBuf, SqliteEngine>> {
    static REGISTRY: OnceLock<Arc<Registry<PathBuf, SqliteEngine>>> = OnceLock::new();
    REGISTRY.get_or_init(|| Arc::new(Registry::new()))
}

fn conn_options(o: &OpenOptions) -> ConnOptions {
    ConnOptions {
        durability: o.durability.unwrap_or(Durability::Normal),
        busy_timeout: o.busy_timeout,
        max_page_count: o.max_page_count,
        vfs: o.vfs.clone(),
        synchronous_off: o.pool.faults.synchronous_off,
    }
}

fn names(t: &Tables) -> (String, String) {
    (t.sessions.sql().to_owned(), t.messages.sql().to_owned())
}

/// Join (or start) the pool of the file at `path`.
pub(crate) fn open_file(path: &Path, o: &OpenOptions) -> Result<Opened> {
    let tables = Tables::new(&o.sessions_table, &o.messages_table)?;
    let key = canonical(path)?;
    let (options, config) = (conn_options(o), o.pool);
    let names = names(&tables);
    let handle: SqliteHandle = Handle::acquire(
        registry(),
        key.clone(),
        tables,
        || Pool::open(SqliteEngine::file(key.clone(), options.clone()), config),
        |pool| compatible(pool, &key, &options, &config),
    )?;
    Ok((Arc::from_box(Box::new(handle)), names))
}

/// A private in-memory database: no readers (its writer serves reads), no registry.
pub(crate) fn open_memory(o: &OpenOptions) -> Result<Opened> {
    let tables = Tables::new(&o.sessions_table, &o.messages_table)?;
    let config = PoolConfig {
        readers: 0,
        ..o.pool
    };
    let pool = Pool::open(SqliteEngine::memory(conn_options(o)), config)?;
    let names = names(&tables);
    let handle: SqliteHandle = Handle::new(Arc::new(pool), Owner::Private, tables);
    Ok((Arc::from_box(Box::new(handle)), names))
}

fn compatible(
    pool: &Pool<SqliteEngine>,
    path: &Path,
    options: &ConnOptions,
    config: &PoolConfig,
) -> Result<()> {
    let (have, have_readers) = (&pool.engine().options, pool.config().readers);
    if have == options && have_readers == config.readers {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "{} is already open in this process with durability {:?}, {} readers and busy timeout \
         {:?}; this opener asked for {:?}, {} readers and {:?}. Open it with the same settings.",
        path.display(),
        have.durability,
        have_readers,
        have.busy_timeout,
        options.durability,
        config.readers,
        options.busy_timeout
    )))
}

/// The registry key of a file: its canonical path, also when it does not exist yet (then its
/// directory's canonical path plus its name).
fn canonical(path: &Path) -> Result<PathBuf> {
    // A dangling symlink names the file SQLite will create at its target: follow it first, or
    // the same file would get two keys (and two writers) before and after it exists.
    let mut path = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::read_link(&path) {
            Ok(target) => {
                path = match path.parent() {
                    Some(dir) if target.is_relative() => dir.join(target),
                    _ => target,
                }
            }
            Err(_) => break,
        }
    }
    if let Ok(p) = std::fs::canonicalize(&path) {
        return Ok(p);
    }
    let name = path
        .file_name()
        .ok_or_else(|| Error::InvalidArgument(format!("{} names no file", path.display())))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let dir = std::fs::canonicalize(dir).map_err(|e| {
        Error::Io(format!(
            "cannot open {}: directory {} is not usable: {e}",
            path.display(),
            dir.display()
        ))
    })?;
    Ok(dir.join(name))
}
