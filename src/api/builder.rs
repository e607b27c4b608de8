//! Opening a store: [`Database`] (what names the database), [`StoreBuilder`] (its settings,
//! validated before any thread starts) and the blocking and async ways to open.
//!
//! The builder is engine-neutral: it hands validated [`OpenOptions`] to the engine named by the
//! [`Database`], which returns a [`Backend`](crate::protocol::handle::Backend); opening creates
//! the tables with one operation of the shared vocabulary (`Op::Init`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_sessions_model::Op;

use super::store::{SessionSettings, Store};
use crate::engine::{sqlite, Durability, OpenOptions};
use crate::error::{Error, Result};
use crate::protocol::reply;
use crate::protocol::sync::thread;

/// What names a database: a file, a private in-memory database, or a server URL.
///
/// Built from a path (always a file) or from a string: `":memory:"` is the in-memory database,
/// `postgres://…` / `postgresql://…` a PostgreSQL server, anything else a file path.
///
/// ```
/// use agent_sessions::Database;
/// assert_eq!(Database::from(":memory:"), Database::Memory);
/// assert_eq!(Database::from("x.db"), Database::File("x.db".into()));
/// assert!(matches!(Database::from("postgres://localhost/agents"), Database::Postgres(_)));
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Database {
    /// An SQLite file (created if missing), shared by every opener in the process.
    File(PathBuf),
    /// A private in-memory SQLite database, lost when its store closes.
    Memory,
    /// A PostgreSQL server (`postgres://user@host/db`); needs the `postgres` feature.
    Postgres(String),
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::File(p) => f.debug_tuple("File").field(p).finish(),
            Database::Memory => f.write_str("Memory"),
            Database::Postgres(url) => f.debug_tuple("Postgres").field(&redact(url)).finish(),
        }
    }
}

/// The path, `:memory:`, or the URL with its password redacted — safe for messages and logs.
///
/// ```
/// use agent_sessions::Database;
/// assert_eq!(Database::from("postgres://me:pw@db/agents").to_string(), "postgres://me:***@db/agents");
/// assert_eq!(Database::from(":memory:").to_string(), ":memory:");
/// ```
impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::File(p) => write!(f, "{}", p.display()),
            Database::Memory => f.write_str(":memory:"),
            Database::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

/// A URL with its password (in the user info, or a `password=` query parameter) replaced by
/// `***`, for messages and logs.
pub(crate) fn redact(url: &str) -> String {
    let url = redact_userinfo(url);
    match url.split_once('?') {
        Some((base, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_owned(),
                })
                .collect();
            format!("{base}?{}", query.join("&"))
        }
        None => url,
    }
}

fn redact_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => match rest[..at].find(':') {
            Some(colon) => format!("{scheme}://{}:***{}", &rest[..colon], &rest[at..]),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

impl From<&str> for Database {
    fn from(s: &str) -> Database {
        if s == ":memory:" {
            Database::Memory
        } else if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Database::Postgres(s.to_owned())
        } else {
            Database::File(PathBuf::from(s))
        }
    }
}

impl From<String> for Database {
    fn from(s: String) -> Database {
        Database::from(s.as_str())
    }
}

impl From<&String> for Database {
    fn from(s: &String) -> Database {
        Database::from(s.as_str())
    }
}

impl From<&Path> for Database {
    fn from(p: &Path) -> Database {
        if p.as_os_str() == ":memory:" {
            Database::Memory
        } else {
            Database::File(p.to_owned())
        }
    }
}

impl From<PathBuf> for Database {
    fn from(p: PathBuf) -> Database {
        Database::from(p.as_path())
    }
}

impl From<&PathBuf> for Database {
    fn from(p: &PathBuf) -> Database {
        Database::from(p.as_path())
    }
}

impl Store {
    /// Open (creating if needed) a database with default settings: a file path, `":memory:"`,
    /// or anything else a [`Database`] is made from. Blocks while the pool starts and the
    /// tables are created; in async code use [`Store::open_async`].
    pub fn open(db: impl Into<Database>) -> Result<Store> {
        StoreBuilder::new(db).open()
    }

    /// [`Store::open`] without blocking the caller's thread: the opening runs on a thread of
    /// its own and the returned future completes when it is done. Works on any executor.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> agent_sessions::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = agent_sessions::Store::open_async(dir.path().join("a.db")).await?;
    /// store.session("s").add_items(vec![serde_json::json!("hi")]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn open_async(db: impl Into<Database>) -> Result<Store> {
        StoreBuilder::new(db).open_async().await
    }

    /// A private in-memory database (lost when the store closes); its writer serves reads too.
    pub fn open_in_memory() -> Result<Store> {
        StoreBuilder::new(Database::Memory).open()
    }

    /// [`Store::open_in_memory`] without blocking the caller's thread.
    pub async fn open_in_memory_async() -> Result<Store> {
        StoreBuilder::new(Database::Memory).open_async().await
    }

    /// Configure before opening.
    pub fn builder(db: impl Into<Database>) -> StoreBuilder {
        StoreBuilder::new(db)
    }
}

/// Settings for [`Store`]. Connection-level ones are fixed by the first opener of a database in
/// the process: a later opener asking for another durability, reader count or busy timeout is
/// refused with [`Error::InvalidArgument`]; its `batch_max`, `queue_cap` and `queue_bytes` are
/// not used (the running pool's apply). Every value is validated by `open`, before any thread
/// starts.
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
///     .queue_cap(1024)
///     .open()?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct StoreBuilder {
    db: Database,
    options: OpenOptions,
    settings: SessionSettings,
}

impl StoreBuilder {
    /// Default settings for `db`.
    pub fn new(db: impl Into<Database>) -> Self {
        StoreBuilder {
            db: db.into(),
            options: OpenOptions::default(),
            settings: SessionSettings::default(),
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
        self.options.structure = yes;
        self
    }

    /// Reader threads, each with one read-only connection: 1 to 64, default 2. (In-memory
    /// databases have none: their writer serves reads.)
    pub fn readers(mut self, n: usize) -> Self {
        self.options.pool.readers = n;
        self
    }

    /// How hard each commit tries to survive a power loss. Default: [`Durability::Normal`] on
    /// SQLite; [`Durability::Full`] on PostgreSQL, where `Normal` (`synchronous_commit = off`)
    /// is an opt-in.
    pub fn durability(mut self, d: Durability) -> Self {
        self.options.durability = Some(d);
        self
    }

    /// How long to wait for another process's write lock before failing with
    /// [`Error::Busy`]: at most `i32::MAX` milliseconds (about 24 days), default 5 s.
    pub fn busy_timeout(mut self, t: Duration) -> Self {
        self.options.busy_timeout = t;
        self
    }

    /// Sessions table name: a plain identifier or a double-quoted one.
    pub fn sessions_table(mut self, name: impl Into<String>) -> Self {
        self.options.sessions_table = name.into();
        self
    }

    /// Messages table name: a plain identifier or a double-quoted one.
    pub fn messages_table(mut self, name: impl Into<String>) -> Self {
        self.options.messages_table = name.into();
        self
    }

    /// PostgreSQL: write item JSON with every non-ASCII character escaped (`\uXXXX`), as the
    /// SDK's `SQLAlchemySession(ensure_ascii=True)` does; default `true`. SQLite always
    /// escapes, as the SDK's `SQLiteSession` does.
    pub fn ensure_ascii(mut self, yes: bool) -> Self {
        self.options.ensure_ascii = yes;
        self
    }

    /// PostgreSQL: how many writer connections this process uses, 1 to 16, default 1. Each is
    /// a pool of its own; a session's writes always go to the same one (by a hash of its id),
    /// so they keep their order, and different sessions commit in parallel — the server
    /// overlaps their COMMITs' flushes. The `readers` are shared by all of them (any
    /// connection sees every acknowledged write): `writers + readers` connections in all. The lock protocol that
    /// serves several hosts serves them. SQLite has one writer per file: only 1 is accepted.
    pub fn writers(mut self, n: usize) -> Self {
        self.options.writers = n;
        self
    }

    /// Default settings (the default `get_items` limit) of this handle's sessions.
    pub fn session_settings(mut self, s: SessionSettings) -> Self {
        self.settings = s;
        self
    }

    /// Most writes committed in one transaction: at least 1, default 256.
    pub fn batch_max(mut self, n: usize) -> Self {
        self.options.pool.batch_max = n;
        self
    }

    /// Most requests waiting in one queue (the writer's, or the readers'): at least 1, default
    /// 4096. Beyond it, blocking callers wait on their thread and async callers are suspended
    /// (never blocking the executor) until the pool catches up.
    pub fn queue_cap(mut self, n: usize) -> Self {
        self.options.pool.queue_cap = n;
        self
    }

    /// Most bytes of item data waiting in one queue (estimated from the items' sizes): at
    /// least 1, default 64 MiB. A request larger than the bound is still accepted when its
    /// queue is empty, so no request is refused for its size alone.
    pub fn queue_bytes(mut self, n: usize) -> Self {
        self.options.pool.queue_bytes = n;
        self
    }

    /// Fault injection for tests: writes fail with "database or disk is full" once the file
    /// would grow past `pages` pages.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn max_page_count(mut self, pages: u32) -> Self {
        self.options.max_page_count = Some(pages);
        self
    }

    /// Test hook: open every connection through the registered SQLite VFS of this name
    /// (e.g. a fault-injecting one) instead of SQLite's default.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn vfs(mut self, name: impl Into<String>) -> Self {
        self.options.vfs = Some(name.into());
        self
    }

    /// Deliberately broken protocol variants, for negative controls.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn faults(mut self, f: crate::protocol::pool::Faults) -> Self {
        self.options.pool.faults = f;
        self
    }

    /// Check every value before anything starts.
    fn validate(&self) -> Result<()> {
        let o = &self.options;
        let bad = |what: &str, why: String| Err(Error::InvalidArgument(format!("{what}: {why}")));
        if !(1..=64).contains(&o.pool.readers) {
            return bad("readers", format!("{} is outside 1..=64", o.pool.readers));
        }
        if !(1..=16).contains(&o.writers) {
            return bad("writers", format!("{} is outside 1..=16", o.writers));
        }
        if o.writers != 1 && !matches!(self.db, Database::Postgres(_)) {
            return bad(
                "writers",
                format!(
                    "{} asked for {} writers, but an SQLite database has exactly one (its write \
                     lock); several writers are for PostgreSQL",
                    self.db, o.writers
                ),
            );
        }
        if o.pool.batch_max == 0 {
            return bad("batch_max", "must be at least 1".into());
        }
        if o.pool.queue_cap == 0 {
            return bad("queue_cap", "must be at least 1".into());
        }
        if o.pool.queue_bytes == 0 {
            return bad("queue_bytes", "must be at least 1".into());
        }
        if o.busy_timeout.as_millis() > i32::MAX as u128 {
            return bad(
                "busy_timeout",
                format!(
                    "{:?} is longer than SQLite's limit of {} ms (about 24 days)",
                    o.busy_timeout,
                    i32::MAX
                ),
            );
        }
        Ok(())
    }

    /// Open the store: validate every setting, join or start the database's pool, create the
    /// tables. Blocks while doing so; in async code use [`StoreBuilder::open_async`].
    pub fn open(self) -> Result<Store> {
        self.validate()?;
        let (backend, tables) = match &self.db {
            Database::File(path) => sqlite::open_file(path, &self.options)?,
            Database::Memory => sqlite::open_memory(&self.options)?,
            #[cfg(feature = "postgres")]
            Database::Postgres(url) => {
                crate::engine::postgres::open(url, redact(url), &self.options)?
            }
            #[cfg(not(feature = "postgres"))]
            Database::Postgres(url) => {
                return Err(Error::InvalidArgument(format!(
                    "{} names a PostgreSQL server, but this build of agent-sessions has no \
                     PostgreSQL engine (the `postgres` feature)",
                    redact(url)
                )))
            }
        };
        let store = Store::new(backend, self.settings, tables);
        if let Err(e) = store.execute_blocking(Op::Init {
            structure: self.options.structure,
        }) {
            store.close();
            return Err(e);
        }
        if self.options.structure {
            store.mark_structure_owned();
        }
        Ok(store)
    }

    /// [`StoreBuilder::open`] without blocking the caller's thread: the opening (threads
    /// started, tables created, perhaps a busy timeout waited out) runs on a thread of its own.
    pub async fn open_async(self) -> Result<Store> {
        self.validate()?;
        let (tx, rx) = reply::channel();
        thread::spawn("agent-sessions-open".to_owned(), move || {
            tx.send(self.open())
        })?;
        rx.await
    }
}

// Not under `--cfg agent_sessions_loom`: these tests touch shim primitives outside a loom model.
#[cfg(all(test, not(agent_sessions_loom)))]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact("postgres://me:secret@host:5432/db"),
            "postgres://me:***@host:5432/db"
        );
        assert_eq!(redact("postgres://me@host/db"), "postgres://me@host/db");
        assert_eq!(
            redact("postgres://host/db?x=a:b@c"),
            "postgres://host/db?x=a:b@c"
        );
        assert_eq!(
            redact("postgres://h/db?sslmode=require&password=s3cret"),
            "postgres://h/db?sslmode=require&password=***"
        );
        let d = Database::from("postgresql://u:pw@h/db");
        assert!(!format!("{d:?}").contains("pw"));
    }

    #[test]
    fn every_builder_value_is_validated_before_anything_starts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("never.db");
        let cases = [
            Store::builder(&path).busy_timeout(Duration::from_millis(i32::MAX as u64 + 1)),
            Store::builder(&path).readers(0),
            Store::builder(&path).readers(65),
            Store::builder(&path).batch_max(0),
            Store::builder(&path).queue_cap(0),
            Store::builder(&path).queue_bytes(0),
            Store::builder(&path).writers(2),
            Store::builder(&path).writers(0),
        ];
        for b in cases {
            let what = format!("{b:?}");
            match b.open() {
                Err(Error::InvalidArgument(_)) => {}
                other => panic!("{what}: {other:?}"),
            }
        }
        assert!(!path.exists(), "a rejected builder created the file");
        #[cfg(not(feature = "postgres"))]
        assert!(matches!(
            Store::open("postgres://localhost/x"),
            Err(Error::InvalidArgument(m)) if m.contains("postgres")
        ));
    }
}
