//! `AdvancedSession`: the Python SDK's `AdvancedSQLiteSession` — conversation structure,
//! branches and per-turn usage on top of the basic messages, in the same tables and with the
//! same rows as Python writes them (SPEC §5.3).
//!
//! A session value is a *handle*: a session id plus a [`BranchPointer`] (the branch and the last
//! clear generation it has seen, [`HandleView`]), whose lock is never held across I/O. Every method sends one [`AdvancedOp`] carrying a snapshot of that view;
//! the engine checks the durable clear generation, runs the operation atomically (writes in the
//! writer's `BEGIN IMMEDIATE` group transaction, reads on one snapshot) and reports the view
//! after it, which the handle folds in with [`HandleView::merge`].
//!
//! Invariants upheld (checked against the reference model through real handles in the property
//! tests: `proptests/tests/advanced_rules.rs` and the Advanced state machine):
//! - I9: a session's live sequence numbers are unique; a batch takes contiguous numbers in input
//!   order; on a branch, `get_items` order is commit order.
//! - I10: after every Advanced operation, every structure row's message exists and every
//!   message written by an Advanced session has a structure row (messages and structure rows of
//!   a batch commit together; pop and delete remove orphaned messages).
//! - I11: a branch id is reserved at most once per session, ever (also across processes: the
//!   reservation is a primary key inserted inside the write transaction).
//! - I12: the clear generation grows by exactly one per clear; a handle that sees a newer one
//!   points at `main`; a switch or create validated before a clear never re-points after it.
//! - I13: usage lands only on the turn incarnation it was taken for ([`TurnAnchor`]).
//! - I15: a failed operation changes no row and no handle state (the request's savepoint is
//!   rolled back, and the handle merges nothing from a failure).
//!
//! Mixing with basic sessions: a basic [`crate::BasicSession`] on the same id reads and writes
//! the messages table only. Rows it writes have no structure row, so Advanced reads never show
//! them and Advanced `pop_item`/`delete_branch` remove them as orphans; a basic clear leaves
//! structure rows behind. Use one kind of session per session id.

use agent_sessions_model::advanced::AdvancedAnswer as A;
use agent_sessions_model::{AdvancedAnswer, AdvancedOp, Item};
use serde_json::Value;

pub use agent_sessions_model::{
    BranchInfo, HandleView, ToolUse, TurnAnchor, TurnGroup, TurnUsage, Usage, UsageTotals,
};

use super::builder::Database;
use super::session::Session;
use super::store::{SessionSettings, Store};
use crate::error::{Error, Result};
use crate::protocol::handle::BoxFuture;
use crate::protocol::pointer::BranchPointer;
use crate::protocol::sync::{Arc, AtomicBool, Ordering};

impl Store {
    /// An Advanced session (the Python SDK's `AdvancedSQLiteSession`): structure rows, branches
    /// and usage on top of the same messages. Each call returns a new *handle* (its own branch
    /// pointer, starting on `main`); clones of one handle share its pointer.
    ///
    /// The database's structure tables must belong to this store's table pair: open the store
    /// with [`StoreBuilder::create_structure_tables`](crate::StoreBuilder::create_structure_tables)`(true)`
    /// to create and claim them, or open a file where they already exist. Otherwise this fails
    /// with [`Error::Schema`] (missing tables, or tables owned by another sessions/messages pair
    /// — one pair per file). Unless the store claimed the tables at open, the first call on a
    /// store handle checks the file with one short read, *blocking* the calling thread; in
    /// async code use [`Store::advanced_session_async`].
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
    pub fn advanced_session(&self, session_id: impl Into<String>) -> Result<AdvancedSession> {
        if !self.structure_known() {
            self.structure_checked(self.structure_status()?)?;
        }
        self.new_advanced(session_id.into())
    }

    /// [`Store::advanced_session`] without blocking: the ownership check (if any) is awaited.
    pub async fn advanced_session_async(
        &self,
        session_id: impl Into<String>,
    ) -> Result<AdvancedSession> {
        if !self.structure_known() {
            self.structure_checked(self.structure_status_async().await?)?;
        }
        self.new_advanced(session_id.into())
    }

    /// A new handle, once the structure tables are known to be this pair's.
    fn new_advanced(&self, session_id: String) -> Result<AdvancedSession> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        Ok(AdvancedSession::new(
            self.clone(),
            session_id,
            self.settings(),
        ))
    }
}

/// One user turn, as `get_conversation_turns` and `find_turns_by_content` list it (the Python
/// SDK's dict keys).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ConversationTurn {
    /// The branch turn number (what `create_branch_from_turn` takes).
    pub turn: i64,
    /// The item's `content` as text: a string as is, anything else as JSON (non-ASCII kept);
    /// cut to 100 characters plus `"..."` in turn listings, whole in search results.
    pub content: String,
    /// The item's `content` value (`""` when the item has none).
    pub full_content: Value,
    /// When the turn's row was written (SQLite `CURRENT_TIMESTAMP`, UTC).
    pub timestamp: String,
    /// Always `true`: every user turn can be branched from.
    pub can_branch: bool,
}

impl ConversationTurn {
    fn from_record(r: agent_sessions_model::TurnRecord, max_chars: Option<usize>) -> Self {
        ConversationTurn {
            turn: r.turn,
            content: content_preview(&r.full_content, max_chars),
            full_content: r.full_content,
            timestamp: r.timestamp,
            can_branch: true,
        }
    }
}

/// Python's `_content_preview`: a string as is, anything else as `json.dumps(content,
/// ensure_ascii=False)`; longer than `max_chars` characters → the first `max_chars` + `"..."`.
pub fn content_preview(content: &Value, max_chars: Option<usize>) -> String {
    let text = match content {
        Value::String(s) => s.clone(),
        other => crate::json::to_python_json_unicode(other),
    };
    match max_chars {
        Some(max) if text.chars().count() > max => {
            let mut cut: String = text.chars().take(max).collect();
            cut.push_str("...");
            cut
        }
        _ => text,
    }
}

/// An Advanced session handle on a [`Store`]. `Clone + Send + Sync`; clones share one branch
/// pointer (they are the same handle) — call [`Store::advanced_session`] again for an
/// independent handle.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> agent_sessions::Result<()> {
/// use agent_sessions::{Store, Usage};
/// use serde_json::json;
///
/// let store = Store::builder(":memory:").create_structure_tables(true).open()?;
/// let a = store.advanced_session("user-42")?;
/// a.add_items(vec![json!({"role": "user", "content": "Paris?"}),
///                  json!({"role": "assistant", "content": "Sunny."})]).await?;
/// a.record_usage(Usage { requests: 1, total_tokens: 12, ..Usage::default() }).await?;
/// a.add_items(vec![json!({"role": "user", "content": "And Rome?"})]).await?;
///
/// // Branch before turn 2: the new branch holds turn 1 and becomes current.
/// let alt = a.create_branch_from_turn(2, Some("alt")).await?;
/// assert_eq!(a.current_branch_id(), alt);
/// assert_eq!(a.get_items(None).await?.len(), 2);
/// a.switch_to_branch("main").await?;
/// assert_eq!(a.get_conversation_turns(None).await?[1].content, "And Rome?");
/// assert_eq!(a.get_session_usage(None).await?.unwrap().total_tokens, 12);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AdvancedSession {
    store: Store,
    id: String,
    settings: SessionSettings,
    pointer: Arc<BranchPointer>,
    /// Shared by the clones of this handle; set by [`AdvancedSession::close`].
    closed: Arc<AtomicBool>,
}

impl std::fmt::Debug for AdvancedSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdvancedSession")
            .field("session_id", &self.id)
            .field("view", &self.view())
            .finish_non_exhaustive()
    }
}

impl AdvancedSession {
    pub(crate) fn new(store: Store, id: String, settings: SessionSettings) -> Self {
        AdvancedSession {
            store,
            id,
            settings,
            pointer: Arc::new(BranchPointer::new()),
            closed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Close this handle (and its clones): every later call through it fails with
    /// [`Error::Closed`]; the store and its other sessions go on. Idempotent; returns at once.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Whether this handle, or its store, is closed.
    pub fn is_closed(&self) -> bool {
        self.check_open().is_err()
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) || self.store.is_closed() {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Python-style convenience (`AdvancedSQLiteSession(session_id=..., db_path=...,
    /// create_tables=True)`): open `path` with default settings, creating and claiming the
    /// structure tables, and return one Advanced session of it.
    ///
    /// ```
    /// # fn main() -> agent_sessions::Result<()> {
    /// use agent_sessions::AdvancedSession;
    /// use serde_json::json;
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let a = AdvancedSession::open("user-42", dir.path().join("conv.db"))?.blocking();
    /// a.add_items(vec![json!({"role": "user", "content": "hi"})])?;
    /// assert_eq!(a.get_conversation_turns(None)?[0].content, "hi");
    /// # Ok(()) }
    /// ```
    pub fn open(session_id: impl Into<String>, db: impl Into<Database>) -> Result<AdvancedSession> {
        Store::builder(db)
            .create_structure_tables(true)
            .open()?
            .advanced_session(session_id)
    }

    /// The session's id.
    pub fn session_id(&self) -> &str {
        &self.id
    }

    /// The store this session belongs to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Same handle with another default `get_items` limit.
    pub fn with_settings(mut self, settings: SessionSettings) -> Self {
        self.settings = settings;
        self
    }

    /// The branch this handle points at (as last known; no I/O).
    pub fn current_branch_id(&self) -> String {
        self.pointer.view().branch
    }

    /// This handle's state: its branch and the last clear generation it has seen.
    pub fn view(&self) -> HandleView {
        self.pointer.view()
    }

    /// The blocking twin: the same operations (on the same handle) for threads and tests.
    pub fn blocking(&self) -> BlockingAdvancedSession {
        BlockingAdvancedSession(self.clone())
    }

    async fn run(&self, op: AdvancedOp) -> Result<AdvancedAnswer> {
        self.check_open()?;
        let (sent, op) = self.pointer.prepare(&self.id, op);
        let outcome = self.store.execute(op).await?;
        self.pointer.finish(&sent, outcome)
    }

    fn run_blocking(&self, op: AdvancedOp) -> Result<AdvancedAnswer> {
        self.check_open()?;
        let (sent, op) = self.pointer.prepare(&self.id, op);
        let outcome = self.store.execute_blocking(op)?;
        self.pointer.finish(&sent, outcome)
    }

    /// Test hook: run any [`AdvancedOp`] through this handle — its branch pointer, as every
    /// method does — so differential tests drive the real handle state with the generated
    /// operations (fixed `now_unix` included).
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub async fn execute_op(&self, op: AdvancedOp) -> Result<AdvancedAnswer> {
        self.run(op).await
    }

    /// Test hook: the blocking form of [`AdvancedSession::execute_op`].
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn execute_op_blocking(&self, op: AdvancedOp) -> Result<AdvancedAnswer> {
        self.run_blocking(op)
    }

    fn add_op(&self, items: Vec<Item>) -> Result<Option<AdvancedOp>> {
        self.check_open()?;
        Ok((!items.is_empty()).then_some(AdvancedOp::AddItems { items }))
    }

    fn get_op(&self, limit: Option<i64>, branch: Option<&str>) -> AdvancedOp {
        AdvancedOp::GetItems {
            limit: limit.or(self.settings.limit),
            branch: branch.map(str::to_owned),
        }
    }

    /// Append items on the current branch in one transaction (messages and structure rows
    /// together); items before the batch's first user item join the previous turn. On a closed
    /// store this fails with `Closed` even when `items` is empty; otherwise an empty list is a
    /// no-op.
    pub async fn add_items(&self, items: Vec<Item>) -> Result<()> {
        match self.add_op(items)? {
            Some(op) => done(self.run(op).await?),
            None => Ok(()),
        }
    }

    /// Replace the whole history with `items` in one transaction (the compaction primitive):
    /// an Advanced clear — messages, structure and usage of every branch go, the clear
    /// generation is bumped (every handle goes back to `main`), branch ids stay reserved —
    /// then `items` added on `main`, numbered afresh. Readers see the old history or the new.
    pub async fn replace_items(&self, items: Vec<Item>) -> Result<()> {
        done(self.run(AdvancedOp::ReplaceItems { items }).await?)
    }

    /// Items of the current branch, oldest first (`limit` as in the basic session: `None` the
    /// settings' limit, `> 0` the newest n, `0` none, `< 0` all).
    pub async fn get_items(&self, limit: Option<i64>) -> Result<Vec<Item>> {
        items(self.run(self.get_op(limit, None)).await?)
    }

    /// Items of `branch` (the current branch when `None`), oldest first.
    pub async fn get_branch_items(
        &self,
        branch: Option<&str>,
        limit: Option<i64>,
    ) -> Result<Vec<Item>> {
        items(self.run(self.get_op(limit, branch)).await?)
    }

    /// Remove and return the newest item of the current branch. Its message is deleted only if
    /// no other branch still shows it; a turn's usage goes when its last row goes.
    pub async fn pop_item(&self) -> Result<Option<Item>> {
        popped(self.run(AdvancedOp::PopItem).await?)
    }

    /// Delete the session's messages, structure and usage in one transaction and bump its clear
    /// generation: every handle (in any process) goes back to `main`. Branch ids stay
    /// reserved.
    pub async fn clear_session(&self) -> Result<()> {
        done(self.run(AdvancedOp::Clear).await?)
    }

    /// Create a branch holding the current branch's turns before `turn` (turn 1: an empty
    /// branch) and point this handle at it. `name` must never have been used in this session
    /// ([`crate::Error::BranchIdUsed`]); `None` generates `branch_from_turn_{turn}_{unix
    /// seconds}` (then `_2`, `_3`, … within one second). Fails with
    /// [`crate::Error::TurnNotFound`] when the branch has no user item with that turn number.
    pub async fn create_branch_from_turn(&self, turn: i64, name: Option<&str>) -> Result<String> {
        branch_id(self.run(create_from_turn(turn, name)).await?)
    }

    /// [`AdvancedSession::create_branch_from_turn`] from the first user turn whose content
    /// contains `term` (ASCII case-insensitive), in one transaction.
    pub async fn create_branch_from_content(
        &self,
        term: &str,
        name: Option<&str>,
    ) -> Result<String> {
        branch_id(self.run(create_from_content(term, name)).await?)
    }

    /// Point this handle at `branch`, which must have rows ([`crate::Error::BranchNotFound`]).
    pub async fn switch_to_branch(&self, branch: &str) -> Result<()> {
        done(self.run(switch(branch)).await?)
    }

    /// Delete a branch's structure and usage rows and the messages no other branch shows.
    /// `main` cannot be deleted; the current branch only with `force` (the handle then points
    /// at `main`). The id stays reserved.
    pub async fn delete_branch(&self, branch: &str, force: bool) -> Result<()> {
        done(self.run(delete(branch, force)).await?)
    }

    /// Branches with rows, oldest first, with message and user-turn counts.
    pub async fn list_branches(&self) -> Result<Vec<BranchInfo>> {
        branches(self.run(AdvancedOp::ListBranches).await?)
    }

    /// User turns of a branch (current when `None`), previews cut to 100 characters.
    pub async fn get_conversation_turns(
        &self,
        branch: Option<&str>,
    ) -> Result<Vec<ConversationTurn>> {
        turns(self.run(conversation_turns(branch)).await?, Some(100))
    }

    /// User turns whose content contains `term` (ASCII case-insensitive; list contents are
    /// searched through their parts' `text`), previews whole.
    pub async fn find_turns_by_content(
        &self,
        term: &str,
        branch: Option<&str>,
    ) -> Result<Vec<ConversationTurn>> {
        turns(self.run(find_turns(term, branch)).await?, None)
    }

    /// Each turn's rows (type and tool name), in sequence order.
    pub async fn get_conversation_by_turns(&self, branch: Option<&str>) -> Result<Vec<TurnGroup>> {
        by_turns(self.run(conversation_by_turns(branch)).await?)
    }

    /// Tool calls per tool name and turn, by turn.
    pub async fn get_tool_usage(&self, branch: Option<&str>) -> Result<Vec<ToolUse>> {
        tools(self.run(tool_usage(branch)).await?)
    }

    /// The current turn incarnation of the current branch (`None` before its first row). Pass
    /// it to [`AdvancedSession::record_usage_for`] to record a run's usage later without
    /// ever landing on a turn that was popped (or popped and re-created) meanwhile.
    ///
    /// ```
    /// # fn main() -> agent_sessions::Result<()> {
    /// use agent_sessions::{Store, Usage};
    /// use serde_json::json;
    ///
    /// let store = Store::builder(":memory:").create_structure_tables(true).open()?;
    /// let a = store.advanced_session("s")?.blocking();
    /// a.add_items(vec![json!({"role": "user", "content": "one"})])?;
    /// a.add_items(vec![json!({"role": "user", "content": "two"})])?;
    /// let turn = a.current_turn()?.expect("turn 2");
    /// // Turn 2 is popped and re-created before the run's usage arrives: the usage is dropped
    /// // rather than credited to the new turn 2.
    /// a.pop_item()?;
    /// a.add_items(vec![json!({"role": "user", "content": "two, again"})])?;
    /// assert!(!a.record_usage_for(&turn, Usage { requests: 1, ..Usage::default() })?);
    /// assert!(a.record_usage(Usage { requests: 1, ..Usage::default() })?);
    /// # Ok(()) }
    /// ```
    pub async fn current_turn(&self) -> Result<Option<TurnAnchor>> {
        anchor(self.run(AdvancedOp::CurrentTurn).await?)
    }

    /// Record a run's usage on the current branch's newest turn (the SDK's `store_run_usage`),
    /// replacing an earlier record of that turn. Returns `false`, writing nothing, when the
    /// branch has no rows or a clear this handle had not seen happened.
    pub async fn record_usage(&self, usage: Usage) -> Result<bool> {
        recorded(self.run(record(usage, None)).await?)
    }

    /// Record usage on an anchored turn incarnation; `false` (nothing written) when it is gone.
    pub async fn record_usage_for(&self, anchor: &TurnAnchor, usage: Usage) -> Result<bool> {
        recorded(self.run(record(usage, Some(anchor.clone()))).await?)
    }

    /// Usage totals of one branch, or of every branch when `None` (as in the SDK); `None`
    /// without usage rows.
    pub async fn get_session_usage(&self, branch: Option<&str>) -> Result<Option<UsageTotals>> {
        totals(self.run(session_usage(branch)).await?)
    }

    /// Usage rows of a branch (current when `None`) in turn order: one turn's (zero or one row)
    /// or all of them when `turn` is `None`. Details are parsed JSON (`None` when absent).
    pub async fn get_turn_usage(
        &self,
        turn: Option<i64>,
        branch: Option<&str>,
    ) -> Result<Vec<TurnUsage>> {
        turn_usage(self.run(turn_usage_op(turn, branch)).await?, turn)
    }
}

fn opt(s: Option<&str>) -> Option<String> {
    s.map(str::to_owned)
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn create_from_turn(turn: i64, name: Option<&str>) -> AdvancedOp {
    AdvancedOp::CreateBranchFromTurn {
        turn,
        name: opt(name),
        now_unix: now_unix(),
    }
}

fn create_from_content(term: &str, name: Option<&str>) -> AdvancedOp {
    AdvancedOp::CreateBranchFromContent {
        term: term.to_owned(),
        name: opt(name),
        now_unix: now_unix(),
    }
}

fn switch(branch: &str) -> AdvancedOp {
    AdvancedOp::SwitchToBranch {
        branch: branch.to_owned(),
    }
}

fn delete(branch: &str, force: bool) -> AdvancedOp {
    AdvancedOp::DeleteBranch {
        branch: branch.to_owned(),
        force,
    }
}

fn conversation_turns(branch: Option<&str>) -> AdvancedOp {
    AdvancedOp::ConversationTurns {
        branch: opt(branch),
    }
}

fn find_turns(term: &str, branch: Option<&str>) -> AdvancedOp {
    AdvancedOp::FindTurns {
        term: term.to_owned(),
        branch: opt(branch),
    }
}

fn conversation_by_turns(branch: Option<&str>) -> AdvancedOp {
    AdvancedOp::ConversationByTurns {
        branch: opt(branch),
    }
}

fn tool_usage(branch: Option<&str>) -> AdvancedOp {
    AdvancedOp::ToolUsage {
        branch: opt(branch),
    }
}

fn record(usage: Usage, anchor: Option<TurnAnchor>) -> AdvancedOp {
    AdvancedOp::RecordUsage { usage, anchor }
}

fn session_usage(branch: Option<&str>) -> AdvancedOp {
    AdvancedOp::SessionUsage {
        branch: opt(branch),
    }
}

fn turn_usage_op(turn: Option<i64>, branch: Option<&str>) -> AdvancedOp {
    AdvancedOp::TurnUsage {
        turn,
        branch: opt(branch),
    }
}

fn mismatch(a: AdvancedAnswer) -> crate::Error {
    crate::Error::Internal(format!("unexpected answer {a:?}"))
}

/// One extractor per answer variant: its payload, or an "unexpected outcome" error.
macro_rules! extractors {
    ($($name:ident: $variant:path => $payload:ty;)*) => {$(
        fn $name(a: AdvancedAnswer) -> Result<$payload> {
            match a {
                $variant(v) => Ok(v),
                other => Err(mismatch(other)),
            }
        }
    )*};
}

extractors! {
    items: A::Items => Vec<Item>;
    popped: A::Popped => Option<Item>;
    branch_id: A::BranchId => String;
    branches: A::Branches => Vec<BranchInfo>;
    by_turns: A::ByTurns => Vec<TurnGroup>;
    tools: A::Tools => Vec<ToolUse>;
    anchor: A::Anchor => Option<TurnAnchor>;
    recorded: A::Recorded => bool;
    totals: A::SessionUsage => Option<UsageTotals>;
}

fn done(a: AdvancedAnswer) -> Result<()> {
    match a {
        A::Done => Ok(()),
        other => Err(mismatch(other)),
    }
}

fn turns(a: AdvancedAnswer, max_chars: Option<usize>) -> Result<Vec<ConversationTurn>> {
    match a {
        A::Turns(v) => Ok(v
            .into_iter()
            .map(|r| ConversationTurn::from_record(r, max_chars))
            .collect()),
        other => Err(mismatch(other)),
    }
}

fn turn_usage(a: AdvancedAnswer, turn: Option<i64>) -> Result<Vec<TurnUsage>> {
    match (a, turn) {
        (A::TurnUsages(v), None) => Ok(v),
        (A::TurnUsage(u), Some(t)) => Ok(u
            .into_iter()
            .map(|usage| TurnUsage {
                user_turn_number: t,
                usage,
            })
            .collect()),
        (other, _) => Err(mismatch(other)),
    }
}

/// Blocking form of [`AdvancedSession`] (the same handle): each call waits on the calling
/// thread.
///
/// ```
/// # fn main() -> agent_sessions::Result<()> {
/// use agent_sessions::Store;
/// use serde_json::json;
///
/// let store = Store::builder(":memory:").create_structure_tables(true).open()?;
/// let a = store.advanced_session("s")?.blocking();
/// a.add_items(vec![json!({"role": "user", "content": "hi"}),
///                  json!({"type": "function_call", "name": "get_weather", "arguments": "{}"})])?;
/// let tools = a.get_tool_usage(None)?;
/// assert_eq!(tools[0].tool_name.as_deref(), Some("get_weather"));
/// assert_eq!(a.pop_item()?.unwrap()["name"], "get_weather");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct BlockingAdvancedSession(AdvancedSession);

impl BlockingAdvancedSession {
    /// The session's id.
    pub fn session_id(&self) -> &str {
        self.0.session_id()
    }

    /// The async handle this twin drives.
    pub fn handle(&self) -> &AdvancedSession {
        &self.0
    }

    /// The branch this handle points at (as last known; no I/O).
    pub fn current_branch_id(&self) -> String {
        self.0.current_branch_id()
    }

    /// See [`AdvancedSession::add_items`].
    pub fn add_items(&self, items: Vec<Item>) -> Result<()> {
        match self.0.add_op(items)? {
            Some(op) => done(self.0.run_blocking(op)?),
            None => Ok(()),
        }
    }

    /// See [`AdvancedSession::replace_items`].
    pub fn replace_items(&self, items: Vec<Item>) -> Result<()> {
        done(self.0.run_blocking(AdvancedOp::ReplaceItems { items })?)
    }

    /// See [`AdvancedSession::get_items`].
    pub fn get_items(&self, limit: Option<i64>) -> Result<Vec<Item>> {
        items(self.0.run_blocking(self.0.get_op(limit, None))?)
    }

    /// See [`AdvancedSession::get_branch_items`].
    pub fn get_branch_items(&self, branch: Option<&str>, limit: Option<i64>) -> Result<Vec<Item>> {
        items(self.0.run_blocking(self.0.get_op(limit, branch))?)
    }

    /// See [`AdvancedSession::pop_item`].
    pub fn pop_item(&self) -> Result<Option<Item>> {
        popped(self.0.run_blocking(AdvancedOp::PopItem)?)
    }

    /// See [`AdvancedSession::clear_session`].
    pub fn clear_session(&self) -> Result<()> {
        done(self.0.run_blocking(AdvancedOp::Clear)?)
    }

    /// See [`AdvancedSession::create_branch_from_turn`].
    pub fn create_branch_from_turn(&self, turn: i64, name: Option<&str>) -> Result<String> {
        branch_id(self.0.run_blocking(create_from_turn(turn, name))?)
    }

    /// See [`AdvancedSession::create_branch_from_content`].
    pub fn create_branch_from_content(&self, term: &str, name: Option<&str>) -> Result<String> {
        branch_id(self.0.run_blocking(create_from_content(term, name))?)
    }

    /// See [`AdvancedSession::switch_to_branch`].
    pub fn switch_to_branch(&self, branch: &str) -> Result<()> {
        done(self.0.run_blocking(switch(branch))?)
    }

    /// See [`AdvancedSession::delete_branch`].
    pub fn delete_branch(&self, branch: &str, force: bool) -> Result<()> {
        done(self.0.run_blocking(delete(branch, force))?)
    }

    /// See [`AdvancedSession::list_branches`].
    pub fn list_branches(&self) -> Result<Vec<BranchInfo>> {
        branches(self.0.run_blocking(AdvancedOp::ListBranches)?)
    }

    /// See [`AdvancedSession::get_conversation_turns`].
    pub fn get_conversation_turns(&self, branch: Option<&str>) -> Result<Vec<ConversationTurn>> {
        turns(self.0.run_blocking(conversation_turns(branch))?, Some(100))
    }

    /// See [`AdvancedSession::find_turns_by_content`].
    pub fn find_turns_by_content(
        &self,
        term: &str,
        branch: Option<&str>,
    ) -> Result<Vec<ConversationTurn>> {
        turns(self.0.run_blocking(find_turns(term, branch))?, None)
    }

    /// See [`AdvancedSession::get_conversation_by_turns`].
    pub fn get_conversation_by_turns(&self, branch: Option<&str>) -> Result<Vec<TurnGroup>> {
        by_turns(self.0.run_blocking(conversation_by_turns(branch))?)
    }

    /// See [`AdvancedSession::get_tool_usage`].
    pub fn get_tool_usage(&self, branch: Option<&str>) -> Result<Vec<ToolUse>> {
        tools(self.0.run_blocking(tool_usage(branch))?)
    }

    /// See [`AdvancedSession::current_turn`].
    pub fn current_turn(&self) -> Result<Option<TurnAnchor>> {
        anchor(self.0.run_blocking(AdvancedOp::CurrentTurn)?)
    }

    /// See [`AdvancedSession::record_usage`].
    pub fn record_usage(&self, usage: Usage) -> Result<bool> {
        recorded(self.0.run_blocking(record(usage, None))?)
    }

    /// See [`AdvancedSession::record_usage_for`].
    pub fn record_usage_for(&self, anchor: &TurnAnchor, usage: Usage) -> Result<bool> {
        recorded(self.0.run_blocking(record(usage, Some(anchor.clone())))?)
    }

    /// See [`AdvancedSession::get_session_usage`].
    pub fn get_session_usage(&self, branch: Option<&str>) -> Result<Option<UsageTotals>> {
        totals(self.0.run_blocking(session_usage(branch))?)
    }

    /// See [`AdvancedSession::get_turn_usage`].
    pub fn get_turn_usage(
        &self,
        turn: Option<i64>,
        branch: Option<&str>,
    ) -> Result<Vec<TurnUsage>> {
        turn_usage(self.0.run_blocking(turn_usage_op(turn, branch))?, turn)
    }
}

impl Session for AdvancedSession {
    fn session_id(&self) -> &str {
        &self.id
    }
    fn get_items(&self, limit: Option<i64>) -> BoxFuture<'_, Result<Vec<Item>>> {
        Box::pin(AdvancedSession::get_items(self, limit))
    }
    fn add_items(&self, items: Vec<Item>) -> BoxFuture<'_, Result<()>> {
        Box::pin(AdvancedSession::add_items(self, items))
    }
    fn pop_item(&self) -> BoxFuture<'_, Result<Option<Item>>> {
        Box::pin(AdvancedSession::pop_item(self))
    }
    fn clear_session(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(AdvancedSession::clear_session(self))
    }
    fn replace_items(&self, items: Vec<Item>) -> BoxFuture<'_, Result<()>> {
        Box::pin(AdvancedSession::replace_items(self, items))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn previews_match_python() {
        let list = json!([{"type": "input_text", "text": "Ünï ☃ 😀 \" \\ \n \u{7f}"}]);
        assert_eq!(
            content_preview(&list, Some(100)),
            "[{\"type\": \"input_text\", \"text\": \"Ünï ☃ 😀 \\\" \\\\ \\n \u{7f}\"}]"
        );
        assert_eq!(content_preview(&Value::Null, Some(100)), "null");
        assert_eq!(content_preview(&json!(1.0), None), "1.0");
        let long = format!("{}é☃", "x".repeat(99));
        assert_eq!(
            content_preview(&Value::String(long.clone()), Some(100)),
            format!("{}é...", "x".repeat(99))
        );
        assert_eq!(content_preview(&Value::String(long.clone()), None), long);
        // An escaped backslash followed by "u" is not an escape.
        assert_eq!(
            content_preview(&json!(["\\u00e9"]), None),
            "[\"\\\\u00e9\"]"
        );
    }
}
