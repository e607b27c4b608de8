//! The Advanced session protocol (SPEC §5.3), written once for every engine. It owns the rules —
//! the clear-generation check of each operation, the numbering of a batch, the pop loop and its
//! orphan policy, branch creation with named or generated ids, the delete-branch rules, usage
//! anchors, and search beyond the engine's prefilter — and asks an engine only for row-level
//! primitives: the small traits below, composed into [`AdvancedRows`]. A new engine is its
//! statements behind those traits, not another copy of the rules.
//!
//! Invariants upheld here, given that each primitive does exactly what its contract says and
//! that the caller runs a write inside one transaction (the writer's savepoint per request) and
//! a read on one snapshot:
//! - I9: a batch takes `seq0 + i + 1` after the session's highest sequence number, in input
//!   order; a copied branch gets new numbers the same way.
//! - I10: messages and their structure rows are inserted by one operation; pop and delete-branch
//!   delete every message no structure row references any more.
//! - I11: every branch id goes through [`BranchRows::reserve_branch`], which refuses a used one.
//! - I12: writes and default-branch reads adopt the durable generation through
//!   [`HandleView::refreshed`]; only a clear bumps it, by one.
//! - I13: usage is written only while its anchor (the turn's first structure row) exists, and
//!   never for the current turn of a handle that has not seen the latest clear.
//! - I15: the handle's state changes only through the view an operation answers with, and a
//!   failed operation answers with none; what it wrote before failing is undone by the caller's
//!   rollback of the request.
//!
//! Two deliberate differences from the Python SDK's `AdvancedSQLiteSession`, as the SPEC asks:
//! every operation runs atomically inside the caller's transaction (so capture-then-write
//! sequences such as the usage guard cannot interleave with other writers), and the handle
//! state travels with each operation as a [`HandleView`] instead of living in a shared object.
//!
//! Item-level rules (classification, tool names, turn content, search matching) and every error
//! text are the reference model's own ([`agent_sessions_model::advanced`]), so engines and model
//! cannot drift apart, in behaviour or in wording.

use agent_sessions_model::advanced::{
    classify, errors, is_blank, is_user_item, tool_name, turn_matches, user_content, MAIN,
};
use agent_sessions_model::{
    parse_item, AdvancedAnswer, AdvancedOp, BranchInfo, HandleView, Item, Outcome, ToolUse,
    TurnAnchor, TurnGroup, TurnItem, TurnRecord, TurnUsage, Usage, UsageTotals,
};
use serde_json::Value;

use crate::engine::limit::limited_items;
use crate::error::{Error, Result};

/// The content search's prefilter: a `LIKE … ESCAPE '\'` pattern (PostgreSQL: `ILIKE`)
/// matching any text that contains `needle`, case-insensitively at least for ASCII.
pub(crate) fn like_pattern(needle: &str) -> String {
    let mut pattern = String::with_capacity(needle.len() + 2);
    pattern.push('%');
    for c in needle.chars() {
        if matches!(c, '\\' | '%' | '_') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

// ------------------------------------------------------------------------------------------
// What an engine provides
// ------------------------------------------------------------------------------------------

/// The clear generation of each session (`session_clear_generations`).
pub(crate) trait GenerationRows {
    /// Create the generations table if missing (older files lack it) and the session's row at 0.
    fn ensure_generation(&mut self, session: &str) -> Result<()>;
    /// The durable generation; the row exists ([`GenerationRows::ensure_generation`] ran).
    fn generation(&mut self, session: &str) -> Result<i64>;
    /// The durable generation without creating anything: a missing table or row reads as 0,
    /// because reads must work on read-only connections and files older than the table.
    fn read_generation(&mut self, session: &str) -> Result<i64>;
    /// Add one to the durable generation (the row exists).
    fn bump_generation(&mut self, session: &str) -> Result<()>;
}

/// Branch ids (`branch_reservations`) and the rows of whole branches.
pub(crate) trait BranchRows {
    /// Create the reservations table if missing, and reserve the ids of the session's branches
    /// that have structure rows but no reservation (files from before reservations).
    fn ensure_reservations(&mut self, session: &str) -> Result<()>;
    /// Reserve `branch`; `false` when it was reserved before (it is then left as it was).
    fn reserve_branch(&mut self, session: &str, branch: &str) -> Result<bool>;
    /// Whether `branch` has structure rows (a branch exists while it has rows).
    fn branch_has_rows(&mut self, session: &str, branch: &str) -> Result<bool>;
    /// The branches with structure rows, ordered by their oldest row's `created_at`, then id.
    fn branches(&mut self, session: &str) -> Result<Vec<BranchRow>>;
    /// Delete the usage rows, then the structure rows, of `branch` (not its messages, which
    /// other branches may share, nor its reservation).
    fn delete_branch_rows(&mut self, session: &str, branch: &str) -> Result<()>;
}

/// The numbering inputs and the writes of `message_structure`.
pub(crate) trait StructureRows {
    /// The session's highest `sequence_number` over all branches; `None` without rows.
    fn max_sequence(&mut self, session: &str) -> Result<Option<i64>>;
    /// The highest `user_turn_number` on `branch`; `None` without rows.
    fn max_user_turn(&mut self, session: &str, branch: &str) -> Result<Option<i64>>;
    /// The highest `branch_turn_number` among the rows of `branch` whose user turn is
    /// `user_turn`; `None` without such rows.
    fn max_branch_turn(
        &mut self,
        session: &str,
        branch: &str,
        user_turn: i64,
    ) -> Result<Option<i64>>;
    /// Insert structure rows on `branch`, in order (their ids grow in that order).
    fn insert_structure(
        &mut self,
        session: &str,
        branch: &str,
        rows: &[NewStructureRow],
    ) -> Result<()>;
    /// Delete the structure row of `branch` with the highest sequence number and return it.
    fn claim_newest(&mut self, session: &str, branch: &str) -> Result<Option<ClaimedRow>>;
    /// The structure rows of `branch` whose branch turn is below `branch_turn`, in sequence
    /// order, as a new branch copies them.
    fn copy_source(
        &mut self,
        session: &str,
        branch: &str,
        branch_turn: i64,
    ) -> Result<Vec<StructureFields>>;
}

/// Reads of turns: their user items, their rows and their anchors.
pub(crate) trait TurnRows {
    /// Whether `branch` has a `user` row with this branch turn whose message exists.
    fn has_user_turn(&mut self, session: &str, branch: &str, branch_turn: i64) -> Result<bool>;
    /// Whether `branch` still has rows with this user turn.
    fn turn_has_rows(&mut self, session: &str, branch: &str, user_turn: i64) -> Result<bool>;
    /// The smallest structure id among the rows of `branch` with this user turn (the turn's
    /// anchor); `None` without such rows.
    fn first_structure_id(
        &mut self,
        session: &str,
        branch: &str,
        user_turn: i64,
    ) -> Result<Option<i64>>;
    /// Whether the anchor's row still exists with the anchor's branch and turn.
    fn anchor_exists(&mut self, session: &str, anchor: &TurnAnchor) -> Result<bool>;
    /// The `user` rows of `branch` joined with their messages, by branch turn then sequence
    /// number. With `containing`, a prefilter: at least every row whose stored text contains
    /// it, ASCII case-insensitively (more rows are allowed; the exact match is applied here).
    fn user_turns(
        &mut self,
        session: &str,
        branch: &str,
        containing: Option<&str>,
    ) -> Result<Vec<UserTurnRow>>;
    /// `(user turn, row)` for every structure row of `branch`, in sequence order.
    fn turn_items(&mut self, session: &str, branch: &str) -> Result<Vec<(i64, TurnItem)>>;
    /// Tool calls of `branch` counted per name and user turn, by turn then name, with the
    /// rules of SPEC §5.3 `get_tool_usage`.
    fn tool_usage(&mut self, session: &str, branch: &str) -> Result<Vec<ToolUse>>;
}

/// The messages table, as Advanced sessions use it.
pub(crate) trait MessageRows {
    /// An item's stored text, in the engine's encoding (the content search's prefilter encodes
    /// its term the same way). Default: Python's `json.dumps`, as `SQLiteSession` stores it.
    fn encode(&self, item: &Value) -> String {
        crate::json::to_python_json(item)
    }
    /// Insert the session row if missing, one message per text in order, then touch the session
    /// row's `updated_at`; the new message ids, in order.
    fn insert_messages(
        &mut self,
        session: &str,
        data: impl IntoIterator<Item = String>,
    ) -> Result<Vec<i64>>;
    /// A message's stored text; `None` when the row is gone or its text unreadable.
    fn message_data(&mut self, message_id: i64) -> Result<Option<String>>;
    /// The texts of `branch`'s messages (`None`: unreadable): all oldest first with `None`,
    /// else the newest `n` newest first (a negative `n`: all) — the input of
    /// [`limited_items`].
    fn branch_items(
        &mut self,
        session: &str,
        branch: &str,
        newest: Option<i64>,
    ) -> Result<Vec<Option<String>>>;
    /// Delete the session's messages that no structure row references (SPEC §5.3 "Mixing":
    /// this removes basic sessions' rows too).
    fn delete_orphans(&mut self, session: &str) -> Result<()>;
}

/// Per-turn usage (`turn_usage`).
pub(crate) trait UsageRows {
    /// Write one turn's usage, replacing an earlier row of that branch and turn.
    fn upsert_usage(&mut self, session: &str, branch: &str, turn: i64, usage: &Usage)
        -> Result<()>;
    /// Delete one turn's usage row.
    fn delete_turn_usage(&mut self, session: &str, branch: &str, turn: i64) -> Result<()>;
    /// Sums over the usage rows of `branch`, or of the whole session with `None`; `None`
    /// without rows.
    fn usage_totals(&mut self, session: &str, branch: Option<&str>) -> Result<Option<UsageTotals>>;
    /// The usage rows of `branch`: one turn's, or all in turn order with `None`.
    fn turn_usage(
        &mut self,
        session: &str,
        branch: &str,
        turn: Option<i64>,
    ) -> Result<Vec<TurnUsage>>;
}

/// Everything [`execute`] needs of an engine, inside the transaction it runs in.
pub(crate) trait AdvancedRows:
    GenerationRows + BranchRows + StructureRows + TurnRows + MessageRows + UsageRows
{
    /// Clear's deletes: the session's messages, its session row, its structure and usage rows
    /// (not its generation, which the clear then bumps, nor its reservations).
    fn delete_session(&mut self, session: &str) -> Result<()>;
    /// Whether `e` is the engine's way of saying a structure table does not exist.
    fn is_missing_structure(&self, e: &Error) -> bool;
}

/// A branch as [`BranchRows::branches`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BranchRow {
    pub(crate) branch_id: String,
    pub(crate) message_count: i64,
    /// Rows of type `user`.
    pub(crate) user_turns: i64,
    /// The oldest row's `created_at`.
    pub(crate) created_at: String,
}

/// The fields of a structure row that a new branch copies unchanged. `Option`s carry what
/// another program's rows may hold (NULL, or text that is not a number), copied as found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StructureFields {
    pub(crate) message_id: i64,
    pub(crate) message_type: Option<String>,
    pub(crate) user_turn_number: Option<i64>,
    pub(crate) branch_turn_number: Option<i64>,
    pub(crate) tool_name: Option<String>,
}

/// A structure row to insert: its fields and the sequence number this module gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NewStructureRow {
    pub(crate) sequence_number: i64,
    pub(crate) fields: StructureFields,
}

/// What [`StructureRows::claim_newest`] deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ClaimedRow {
    pub(crate) message_id: i64,
    pub(crate) user_turn_number: Option<i64>,
}

/// A `user` row with its message, as [`TurnRows::user_turns`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct UserTurnRow {
    pub(crate) branch_turn: i64,
    /// `None` when unreadable.
    pub(crate) message_data: Option<String>,
    pub(crate) created_at: String,
}

// ------------------------------------------------------------------------------------------
// The rules
// ------------------------------------------------------------------------------------------

/// Execute one Advanced operation for `session`, sent with the handle's `view`. Writes must run
/// inside the caller's write transaction, reads on one snapshot.
pub(crate) fn execute<R: AdvancedRows>(
    rows: &mut R,
    session: &str,
    view: &HandleView,
    op: &AdvancedOp,
) -> Result<Outcome> {
    let result = Run { rows, s: session }.op(view, op);
    match result {
        Ok((view, answer)) => Ok(Outcome::Advanced { view, answer }),
        Err(e) if rows.is_missing_structure(&e) => Err(errors::structure_missing().into()),
        Err(e) => Err(e),
    }
}

struct Run<'a, R> {
    rows: &'a mut R,
    s: &'a str,
}

type Answered = (HandleView, AdvancedAnswer);

/// One item of a batch, as its structure row will describe it.
struct Classified {
    message_type: String,
    tool_name: Option<String>,
    is_user: bool,
}

impl<R: AdvancedRows> Run<'_, R> {
    fn op(&mut self, view: &HandleView, op: &AdvancedOp) -> Result<Answered> {
        let s = self.s;
        match op {
            AdvancedOp::AddItems { items } => {
                if items.is_empty() {
                    return Ok((view.clone(), AdvancedAnswer::Done));
                }
                let view = self.refresh_for_write(view)?;
                let classified = items
                    .iter()
                    .map(|item| Classified {
                        message_type: classify(item),
                        tool_name: tool_name(item),
                        is_user: is_user_item(item),
                    })
                    .collect();
                let texts: Vec<String> = items.iter().map(|i| self.rows.encode(i)).collect();
                self.append(&view.branch, texts, classified)?;
                Ok((view, AdvancedAnswer::Done))
            }
            AdvancedOp::PlantRaw { data } => {
                let view = self.refresh_for_write(view)?;
                let other = Classified {
                    message_type: "other".to_owned(),
                    tool_name: None,
                    is_user: false,
                };
                self.append(&view.branch, [data.clone()], vec![other])?;
                Ok((view, AdvancedAnswer::Done))
            }
            AdvancedOp::GetItems { limit, branch } => {
                let (view, branch) = self.read_branch(view, branch)?;
                let rows = &mut *self.rows;
                let items = limited_items(*limit, |newest| rows.branch_items(s, &branch, newest))?;
                Ok((view, AdvancedAnswer::Items(items)))
            }
            AdvancedOp::PopItem => {
                let view = self.refresh_for_write(view)?;
                let popped = self.pop(&view.branch)?;
                Ok((view, AdvancedAnswer::Popped(popped)))
            }
            AdvancedOp::Clear => {
                self.rows.ensure_reservations(s)?;
                self.rows.ensure_generation(s)?;
                self.rows.delete_session(s)?;
                self.rows.bump_generation(s)?;
                let view = HandleView::at(MAIN, self.rows.generation(s)?);
                Ok((view, AdvancedAnswer::Done))
            }
            AdvancedOp::ReplaceItems { items } => {
                // A clear and an add in the request's one savepoint: readers see the old
                // history or the new one.
                let (view, _) = self.op(view, &AdvancedOp::Clear)?;
                self.op(
                    &view,
                    &AdvancedOp::AddItems {
                        items: items.clone(),
                    },
                )
            }
            AdvancedOp::CreateBranchFromTurn {
                turn,
                name,
                now_unix,
            } => {
                if name.as_deref().is_some_and(is_blank) {
                    return Err(errors::blank_branch_name(s).into());
                }
                let (view, id) = self.create_branch(view, *turn, name.as_deref(), *now_unix)?;
                Ok((view, AdvancedAnswer::BranchId(id)))
            }
            AdvancedOp::CreateBranchFromContent {
                term,
                name,
                now_unix,
            } => {
                let current = view.refreshed(self.rows.read_generation(s)?);
                let turn = self
                    .find(&current.branch, term)?
                    .first()
                    .map(|t| t.turn)
                    .ok_or_else(|| errors::no_turn_matches(s, &current.branch, term))?;
                if name.as_deref().is_some_and(is_blank) {
                    return Err(errors::blank_branch_name(s).into());
                }
                let (view, id) = self.create_branch(view, turn, name.as_deref(), *now_unix)?;
                Ok((view, AdvancedAnswer::BranchId(id)))
            }
            AdvancedOp::SwitchToBranch { branch } => {
                self.rows.ensure_generation(s)?;
                if !self.rows.branch_has_rows(s, branch)? {
                    return Err(errors::branch_not_found(s, branch).into());
                }
                let view = HandleView::at(branch, self.rows.generation(s)?);
                Ok((view, AdvancedAnswer::Done))
            }
            AdvancedOp::DeleteBranch { branch, force } => {
                if is_blank(branch) {
                    return Err(errors::blank_branch_id(s).into());
                }
                if branch == MAIN {
                    return Err(errors::delete_main(s).into());
                }
                let mut view = view.refreshed(self.rows.read_generation(s)?);
                let current = view.branch == *branch;
                if current && !force {
                    return Err(errors::delete_current(s, branch).into());
                }
                self.rows.ensure_reservations(s)?;
                if !self.rows.branch_has_rows(s, branch)? {
                    return Err(errors::branch_not_found(s, branch).into());
                }
                self.rows.delete_branch_rows(s, branch)?;
                self.rows.delete_orphans(s)?;
                if current {
                    view.branch = MAIN.into();
                }
                Ok((view, AdvancedAnswer::Done))
            }
            AdvancedOp::ListBranches => {
                let view = view.refreshed(self.rows.read_generation(s)?);
                let list = self
                    .rows
                    .branches(s)?
                    .into_iter()
                    .map(|b| BranchInfo {
                        is_current: b.branch_id == view.branch,
                        branch_id: b.branch_id,
                        message_count: b.message_count,
                        user_turns: b.user_turns,
                        created_at: b.created_at,
                    })
                    .collect();
                Ok((view, AdvancedAnswer::Branches(list)))
            }
            AdvancedOp::ConversationTurns { branch } => {
                let (view, branch) = self.read_branch(view, branch)?;
                let turns = self.turns(&branch, None)?;
                Ok((view, AdvancedAnswer::Turns(turns)))
            }
            AdvancedOp::FindTurns { term, branch } => {
                let (view, branch) = self.read_branch(view, branch)?;
                Ok((view, AdvancedAnswer::Turns(self.find(&branch, term)?)))
            }
            AdvancedOp::ConversationByTurns { branch } => {
                let (view, branch) = self.read_branch(view, branch)?;
                let mut groups: Vec<TurnGroup> = Vec::new();
                for (turn, item) in self.rows.turn_items(s, &branch)? {
                    match groups.iter_mut().find(|g| g.turn == turn) {
                        Some(g) => g.items.push(item),
                        None => groups.push(TurnGroup {
                            turn,
                            items: vec![item],
                        }),
                    }
                }
                Ok((view, AdvancedAnswer::ByTurns(groups)))
            }
            AdvancedOp::ToolUsage { branch } => {
                let (view, branch) = self.read_branch(view, branch)?;
                let tools = self.rows.tool_usage(s, &branch)?;
                Ok((view, AdvancedAnswer::Tools(tools)))
            }
            AdvancedOp::CurrentTurn => {
                let view = view.refreshed(self.rows.read_generation(s)?);
                let anchor = self.current_anchor(&view.branch)?;
                Ok((view, AdvancedAnswer::Anchor(anchor)))
            }
            AdvancedOp::RecordUsage { usage, anchor } => {
                usage.validate()?;
                let durable = self.rows.read_generation(s)?;
                let refreshed = view.refreshed(durable);
                let target = match anchor {
                    // A clear the handle had not seen invalidates usage of the old history.
                    None if view.is_stale(durable) => None,
                    None => self.current_anchor(&view.branch)?,
                    Some(a) => self.rows.anchor_exists(s, a)?.then(|| a.clone()),
                };
                let recorded = target.is_some();
                if let Some(a) = target {
                    self.rows.upsert_usage(s, &a.branch, a.turn, usage)?;
                }
                Ok((refreshed, AdvancedAnswer::Recorded(recorded)))
            }
            AdvancedOp::SessionUsage { branch } => {
                let branch = branch.as_deref().filter(|b| !b.is_empty());
                let totals = self.rows.usage_totals(s, branch)?;
                Ok((view.clone(), AdvancedAnswer::SessionUsage(totals)))
            }
            AdvancedOp::TurnUsage { turn, branch } => {
                let (view, branch) = self.read_branch(view, branch)?;
                let mut usage = self.rows.turn_usage(s, &branch, *turn)?;
                let answer = match turn {
                    Some(_) => AdvancedAnswer::TurnUsage(usage.pop().map(|r| r.usage)),
                    None => AdvancedAnswer::TurnUsages(usage),
                };
                Ok((view, answer))
            }
            other => Err(crate::engine::unsupported(other)),
        }
    }

    // -- generations ---------------------------------------------------------------------------

    /// The view a write proceeds with (SPEC §5.3 "Clear generation").
    fn refresh_for_write(&mut self, view: &HandleView) -> Result<HandleView> {
        self.rows.ensure_generation(self.s)?;
        Ok(view.refreshed(self.rows.generation(self.s)?))
    }

    /// An explicit branch as given; else the current branch after the generation check.
    fn read_branch(
        &mut self,
        view: &HandleView,
        branch: &Option<String>,
    ) -> Result<(HandleView, String)> {
        Ok(match branch {
            Some(b) => (view.clone(), b.clone()),
            None => {
                let v = view.refreshed(self.rows.read_generation(self.s)?);
                let b = v.branch.clone();
                (v, b)
            }
        })
    }

    // -- writes --------------------------------------------------------------------------------

    /// Insert a batch on `branch`: the messages (and the session row), then one structure row
    /// each, numbered per SPEC §5.3 "Numbering".
    fn append(
        &mut self,
        branch: &str,
        texts: impl IntoIterator<Item = String>,
        batch: Vec<Classified>,
    ) -> Result<()> {
        let s = self.s;
        let ids = self.rows.insert_messages(s, texts)?;
        let seq0 = self.rows.max_sequence(s)?.unwrap_or(0);
        let (t0, b0) = match self.rows.max_user_turn(s, branch)? {
            None => (0, 0),
            // Every writer (Python's and this one) gives a row equal user and branch turn
            // numbers, so the branch's highest branch turn is among the rows of its highest
            // user turn: engines can answer from an index on the user turn.
            Some(t) => (t, self.rows.max_branch_turn(s, branch, t)?.unwrap_or(0)),
        };
        let mut users = 0;
        let rows: Vec<NewStructureRow> = ids
            .into_iter()
            .zip(batch)
            .enumerate()
            .map(|(i, (message_id, item))| {
                users += i64::from(item.is_user);
                NewStructureRow {
                    sequence_number: seq0 + i as i64 + 1,
                    fields: StructureFields {
                        message_id,
                        message_type: Some(item.message_type),
                        user_turn_number: Some(t0 + users),
                        branch_turn_number: Some(b0 + users),
                        tool_name: item.tool_name,
                    },
                }
            })
            .collect();
        self.rows.insert_structure(s, branch, &rows)
    }

    /// Claim the newest row of `branch` until one holds a valid item: a message goes only when
    /// no other branch references it, a turn's usage when the turn has no rows left, and a
    /// corrupt or missing payload is skipped.
    fn pop(&mut self, branch: &str) -> Result<Option<Item>> {
        let s = self.s;
        self.rows.ensure_reservations(s)?;
        loop {
            let Some(claimed) = self.rows.claim_newest(s, branch)? else {
                return Ok(None);
            };
            let data = self.rows.message_data(claimed.message_id)?;
            self.rows.delete_orphans(s)?;
            if let Some(turn) = claimed.user_turn_number {
                if !self.rows.turn_has_rows(s, branch, turn)? {
                    self.rows.delete_turn_usage(s, branch, turn)?;
                }
            }
            if let Some(item) = data.as_deref().and_then(parse_item) {
                return Ok(Some(item));
            }
        }
    }

    fn create_branch(
        &mut self,
        view: &HandleView,
        turn: i64,
        name: Option<&str>,
        now_unix: i64,
    ) -> Result<(HandleView, String)> {
        let s = self.s;
        self.rows.ensure_reservations(s)?;
        let view = self.refresh_for_write(view)?;
        let source = view.branch.clone();
        if !self.rows.has_user_turn(s, &source, turn)? {
            return Err(errors::turn_not_found(s, &source, turn).into());
        }
        let id = match name {
            Some(n) => {
                if !self.rows.reserve_branch(s, n)? {
                    return Err(errors::branch_id_used(s, n).into());
                }
                n.to_owned()
            }
            None => {
                let base = format!("branch_from_turn_{turn}_{now_unix}");
                let mut candidate = base.clone();
                let mut suffix = 1;
                while !self.rows.reserve_branch(s, &candidate)? {
                    suffix += 1;
                    candidate = format!("{base}_{suffix}");
                }
                candidate
            }
        };
        let copies = self.rows.copy_source(s, &source, turn)?;
        if !copies.is_empty() {
            let seq0 = self.rows.max_sequence(s)?.unwrap_or(0);
            let rows: Vec<NewStructureRow> = copies
                .into_iter()
                .enumerate()
                .map(|(i, fields)| NewStructureRow {
                    sequence_number: seq0 + i as i64 + 1,
                    fields,
                })
                .collect();
            self.rows.insert_structure(s, &id, &rows)?;
        }
        Ok((
            HandleView {
                branch: id.clone(),
                ..view
            },
            id,
        ))
    }

    // -- reads ---------------------------------------------------------------------------------

    /// The user turns of `branch` (those whose text is a JSON object), optionally prefiltered.
    fn turns(&mut self, branch: &str, containing: Option<&str>) -> Result<Vec<TurnRecord>> {
        let rows = self.rows.user_turns(self.s, branch, containing)?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                let full_content = r.message_data.as_deref().and_then(user_content)?;
                Some(TurnRecord {
                    turn: r.branch_turn,
                    full_content,
                    timestamp: r.created_at,
                })
            })
            .collect())
    }

    /// User turns containing `term`: the engine's prefilter on the stored JSON text (the term
    /// encoded the way the text is), then the model's exact match on the decoded content.
    fn find(&mut self, branch: &str, term: &str) -> Result<Vec<TurnRecord>> {
        let encoded = self.rows.encode(&Value::String(term.to_owned()));
        let inner = &encoded[1..encoded.len() - 1];
        let mut turns = self.turns(branch, Some(inner))?;
        turns.retain(|t| turn_matches(&t.full_content, term));
        Ok(turns)
    }

    /// The current turn incarnation of `branch`: its highest turn (0 if none) and that turn's
    /// first structure row (I13).
    fn current_anchor(&mut self, branch: &str) -> Result<Option<TurnAnchor>> {
        let turn = self.rows.max_user_turn(self.s, branch)?.unwrap_or(0);
        let first = self.rows.first_structure_id(self.s, branch, turn)?;
        Ok(first.map(|structure_id| TurnAnchor {
            branch: branch.to_owned(),
            turn,
            structure_id,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::like_pattern;

    #[test]
    fn like_patterns_escape_the_wildcards_and_the_escape() {
        assert_eq!(like_pattern(r"50%_a\b"), r"%50\%\_a\\b%");
    }
}
