//! The engines: what turns one operation into reads and writes of one database. Each engine
//! implements the protocol's [`Engine`](crate::protocol::engine::Engine) /
//! [`Connection`](crate::protocol::engine::Connection) traits; the protocol above them is shared.
//!
//! - [`sqlite`]: SQLite files, byte-compatible with the Python SDK's `SQLiteSession` and
//!   `AdvancedSQLiteSession` (SPEC §5).
//! - `model` (feature `test-hooks`): the reference model behind the same traits, for loom and
//!   tests.
//!
//! What every SQL engine shares is written once, above the engines: [`advanced`], the Advanced
//! session rules over row-level primitives each engine implements, and [`limit`], the `limit`
//! rules of `get_items`.

pub(crate) mod advanced;
pub(crate) mod limit;
#[cfg(feature = "test-hooks")]
pub mod model;
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

/// Everything an engine needs to open a database, validated by the builder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OpenOptions {
    pub(crate) durability: Durability,
    pub(crate) busy_timeout: std::time::Duration,
    pub(crate) pool: crate::protocol::pool::PoolConfig,
    pub(crate) sessions_table: String,
    pub(crate) messages_table: String,
    /// Create and claim the Advanced structure tables at open.
    pub(crate) structure: bool,
    /// Test hook: cap the database at this many pages, so writes meet a full database.
    pub(crate) max_page_count: Option<u32>,
    /// Test hook: open every connection through the SQLite VFS of this name (e.g. a
    /// fault-injecting one); `None`: SQLite's default VFS.
    pub(crate) vfs: Option<String>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            durability: Durability::Normal,
            busy_timeout: std::time::Duration::from_secs(5),
            pool: crate::protocol::pool::PoolConfig::default(),
            sessions_table: "agent_sessions".into(),
            messages_table: "agent_messages".into(),
            structure: false,
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
