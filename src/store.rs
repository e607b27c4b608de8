//! `Store`: the public handle on a database file (or a private in-memory database), built on the
//! generic [`Handle`] and the process-wide registry of SQLite pools.
//!
//! Upholds I3 (every call on a closed store fails with `Closed`) and I14 (same file, same pool;
//! a second opener asking for different connection settings is refused rather than silently
//! given the first opener's).

use std::path::{Path, PathBuf};
use std::time::Duration;

use session_model::{Op, Outcome, SessionInfo, StructureStatus};

use crate::advanced::AdvancedSqliteSession;
use crate::error::{Error, Result};
use crate::handle::{Handle, Owner};
use crate::pool::{Pool, PoolConfig};
use crate::registry::Registry;
use crate::session::{SessionSettings, SqliteSession};
use crate::sqlite::{ConnOptions, Durability, SqliteEngine, Tables};
use crate::sync::{Arc, OnceLock};

fn registry() -> &'static Arc<Registry<PathBuf, SqliteEngine>> {
    static REGISTRY: OnceLock<Arc<Registry<PathBuf, SqliteEngine>>> = OnceLock::new();
    REGISTRY.get_or_init(|| Arc::new(Registry::new()))
}

/// A handle on one database: the file's shared pool plus this opener's table names and settings.
///
/// Cloning a `Store` clones the handle (clones share one `close`); opening the same file again
/// gives a new handle on the same pool.
///
/// ```
/// # fn main() -> agent_sessions::Result<()> {
/// use agent_sessions::Store;
/// use serde_json::json;
///
/// let dir = tempfile::tempdir().unwrap();
/// let store = Store::open(dir.path().join("agent_sessions.db"))?;
/// let session = store.session("user-42").blocking();
/// session.add_items(vec![json!({"role": "user", "content": "hi"})])?;
/// assert_eq!(session.get_items(None)?.len(), 1);
/// store.close();
/// assert_eq!(session.get_items(None), Err(agent_sessions::Error::Closed));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Store {
    handle: Arc<Handle<SqliteEngine>>,
    settings: SessionSettings,
    /// Set once the structure tables are known to belong to this handle's table pair (at open
    /// with `create_structure_tables(true)`, or by the first successful check).
    structure_owned: Arc<OnceLock<()>>,
}

impl Store {
    /// Open (creating if needed) a database file with default settings; `":memory:"` opens a
    /// private in-memory database.
    pub fn open(path: impl AsRef<Path>) -> Result<Store> {
        StoreBuilder::new(path).open()
    }

    /// A private in-memory database (lost when the store closes); its writer serves reads too.
    pub fn open_in_memory() -> Result<Store> {
        StoreBuilder::new(":memory:").open()
    }

    /// Configure before opening.
    pub fn builder(path: impl AsRef<Path>) -> StoreBuilder {
        StoreBuilder::new(path)
    }

    /// A session of this store. Cheap; sessions of one store share its handle.
    pub fn session(&self, session_id: impl Into<String>) -> SqliteSession {
        SqliteSession::new(self.clone(), session_id.into(), self.settings)
    }

    /// An Advanced session (the Python SDK's `AdvancedSQLiteSession`): structure rows, branches
    /// and usage on top of the same messages. Each call returns a new *handle* (its own branch
    /// pointer, starting on `main`); clones of one handle share its pointer.
    ///
    /// The file's structure tables must belong to this store's table pair: open the store with
    /// [`StoreBuilder::create_structure_tables`]`(true)` to create and claim them, or open a
    /// file where they already exist. Otherwise this fails with [`Error::Schema`] (missing
    /// tables, or tables owned by another sessions/messages pair — one pair per file). Unless
    /// the store claimed the tables at open, the first call checks the file (one short read).
    ///
    /// ```
    /// # fn main() -> agent_sessions::Result<()> {
    /// use agent_sessions::Store;
    /// use serde_json::json;
    ///
    /// let store = Store::builder(":memory:").create_structure_tables(true).open()?;
    /// let a = store.advanced_session("user-42")?.blocking();
    /// a.add_items(vec![json!({"role": "user", "content": "hi"})])?;
    /// assert_eq!(a.list_branches()?[0].branch_id, "main");
    ///
    /// let plain = Store::open_in_memory()?;
    /// assert!(matches!(plain.advanced_session("x"), Err(agent_sessions::Error::Schema(_))));
    /// # Ok(()) }
    /// ```
    pub fn advanced_session(&self, session_id: impl Into<String>) -> Result<AdvancedSqliteSession> {
        self.handle.check_open()?;
        if self.structure_owned.get().is_none() {
            match self.execute_blocking(Op::StructureStatus)? {
                Outcome::Structure(StructureStatus::Owned) => {
                    let _ = self.structure_owned.set(());
                }
                Outcome::Structure(StructureStatus::Missing) => {
                    return Err(Error::from(
                        session_model::advanced::errors::structure_missing(),
                    ))
                }
                Outcome::Structure(StructureStatus::Rejected(why)) => {
                    return Err(Error::Schema(why))
                }
                other => return Err(unexpected(&other)),
            }
        }
        Ok(AdvancedSqliteSession::new(
            self.clone(),
            session_id.into(),
            self.settings,
        ))
    }

    /// Whether the file's structure tables exist and belong to this store's table pair (what
    /// [`Store::advanced_session`] requires).
    pub fn structure_status(&self) -> Result<StructureStatus> {
        match self.execute_blocking(Op::StructureStatus)? {
            Outcome::Structure(status) => Ok(status),
            other => Err(unexpected(&other)),
        }
    }

    /// Every session with its item count, ordered by id.
    pub async fn list_sessions(&self) -> Result<Vec<SessionInfo>> {
        match self.execute(Op::ListSessions).await? {
            Outcome::Sessions(list) => Ok(list),
            other => Err(unexpected(&other)),
        }
    }

    /// Blocking form of [`Store::list_sessions`].
    pub fn list_sessions_blocking(&self) -> Result<Vec<SessionInfo>> {
        match self.execute_blocking(Op::ListSessions)? {
            Outcome::Sessions(list) => Ok(list),
            other => Err(unexpected(&other)),
        }
    }

    /// Run any operation of the shared vocabulary (what the CLI and the property tests use).
    pub async fn execute(&self, op: Op) -> Result<Outcome> {
        self.handle.call(op).await
    }

    /// Blocking form of [`Store::execute`].
    pub fn execute_blocking(&self, op: Op) -> Result<Outcome> {
        self.handle.call_blocking(op)
    }

    /// Close this handle (and its clones and sessions); idempotent. Every later call fails with
    /// [`Error::Closed`]. The file's pool — threads and connections — goes away once the last
    /// handle on the file is closed or dropped and the requests it accepted have been served.
    ///
    /// Closing (or dropping) the *last* handle of a file blocks the calling thread until that
    /// drain is done; in async code, do it where blocking is acceptable (for example in
    /// `tokio::task::spawn_blocking`) if many requests may still be queued.
    pub fn close(&self) {
        self.handle.close();
    }

    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Group-commit statistics of the file's pool (shared by every handle on the file).
    pub fn pool_stats(&self) -> crate::pool::PoolStats {
        self.handle.pool().stats()
    }

    /// The table pair this handle reads and writes.
    pub fn tables(&self) -> &Tables {
        self.handle.ctx()
    }

    pub(crate) fn handle(&self) -> &Handle<SqliteEngine> {
        &self.handle
    }
}

pub(crate) fn unexpected(o: &Outcome) -> Error {
    Error::Internal(format!("unexpected outcome {o:?}"))
}

/// Settings for [`Store`]. Connection-level ones (durability, readers, busy timeout) are fixed by
/// the first opener of a file in the process; later openers must ask for the same ones.
///
/// ```
/// # fn main() -> agent_sessions::Result<()> {
/// use agent_sessions::{Durability, Store};
/// use std::time::Duration;
///
/// let dir = tempfile::tempdir().unwrap();
/// let store = Store::builder(dir.path().join("x.db"))
///     .readers(2)
///     .durability(Durability::Full)
///     .sessions_table("agent_sessions")
///     .messages_table("agent_messages")
///     .busy_timeout(Duration::from_secs(5))
///     .open()?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct StoreBuilder {
    path: PathBuf,
    sessions_table: String,
    messages_table: String,
    options: ConnOptions,
    pool: PoolConfig,
    settings: SessionSettings,
    structure: bool,
}

impl StoreBuilder {
    pub fn new(path: impl AsRef<Path>) -> Self {
        StoreBuilder {
            path: path.as_ref().to_owned(),
            sessions_table: "agent_sessions".into(),
            messages_table: "agent_messages".into(),
            options: ConnOptions::default(),
            pool: PoolConfig::default(),
            settings: SessionSettings::default(),
            structure: false,
        }
    }

    /// Also create the Advanced structure tables (`message_structure`, `turn_usage`,
    /// `branch_reservations`, `session_clear_generations`) and claim them for this table pair,
    /// in the same transaction as the base tables. Opening fails with [`Error::Schema`], and
    /// creates nothing, when another sessions/messages pair already owns them (the structure
    /// tables have fixed names, so one pair per file). Default `false` (basic sessions only;
    /// Advanced sessions then need a file whose structure tables this pair already owns).
    ///
    /// ```
    /// # fn main() -> agent_sessions::Result<()> {
    /// use agent_sessions::{Error, Store};
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("x.db");
    /// Store::builder(&path).create_structure_tables(true).open()?.close();
    /// // Another table pair cannot claim the same file's structure tables.
    /// let other = Store::builder(&path)
    ///     .sessions_table("s2")
    ///     .messages_table("m2")
    ///     .create_structure_tables(true)
    ///     .open();
    /// assert!(matches!(other, Err(Error::Schema(_))));
    /// # Ok(()) }
    /// ```
    pub fn create_structure_tables(mut self, yes: bool) -> Self {
        self.structure = yes;
        self
    }

    /// Reader threads (each with one read-only connection). Default 2; ignored for `:memory:`.
    pub fn readers(mut self, n: usize) -> Self {
        self.pool.readers = n;
        self
    }

    pub fn durability(mut self, d: Durability) -> Self {
        self.options.durability = d;
        self
    }

    /// How long to wait for another process's write lock before failing with `Busy`.
    pub fn busy_timeout(mut self, t: Duration) -> Self {
        self.options.busy_timeout = t;
        self
    }

    /// Sessions table name: a plain identifier or a double-quoted one.
    pub fn sessions_table(mut self, name: impl Into<String>) -> Self {
        self.sessions_table = name.into();
        self
    }

    /// Messages table name: a plain identifier or a double-quoted one.
    pub fn messages_table(mut self, name: impl Into<String>) -> Self {
        self.messages_table = name.into();
        self
    }

    /// Default settings (the default `get_items` limit) of this handle's sessions.
    pub fn session_settings(mut self, s: SessionSettings) -> Self {
        self.settings = s;
        self
    }

    /// Most writes committed in one transaction (default 256). Like the reader count, fixed by
    /// the first opener of the file in the process (later openers' values are not used).
    pub fn batch_max(mut self, n: usize) -> Self {
        self.pool.batch_max = n.max(1);
        self
    }

    /// Fault injection for tests: writes fail with "database or disk is full" once the file
    /// would grow past `pages` pages.
    #[doc(hidden)]
    pub fn max_page_count(mut self, pages: u32) -> Self {
        self.options.max_page_count = Some(pages);
        self
    }

    #[doc(hidden)]
    pub fn faults(mut self, f: crate::pool::Faults) -> Self {
        self.pool.faults = f;
        self
    }

    /// Open the store: validate names, join or start the file's pool, create the tables.
    pub fn open(self) -> Result<Store> {
        let tables = Tables::new(&self.sessions_table, &self.messages_table)?;
        let handle = if self.path.as_os_str() == ":memory:" {
            let mut config = self.pool;
            config.readers = 0;
            let pool = Pool::open(SqliteEngine::memory(self.options.clone()), config)?;
            Handle::new(Arc::new(pool), Owner::Private, tables)
        } else {
            let key = canonical(&self.path)?;
            let (options, config) = (self.options.clone(), self.pool);
            Handle::acquire(
                registry(),
                key.clone(),
                tables,
                || Pool::open(SqliteEngine::file(key.clone(), options.clone()), config),
                |pool| compatible(pool, &key, &self.options, &self.pool),
            )?
        };
        let store = Store {
            handle: Arc::new(handle),
            settings: self.settings,
            structure_owned: Arc::new(OnceLock::new()),
        };
        if let Err(e) = store.execute_blocking(Op::Init {
            structure: self.structure,
        }) {
            store.close();
            return Err(e);
        }
        if self.structure {
            let _ = store.structure_owned.set(());
        }
        Ok(store)
    }
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
