//! Sessions: `SqliteSession` (async, with a blocking twin), the object-safe [`Session`] trait
//! every session type implements, and [`ModelSession`], the reference model as a session.
//!
//! A session is a session id plus a store handle; every method turns into one [`Op`], so the
//! semantics are the model's (SPEC §5.2) and the concurrency is the pool's.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use session_model::{Item, Model, Op, Outcome};

use crate::error::Result;
use crate::store::{unexpected, Store};
use crate::sync::{Arc, Mutex};

/// Session-level defaults, as in the Python SDK.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionSettings {
    /// The `get_items` limit used when a call passes `None` (`None` here: everything).
    pub limit: Option<i64>,
}

/// A boxed future, so [`Session`] can be used as `dyn Session`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The session interface of the Agents SDK.
pub trait Session: Send + Sync {
    fn session_id(&self) -> &str;
    /// Items oldest first: `None` = the settings' limit; `Some(n > 0)` the newest `n`;
    /// `Some(0)` none; `Some(n < 0)` all.
    fn get_items(&self, limit: Option<i64>) -> BoxFuture<'_, Result<Vec<Item>>>;
    /// Append items atomically (all or nothing).
    fn add_items(&self, items: Vec<Item>) -> BoxFuture<'_, Result<()>>;
    /// Remove and return the newest item.
    fn pop_item(&self) -> BoxFuture<'_, Result<Option<Item>>>;
    /// Delete the whole session.
    fn clear_session(&self) -> BoxFuture<'_, Result<()>>;
}

/// A basic session on a [`Store`] (the Python SDK's `SQLiteSession`). `Clone + Send + Sync`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> agent_sessions::Result<()> {
/// use agent_sessions::Store;
/// use serde_json::json;
///
/// let store = Store::open_in_memory()?;
/// let s = store.session("user-42");
/// s.add_items(vec![json!({"role": "user", "content": "hi"}),
///                  json!({"role": "assistant", "content": "hello"})]).await?;
/// assert_eq!(s.get_items(Some(1)).await?, vec![json!({"role": "assistant", "content": "hello"})]);
/// assert_eq!(s.pop_item().await?, Some(json!({"role": "assistant", "content": "hello"})));
/// s.clear_session().await?;
/// assert!(s.get_items(None).await?.is_empty());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqliteSession {
    store: Store,
    id: String,
    settings: SessionSettings,
}

impl SqliteSession {
    pub(crate) fn new(store: Store, id: String, settings: SessionSettings) -> Self {
        SqliteSession {
            store,
            id,
            settings,
        }
    }

    /// Python-style convenience: open `path` (default settings) and return one session of it.
    pub fn open(session_id: impl Into<String>, path: impl AsRef<Path>) -> Result<SqliteSession> {
        Ok(Store::open(path)?.session(session_id))
    }

    pub fn session_id(&self) -> &str {
        &self.id
    }

    /// The store this session belongs to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Same session with another default limit.
    pub fn with_settings(mut self, settings: SessionSettings) -> Self {
        self.settings = settings;
        self
    }

    fn get_op(&self, limit: Option<i64>) -> Op {
        Op::GetItems {
            session: self.id.to_string(),
            limit: limit.or(self.settings.limit),
        }
    }

    pub async fn get_items(&self, limit: Option<i64>) -> Result<Vec<Item>> {
        items(self.store.execute(self.get_op(limit)).await?)
    }

    /// Append items in one transaction. On a closed store this fails with `Closed` even when
    /// `items` is empty; otherwise an empty list is a no-op.
    pub async fn add_items(&self, items: Vec<Item>) -> Result<()> {
        match self.add_op(items)? {
            Some(op) => done(self.store.execute(op).await?),
            None => Ok(()),
        }
    }

    fn add_op(&self, items: Vec<Item>) -> Result<Option<Op>> {
        self.store.handle().check_open()?;
        Ok((!items.is_empty()).then(|| Op::AddItems {
            session: self.id.to_string(),
            items,
        }))
    }

    pub async fn pop_item(&self) -> Result<Option<Item>> {
        popped(self.store.execute(self.pop_op()).await?)
    }

    fn pop_op(&self) -> Op {
        Op::PopItem {
            session: self.id.to_string(),
        }
    }

    pub async fn clear_session(&self) -> Result<()> {
        done(self.store.execute(self.clear_op()).await?)
    }

    fn clear_op(&self) -> Op {
        Op::ClearSession {
            session: self.id.to_string(),
        }
    }

    /// The blocking twin: the same operations for threads and tests.
    pub fn blocking(&self) -> BlockingSession {
        BlockingSession(self.clone())
    }

    /// Close the store handle this session came from (and so every session of that handle).
    pub fn close(&self) {
        self.store.close();
    }
}

/// Blocking form of [`SqliteSession`]: each call waits on the calling thread.
#[derive(Clone)]
pub struct BlockingSession(SqliteSession);

impl BlockingSession {
    pub fn session_id(&self) -> &str {
        self.0.session_id()
    }

    pub fn get_items(&self, limit: Option<i64>) -> Result<Vec<Item>> {
        items(self.0.store.execute_blocking(self.0.get_op(limit))?)
    }

    pub fn add_items(&self, items: Vec<Item>) -> Result<()> {
        match self.0.add_op(items)? {
            Some(op) => done(self.0.store.execute_blocking(op)?),
            None => Ok(()),
        }
    }

    pub fn pop_item(&self) -> Result<Option<Item>> {
        popped(self.0.store.execute_blocking(self.0.pop_op())?)
    }

    pub fn clear_session(&self) -> Result<()> {
        done(self.0.store.execute_blocking(self.0.clear_op())?)
    }
}

impl Session for SqliteSession {
    fn session_id(&self) -> &str {
        &self.id
    }
    fn get_items(&self, limit: Option<i64>) -> BoxFuture<'_, Result<Vec<Item>>> {
        Box::pin(SqliteSession::get_items(self, limit))
    }
    fn add_items(&self, items: Vec<Item>) -> BoxFuture<'_, Result<()>> {
        Box::pin(SqliteSession::add_items(self, items))
    }
    fn pop_item(&self) -> BoxFuture<'_, Result<Option<Item>>> {
        Box::pin(SqliteSession::pop_item(self))
    }
    fn clear_session(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(SqliteSession::clear_session(self))
    }
}

/// The reference model as a [`Session`]: an in-memory test double with the exact semantics the
/// stores are checked against.
#[derive(Clone)]
pub struct ModelSession {
    model: Arc<Mutex<Model>>,
    id: String,
    settings: SessionSettings,
}

impl ModelSession {
    /// A session `id` on `model` (share one model between sessions to share a "file").
    pub fn new(model: Arc<Mutex<Model>>, id: impl Into<String>) -> Self {
        ModelSession {
            model,
            id: id.into(),
            settings: SessionSettings::default(),
        }
    }

    fn apply(&self, op: Op) -> Result<Outcome> {
        Ok(self.model.lock().apply(&op)?)
    }
}

impl Session for ModelSession {
    fn session_id(&self) -> &str {
        &self.id
    }
    fn get_items(&self, limit: Option<i64>) -> BoxFuture<'_, Result<Vec<Item>>> {
        let op = Op::GetItems {
            session: self.id.clone(),
            limit: limit.or(self.settings.limit),
        };
        Box::pin(async move { items(self.apply(op)?) })
    }
    fn add_items(&self, items: Vec<Item>) -> BoxFuture<'_, Result<()>> {
        let op = Op::AddItems {
            session: self.id.clone(),
            items,
        };
        Box::pin(async move { done(self.apply(op)?) })
    }
    fn pop_item(&self) -> BoxFuture<'_, Result<Option<Item>>> {
        let op = Op::PopItem {
            session: self.id.clone(),
        };
        Box::pin(async move { popped(self.apply(op)?) })
    }
    fn clear_session(&self) -> BoxFuture<'_, Result<()>> {
        let op = Op::ClearSession {
            session: self.id.clone(),
        };
        Box::pin(async move { done(self.apply(op)?) })
    }
}

fn items(o: Outcome) -> Result<Vec<Item>> {
    match o {
        Outcome::Items(v) => Ok(v),
        other => Err(unexpected(&other)),
    }
}

fn popped(o: Outcome) -> Result<Option<Item>> {
    match o {
        Outcome::Popped(v) => Ok(v),
        other => Err(unexpected(&other)),
    }
}

fn done(o: Outcome) -> Result<()> {
    match o {
        Outcome::Done => Ok(()),
        other => Err(unexpected(&other)),
    }
}
