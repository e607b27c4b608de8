//! The one error type of the crate. Errors are `Clone` because group commit may have to hand the
//! same failure (a failed COMMIT) to every request of a batch (I6); the underlying driver error
//! is kept as a shared [`source`](std::error::Error::source) so nothing of it is lost.

use std::error::Error as StdError;
use std::fmt;

use crate::protocol::sync::Arc;

/// Everything an operation on a store can fail with. Messages name the session, table or branch
/// concerned and say what to do where something can be done.
///
/// **Match on [`Error::kind`]**, not on the variants: the kinds are the stable classification
/// (the same on SQLite and PostgreSQL), while variants may gain fields or siblings in minor
/// releases.
///
/// ```
/// use agent_sessions::{ErrorKind, Store};
/// use serde_json::json;
///
/// let store = Store::builder(":memory:").create_structure_tables(true).open()?;
/// let session = store.advanced_session("a")?.blocking();
/// session.add_items(vec![json!({"role": "user", "content": "hi"})])?;
/// match session.create_branch_from_turn(7, None) {
///     Ok(branch) => println!("on {branch}"),
///     Err(e) if e.kind() == ErrorKind::NotFound => println!("no such turn: {e}"),
///     Err(e) if e.is_retryable() => println!("try again later: {e}"),
///     Err(e) => return Err(e),
/// }
/// # Ok::<(), agent_sessions::Error>(())
/// ```
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The session, store handle or pool was closed; nothing was done.
    #[error("the store is closed")]
    Closed,
    /// The database's tables are missing, foreign, or owned by another table pair, or the file
    /// is not a database of this engine.
    #[error("schema: {0}")]
    Schema(String),
    /// An argument was rejected before anything was written.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An Advanced branch has no rows (a branch exists while it has rows).
    #[error("branch not found: {0}")]
    BranchNotFound(String),
    /// A branch id was used before in this session (ids are never reused, even after a delete
    /// or a clear).
    #[error("branch id already used: {0}")]
    BranchIdUsed(String),
    /// No user item with that turn number (or matching that text) on the branch.
    #[error("turn not found: {0}")]
    TurnNotFound(String),
    /// Another connection (usually another process) held the write lock past the busy timeout.
    /// Retrying later may succeed.
    #[error(
        "database is busy: another connection held the lock past the busy timeout ({message})"
    )]
    #[non_exhaustive]
    Busy {
        /// What was being done, and the engine's message.
        message: String,
        /// The driver's error.
        #[source]
        source: Option<Source>,
    },
    /// Any other SQLite failure.
    #[error("sqlite error{}: {message}", code_suffix(*.code))]
    #[non_exhaustive]
    Sqlite {
        /// SQLite's *primary* result code (the low byte of the extended code, e.g. 13 for
        /// `SQLITE_FULL`), if SQLite reported one.
        code: Option<i32>,
        /// SQLite's extended result code (e.g. 1555 for `SQLITE_CONSTRAINT_PRIMARYKEY`).
        extended_code: Option<i32>,
        /// What was being done, and SQLite's message.
        message: String,
        /// The driver's error.
        #[source]
        source: Option<Source>,
    },
    /// Any other PostgreSQL failure (feature `postgres`), including a lost connection (no
    /// SQLSTATE; [`ErrorKind::Io`]).
    #[error("postgres error{}: {message}", code.as_deref().map(|c| format!(" (SQLSTATE {c})")).unwrap_or_default())]
    #[non_exhaustive]
    Postgres {
        /// The server's SQLSTATE (e.g. `23505` for a unique violation), if it answered.
        code: Option<String>,
        /// What was being done, and the server's or the client's message.
        message: String,
        /// The driver's error.
        #[source]
        source: Option<Source>,
    },
    /// An operating-system failure outside the database engine (threads, paths).
    #[error("i/o error: {0}")]
    Io(String),
    /// A request panicked inside the store, or the store broke one of its own rules; the
    /// request (and only it) failed.
    #[error("internal error: {0}")]
    Internal(String),
}

/// A stable classification of [`Error`]s, for callers that decide what to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// [`Error::Closed`].
    Closed,
    /// [`Error::Schema`], or a database file that is corrupt or not a database.
    Schema,
    /// [`Error::InvalidArgument`].
    InvalidArgument,
    /// [`Error::BranchNotFound`] or [`Error::TurnNotFound`].
    NotFound,
    /// [`Error::BranchIdUsed`].
    AlreadyExists,
    /// The lock was held by another connection past the busy timeout (retryable).
    Busy,
    /// The disk or the database is full (`SQLITE_FULL`).
    Full,
    /// The database cannot be written (permissions, read-only media).
    ReadOnly,
    /// Any other engine failure.
    Database,
    /// [`Error::Io`].
    Io,
    /// [`Error::Internal`].
    Internal,
}

/// The driver error behind an [`Error`], shared between the clones of one failure.
#[derive(Clone)]
pub struct Source(Arc<Box<dyn StdError + Send + Sync>>);

impl Source {
    pub(crate) fn new(e: impl StdError + Send + Sync + 'static) -> Source {
        Source(Arc::new(Box::new(e)))
    }
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl StdError for Source {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0.source()
    }
}

fn code_suffix(code: Option<i32>) -> String {
    code.map(|c| format!(" (code {c})")).unwrap_or_default()
}

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// SQLite's primary result codes this crate classifies.
const SQLITE_LOCKED: i32 = 6;
const SQLITE_READONLY: i32 = 8;
const SQLITE_CORRUPT: i32 = 11;
const SQLITE_FULL: i32 = 13;
const SQLITE_NOTADB: i32 = 26;

impl Error {
    /// What kind of failure this is.
    ///
    /// ```
    /// use agent_sessions::{Error, ErrorKind};
    /// assert_eq!(Error::Closed.kind(), ErrorKind::Closed);
    /// assert!(!Error::Closed.is_retryable());
    /// ```
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Closed => ErrorKind::Closed,
            Error::Schema(_) => ErrorKind::Schema,
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::BranchNotFound(_) | Error::TurnNotFound(_) => ErrorKind::NotFound,
            Error::BranchIdUsed(_) => ErrorKind::AlreadyExists,
            Error::Busy { .. } => ErrorKind::Busy,
            Error::Sqlite { code, .. } => match *code {
                Some(SQLITE_LOCKED) => ErrorKind::Busy,
                Some(SQLITE_FULL) => ErrorKind::Full,
                Some(SQLITE_READONLY) => ErrorKind::ReadOnly,
                Some(SQLITE_CORRUPT | SQLITE_NOTADB) => ErrorKind::Schema,
                _ => ErrorKind::Database,
            },
            Error::Postgres { code, .. } => match code.as_deref() {
                None => ErrorKind::Io,
                Some(c) if c.starts_with("08") => ErrorKind::Io,
                Some("53100") => ErrorKind::Full,
                Some("25006") => ErrorKind::ReadOnly,
                Some(_) => ErrorKind::Database,
            },
            Error::Io(_) => ErrorKind::Io,
            Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// Whether the same request may succeed if simply tried again later (a lock held by
    /// someone else). Nothing was written by a request that failed this way.
    pub fn is_retryable(&self) -> bool {
        self.kind() == ErrorKind::Busy
    }

    /// The same error with where it happened ("opening /x.db", "session 'u1'") prefixed to its
    /// message; kinds without a free-text message are returned unchanged.
    pub(crate) fn within(self, what: impl fmt::Display) -> Error {
        match self {
            Error::Sqlite {
                code,
                extended_code,
                message,
                source,
            } => Error::Sqlite {
                code,
                extended_code,
                message: format!("{what}: {message}"),
                source,
            },
            Error::Busy { message, source } => Error::Busy {
                message: format!("{what}: {message}"),
                source,
            },
            Error::Postgres {
                code,
                message,
                source,
            } => Error::Postgres {
                code,
                message: format!("{what}: {message}"),
                source,
            },
            Error::Schema(m) => Error::Schema(format!("{what}: {m}")),
            Error::Io(m) => Error::Io(format!("{what}: {m}")),
            other => other,
        }
    }
}

/// Two errors are equal when they say the same thing; their sources are not compared.
impl PartialEq for Error {
    fn eq(&self, other: &Error) -> bool {
        use Error as E;
        match (self, other) {
            (E::Closed, E::Closed) => true,
            (E::Schema(a), E::Schema(b))
            | (E::InvalidArgument(a), E::InvalidArgument(b))
            | (E::BranchNotFound(a), E::BranchNotFound(b))
            | (E::BranchIdUsed(a), E::BranchIdUsed(b))
            | (E::TurnNotFound(a), E::TurnNotFound(b))
            | (E::Io(a), E::Io(b))
            | (E::Internal(a), E::Internal(b))
            | (E::Busy { message: a, .. }, E::Busy { message: b, .. }) => a == b,
            (
                E::Sqlite {
                    code: c1,
                    extended_code: x1,
                    message: m1,
                    ..
                },
                E::Sqlite {
                    code: c2,
                    extended_code: x2,
                    message: m2,
                    ..
                },
            ) => c1 == c2 && x1 == x2 && m1 == m2,
            (
                E::Postgres {
                    code: c1,
                    message: m1,
                    ..
                },
                E::Postgres {
                    code: c2,
                    message: m2,
                    ..
                },
            ) => c1 == c2 && m1 == m2,
            _ => false,
        }
    }
}

impl Eq for Error {}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        let rusqlite::Error::SqliteFailure(f, msg) = &e else {
            return Error::Sqlite {
                code: None,
                extended_code: None,
                message: e.to_string(),
                source: Some(Source::new(e)),
            };
        };
        let message = msg.clone().unwrap_or_else(|| f.to_string());
        let (extended, primary) = (f.extended_code, f.extended_code & 0xff);
        let message = match f.code {
            rusqlite::ErrorCode::DatabaseBusy => {
                return Error::Busy {
                    message,
                    source: Some(Source::new(e)),
                }
            }
            // SQLITE_LOCKED is a conflict inside this process (two statements of one
            // connection, or a shared cache), never another process's lock.
            rusqlite::ErrorCode::DatabaseLocked => format!(
                "{message} (a conflict between statements or connections of this process, \
                 not another process's lock)"
            ),
            rusqlite::ErrorCode::ReadOnly => format!(
                "{message} (the database file or its directory cannot be written: writes are \
                 refused, reads still work)"
            ),
            _ => message,
        };
        Error::Sqlite {
            code: Some(primary),
            extended_code: Some(extended),
            message,
            source: Some(Source::new(e)),
        }
    }
}

/// Lock timeouts, deadlocks and serialization failures are [`Error::Busy`] (the transaction was
/// rolled back: nothing of it was written); everything else keeps its SQLSTATE.
#[cfg(feature = "postgres")]
impl From<postgres::Error> for Error {
    fn from(e: postgres::Error) -> Self {
        let (code, message) = match e.as_db_error() {
            Some(db) => {
                let mut message = db.message().to_owned();
                if let Some(detail) = db.detail() {
                    message = format!("{message} ({detail})");
                }
                (Some(db.code().code().to_owned()), message)
            }
            None if e.is_closed() => (None, format!("the connection to the server is closed: {e}")),
            None => (None, e.to_string()),
        };
        if matches!(code.as_deref(), Some("55P03" | "40P01" | "40001")) {
            return Error::Busy {
                message: format!("{message} (SQLSTATE {})", code.unwrap_or_default()),
                source: Some(Source::new(e)),
            };
        }
        Error::Postgres {
            code,
            message,
            source: Some(Source::new(e)),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e.to_string())
    }
}

impl From<agent_sessions_model::ModelError> for Error {
    fn from(e: agent_sessions_model::ModelError) -> Self {
        use agent_sessions_model::ModelError as M;
        match e {
            M::InvalidArgument(m) => Error::InvalidArgument(m),
            M::Schema(m) => Error::Schema(m),
            M::BranchNotFound(m) => Error::BranchNotFound(m),
            M::BranchIdUsed(m) => Error::BranchIdUsed(m),
            M::TurnNotFound(m) => Error::TurnNotFound(m),
            other => Error::Internal(format!("unexpected model error {other:?}")),
        }
    }
}

/// `Result::context`: [`Error::within`] on the error of a result.
pub(crate) trait Context<T> {
    fn context(self, what: impl fmt::Display) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.into().within(what))
    }
}

// Not under `--cfg agent_sessions_loom`: these tests touch shim primitives outside a loom model.
#[cfg(all(test, not(agent_sessions_loom)))]
mod tests {
    use super::*;

    #[test]
    fn sqlite_errors_keep_the_primary_code_and_their_source() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER PRIMARY KEY)")
            .unwrap();
        conn.execute("INSERT INTO t VALUES (1)", []).unwrap();
        let e = Error::from(conn.execute("INSERT INTO t VALUES (1)", []).unwrap_err());
        match &e {
            Error::Sqlite {
                code,
                extended_code,
                ..
            } => {
                assert_eq!(*code, Some(19), "SQLITE_CONSTRAINT is primary code 19");
                assert_eq!(*extended_code, Some(1555), "SQLITE_CONSTRAINT_PRIMARYKEY");
            }
            other => panic!("{other:?}"),
        }
        assert!(e.source().is_some());
        // Debug output carries the driver's own error, for bug reports.
        assert!(format!("{e:?}").contains("SqliteFailure"), "{e:?}");
        assert_eq!(e.kind(), ErrorKind::Database);
        assert!(!e.is_retryable());
        let clone = e.clone();
        assert_eq!(clone, e);
    }

    #[test]
    fn busy_is_retryable_and_locked_does_not_blame_another_process() {
        let busy = Error::from(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(5),
            None,
        ));
        assert_eq!(busy.kind(), ErrorKind::Busy);
        assert!(busy.is_retryable());
        let locked = Error::from(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(6),
            None,
        ));
        assert!(matches!(&locked, Error::Sqlite { code: Some(6), .. }));
        assert!(
            locked.to_string().contains("not another process"),
            "{locked}"
        );
        assert!(!locked.to_string().contains("busy timeout"), "{locked}");
    }
}
