//! Sessions: `BasicSession` (async, with a blocking twin), the object-safe [`Session`] trait
//! every session type implements, and [`ModelSession`], the reference model as a session.
//!
//! A session is a session id plus a store handle; every method turns into one [`Op`], so the
//! semantics are the model's (SPEC §5.2) and the concurrency is the pool's.

use agent_sessions_model::{Item, Model, Op, Outcome};

use super::builder::Database;
use super::store::{unexpected, SessionSettings, Store};
use crate::error::{Error, Result};
use crate::protocol::handle::BoxFuture;
use crate::protocol::sync::{Arc, AtomicBool, Mutex, Ordering};

impl Store {
    /// A session of this store. Cheap; sessions of one store share its handle.
    pub fn session(&self, session_id: impl Into<String>) -> BasicSession {
        BasicSession::new(self.clone(), session_id.into(), self.settings())
    }
}

/// The session interface of the Agents SDK.
pub trait Session: Send + Sync {
    /// The session's id.
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
    /// Replace the whole history with `items` (compaction: a summary for the old turns).
    ///
    /// The default is [`clear_session`](Session::clear_session) then
    /// [`add_items`](Session::add_items): **not atomic** — a failure or a concurrent writer
    /// between the two can leave the session empty or mixed. Every session type of this crate
    /// overrides it with one transaction (one `Op::ReplaceItems`), and a wrapper should forward
    /// it to its inner session.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> agent_sessions::Result<()> {
    /// use agent_sessions::{Session, Store};
    /// use serde_json::json;
    /// let store = Store::open_in_memory()?;
    /// let s: Box<dyn Session> = Box::new(store.session("a"));
    /// s.add_items(vec![json!("turn 1"), json!("turn 2")]).await?;
    /// s.replace_items(vec![json!("summary")]).await?;
    /// assert_eq!(s.get_items(None).await?, vec![json!("summary")]);
    /// # Ok(()) }
    /// ```
    fn replace_items(&self, items: Vec<Item>) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.clear_session().await?;
            self.add_items(items).await
        })
    }
}

/// A boxed session is a session, so a wrapper such as [`EncryptedSession`](crate::EncryptedSession) can hold a `Box<dyn Session>`.
impl<T: Session + ?Sized> Session for Box<T> {
    fn session_id(&self) -> &str {
        (**self).session_id()
    }
    fn get_items(&self, limit: Option<i64>) -> BoxFuture<'_, Result<Vec<Item>>> {
        (**self).get_items(limit)
    }
    fn add_items(&self, items: Vec<Item>) -> BoxFuture<'_, Result<()>> {
        (**self).add_items(items)
    }
    fn pop_item(&self) -> BoxFuture<'_, Result<Option<Item>>> {
        (**self).pop_item()
    }
    fn clear_session(&self) -> BoxFuture<'_, Result<()>> {
        (**self).clear_session()
    }
    fn replace_items(&self, items: Vec<Item>) -> BoxFuture<'_, Result<()>> {
        (**self).replace_items(items)
    }
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
pub struct BasicSession {
    store: Store,
    id: String,
    settings: SessionSettings,
    /// Shared by the clones of this session value; set by [`BasicSession::close`].
    closed: Arc<AtomicBool>,
}

impl std::fmt::Debug for BasicSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicSession")
            .field("session_id", &self.id)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl BasicSession {
    pub(crate) fn new(store: Store, id: String, settings: SessionSettings) -> Self {
        BasicSession {
            store,
            id,
            settings,
            closed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Python-style convenience (`SQLiteSession(session_id, db_path)`): open the database
    /// (default settings) and return one session of it. Blocks while opening.
    pub fn open(session_id: impl Into<String>, db: impl Into<Database>) -> Result<BasicSession> {
        Ok(Store::open(db)?.session(session_id))
    }

    /// The session's id.
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

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if self.store.is_closed() {
            return Err(Error::Closed);
        }
        Ok(())
    }

    async fn exec(&self, op: Op) -> Result<Outcome> {
        self.check_open()?;
        self.store.execute(op).await
    }

    fn exec_blocking(&self, op: Op) -> Result<Outcome> {
        self.check_open()?;
        self.store.execute_blocking(op)
    }

    fn get_op(&self, limit: Option<i64>) -> Op {
        Op::GetItems {
            session: self.id.to_string(),
            limit: limit.or(self.settings.limit),
        }
    }

    /// Items oldest first: `None` = the settings' limit; `Some(n > 0)` the newest `n`;
    /// `Some(0)` none; `Some(n < 0)` all.
    pub async fn get_items(&self, limit: Option<i64>) -> Result<Vec<Item>> {
        items(self.exec(self.get_op(limit)).await?)
    }

    /// Append items in one transaction. On a closed store this fails with `Closed` even when
    /// `items` is empty; otherwise an empty list is a no-op.
    pub async fn add_items(&self, items: Vec<Item>) -> Result<()> {
        match self.add_op(items)? {
            Some(op) => done(self.exec(op).await?),
            None => Ok(()),
        }
    }

    /// Replace the whole history with `items` in one transaction — the compaction primitive:
    /// a concurrent reader sees the old history or the new one, never an empty or a mixed one,
    /// and a crash leaves one of the two. (The SDK's compaction clears, then adds: two
    /// transactions.) `items` may be empty (the session is then cleared).
    ///
    /// ```
    /// # fn main() -> agent_sessions::Result<()> {
    /// use serde_json::json;
    /// let s = agent_sessions::Store::open_in_memory()?.session("s").blocking();
    /// s.add_items(vec![json!("a long"), json!("conversation")])?;
    /// s.replace_items(vec![json!("its summary")])?;
    /// assert_eq!(s.get_items(None)?, vec![json!("its summary")]);
    /// # Ok(()) }
    /// ```
    pub async fn replace_items(&self, items: Vec<Item>) -> Result<()> {
        done(self.exec(self.replace_op(items)).await?)
    }

    fn replace_op(&self, items: Vec<Item>) -> Op {
        Op::ReplaceItems {
            session: self.id.to_string(),
            items,
        }
    }

    fn add_op(&self, items: Vec<Item>) -> Result<Option<Op>> {
        self.check_open()?;
        Ok((!items.is_empty()).then(|| Op::AddItems {
            session: self.id.to_string(),
            items,
        }))
    }

    /// Remove and return the newest item (corrupt rows met on the way are deleted).
    pub async fn pop_item(&self) -> Result<Option<Item>> {
        popped(self.exec(self.pop_op()).await?)
    }

    fn pop_op(&self) -> Op {
        Op::PopItem {
            session: self.id.to_string(),
        }
    }

    /// Delete the session's items and its session row.
    pub async fn clear_session(&self) -> Result<()> {
        done(self.exec(self.clear_op()).await?)
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

    /// Close this session value (and its clones): every later call through it fails with
    /// [`Error::Closed`]. The store and its other sessions go on; to end them all, close the
    /// [`Store`]. Idempotent; returns at once.
    ///
    /// ```
    /// # fn main() -> agent_sessions::Result<()> {
    /// let store = agent_sessions::Store::open_in_memory()?;
    /// let (a, b) = (store.session("a"), store.session("b"));
    /// a.close();
    /// assert_eq!(a.blocking().get_items(None), Err(agent_sessions::Error::Closed));
    /// assert_eq!(b.blocking().get_items(None), Ok(vec![]));
    /// # Ok(()) }
    /// ```
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Whether this session value, or its store, is closed.
    pub fn is_closed(&self) -> bool {
        self.check_open().is_err()
    }
}

/// Blocking form of [`BasicSession`]: each call waits on the calling thread.
#[derive(Clone)]
pub struct BlockingSession(BasicSession);

impl BlockingSession {
    /// The session's id.
    pub fn session_id(&self) -> &str {
        self.0.session_id()
    }

    /// Blocking [`BasicSession::get_items`].
    pub fn get_items(&self, limit: Option<i64>) -> Result<Vec<Item>> {
        items(self.0.exec_blocking(self.0.get_op(limit))?)
    }

    /// Blocking [`BasicSession::add_items`].
    pub fn add_items(&self, items: Vec<Item>) -> Result<()> {
        match self.0.add_op(items)? {
            Some(op) => done(self.0.exec_blocking(op)?),
            None => Ok(()),
        }
    }

    /// Blocking [`BasicSession::replace_items`].
    pub fn replace_items(&self, items: Vec<Item>) -> Result<()> {
        done(self.0.exec_blocking(self.0.replace_op(items))?)
    }

    /// Blocking [`BasicSession::pop_item`].
    pub fn pop_item(&self) -> Result<Option<Item>> {
        popped(self.0.exec_blocking(self.0.pop_op())?)
    }

    /// Blocking [`BasicSession::clear_session`].
    pub fn clear_session(&self) -> Result<()> {
        done(self.0.exec_blocking(self.0.clear_op())?)
    }
}

impl Session for BasicSession {
    fn session_id(&self) -> &str {
        &self.id
    }
    fn get_items(&self, limit: Option<i64>) -> BoxFuture<'_, Result<Vec<Item>>> {
        Box::pin(BasicSession::get_items(self, limit))
    }
    fn add_items(&self, items: Vec<Item>) -> BoxFuture<'_, Result<()>> {
        Box::pin(BasicSession::add_items(self, items))
    }
    fn pop_item(&self) -> BoxFuture<'_, Result<Option<Item>>> {
        Box::pin(BasicSession::pop_item(self))
    }
    fn clear_session(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(BasicSession::clear_session(self))
    }
    fn replace_items(&self, items: Vec<Item>) -> BoxFuture<'_, Result<()>> {
        Box::pin(BasicSession::replace_items(self, items))
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
    /// A session `id` on a fresh, empty model.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> agent_sessions::Result<()> {
    /// use agent_sessions::{testing::ModelSession, Session};
    /// let a = ModelSession::new("a");
    /// let b = a.sibling("b"); // same "file"
    /// a.add_items(vec![serde_json::json!("hi")]).await?;
    /// assert!(b.get_items(None).await?.is_empty());
    /// assert_eq!(a.snapshot().rows("a").len(), 1);
    /// # Ok(()) }
    /// ```
    pub fn new(id: impl Into<String>) -> Self {
        ModelSession {
            model: Arc::new(Mutex::new(Model::new())),
            id: id.into(),
            settings: SessionSettings::default(),
        }
    }

    /// Another session, `id`, on the same model (as two sessions share one file).
    pub fn sibling(&self, id: impl Into<String>) -> Self {
        ModelSession {
            model: self.model.clone(),
            id: id.into(),
            settings: self.settings,
        }
    }

    /// Same session with another default limit.
    pub fn with_settings(mut self, settings: SessionSettings) -> Self {
        self.settings = settings;
        self
    }

    /// A copy of the model's current state.
    pub fn snapshot(&self) -> Model {
        self.model.lock().clone()
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
    fn replace_items(&self, items: Vec<Item>) -> BoxFuture<'_, Result<()>> {
        let op = Op::ReplaceItems {
            session: self.id.clone(),
            items,
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
