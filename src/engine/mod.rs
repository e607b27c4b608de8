//! The engines: what turns one operation into reads and writes of one database. Each engine
//! implements the protocol's [`Engine`](crate::protocol::engine::Engine) /
//! [`Connection`](crate::protocol::engine::Connection) traits; the protocol above them is shared.
//!
//! - [`sqlite`]: SQLite files, byte-compatible with the Python SDK's `SQLiteSession` and
//!   `AdvancedSQLiteSession` (SPEC §5).
//! - `postgres` (feature `postgres`): PostgreSQL servers, sharing the basic tables with the
//!   SDK's `SQLAlchemySession`, for several hosts on one database.
//! - `model` (feature `test-hooks`): the reference model behind the same traits, for loom and
//!   tests.
//!
//! What every SQL engine shares is written once, above the engines: [`advanced`], the Advanced
//! session rules over row-level primitives each engine implements, and [`limit`], the `limit`
//! rules of `get_items`, and [`ident`], the validation of table names.

pub(crate) mod advanced;
pub(crate) mod ident;
pub(crate) mod limit;
#[cfg(feature = "test-hooks")]
pub mod model;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
// The multi-host decisions, free of PostgreSQL types: the engine's, and the model checker's
// (under `test-hooks`, without needing the `postgres` feature).
#[cfg(any(feature = "postgres", feature = "test-hooks"))]
#[path = "postgres/decide.rs"]
pub mod pg_decide;
pub(crate) mod sqlite;

/// How hard a commit tries to survive a power loss. Every engine maps it to its own setting
/// (SQLite: `synchronous`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Durability {
    /// Survives a process crash; a power loss may lose the last commits, never consistency
    /// (SQLite in WAL mode: `synchronous=NORMAL`).
    #[default]
    Normal,
    /// Each commit (so each group of writes) is flushed to stable storage before it is
    /// acknowledged (SQLite: `synchronous=FULL`).
    Full,
}

/// An opened database: its backend and the validated table names as written in SQL.
pub(crate) type Opened = (
    crate::protocol::sync::Arc<dyn crate::protocol::handle::Backend>,
    (String, String),
);

/// Everything an engine needs to open a database, validated by the builder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OpenOptions {
    /// `None`: the engine's default (SQLite `Normal`, PostgreSQL `Full`).
    pub(crate) durability: Option<Durability>,
    pub(crate) busy_timeout: std::time::Duration,
    pub(crate) pool: crate::protocol::pool::PoolConfig,
    pub(crate) sessions_table: String,
    pub(crate) messages_table: String,
    /// Create and claim the Advanced structure tables at open.
    pub(crate) structure: bool,
    /// PostgreSQL: item JSON with non-ASCII escaped (the SDK's `ensure_ascii`, default on).
    pub(crate) ensure_ascii: bool,
    /// PostgreSQL: writer connections (pools) per process, sessions routed by id; SQLite: 1.
    pub(crate) writers: usize,
    /// Test hook: cap the database at this many pages, so writes meet a full database.
    pub(crate) max_page_count: Option<u32>,
    /// Test hook: open every connection through the SQLite VFS of this name (e.g. a
    /// fault-injecting one); `None`: SQLite's default VFS.
    pub(crate) vfs: Option<String>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            durability: None,
            busy_timeout: std::time::Duration::from_secs(5),
            pool: crate::protocol::pool::PoolConfig::default(),
            sessions_table: "agent_sessions".into(),
            messages_table: "agent_messages".into(),
            structure: false,
            ensure_ascii: true,
            writers: 1,
            max_page_count: None,
            vfs: None,
        }
    }
}

/// The error for an operation of a newer vocabulary than this engine implements (the
/// vocabulary is `#[non_exhaustive]`, so engines must say so rather than fail to compile).
pub(crate) fn unsupported(op: &impl std::fmt::Debug) -> crate::Error {
    crate::Error::InvalidArgument(format!("this engine does not implement {op:?}"))
}
