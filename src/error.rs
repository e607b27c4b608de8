//! The one error type of the crate. Errors are `Clone` because group commit may have to hand the
//! same failure (a failed COMMIT) to every request of a batch (I6).

use std::fmt;

/// Everything an operation on a store can fail with. Messages name the session, table or branch
/// concerned and say what to do where something can be done.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The handle (or the store behind it) was closed; nothing was done.
    #[error("the store is closed")]
    Closed,
    /// The file's tables are missing, foreign, or owned by another table pair.
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
    #[error("database is busy: another process held the lock past the busy timeout ({0})")]
    Busy(String),
    /// Any other SQLite failure, with SQLite's primary result code.
    #[error("sqlite error{}: {message}", code_suffix(*.code))]
    Sqlite { code: Option<i32>, message: String },
    #[error("i/o error: {0}")]
    Io(String),
    /// A request panicked inside the store; the request (and only it) failed.
    #[error("internal error: {0}")]
    Internal(String),
}

fn code_suffix(code: Option<i32>) -> String {
    code.map(|c| format!(" (code {c})")).unwrap_or_default()
}

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(f, msg) => {
                let message = msg.clone().unwrap_or_else(|| f.to_string());
                match f.code {
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked => {
                        Error::Busy(message)
                    }
                    rusqlite::ErrorCode::ReadOnly => Error::Sqlite {
                        code: Some(f.extended_code),
                        message: format!(
                            "{message} (the database file or its directory cannot be written: \
                             writes are refused, reads still work)"
                        ),
                    },
                    _ => Error::Sqlite {
                        code: Some(f.extended_code),
                        message,
                    },
                }
            }
            _ => Error::Sqlite {
                code: None,
                message: e.to_string(),
            },
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e.to_string())
    }
}

impl From<session_model::ModelError> for Error {
    fn from(e: session_model::ModelError) -> Self {
        use session_model::ModelError as M;
        match e {
            M::InvalidArgument(m) => Error::InvalidArgument(m),
            M::Schema(m) => Error::Schema(m),
            M::BranchNotFound(m) => Error::BranchNotFound(m),
            M::BranchIdUsed(m) => Error::BranchIdUsed(m),
            M::TurnNotFound(m) => Error::TurnNotFound(m),
        }
    }
}

impl Error {
    /// The same error with where it happened ("opening /x.db", "session 'u1'") prefixed to its
    /// message; kinds without a free-text message are returned unchanged.
    pub(crate) fn within(self, what: impl fmt::Display) -> Error {
        match self {
            Error::Sqlite { code, message } => Error::Sqlite {
                code,
                message: format!("{what}: {message}"),
            },
            Error::Schema(m) => Error::Schema(format!("{what}: {m}")),
            Error::Io(m) => Error::Io(format!("{what}: {m}")),
            Error::Busy(m) => Error::Busy(format!("{what}: {m}")),
            other => other,
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
