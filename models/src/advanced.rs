//! Advanced sessions (the Python SDK's `AdvancedSQLiteSession`) in the reference model: message
//! structure rows with sequence and turn numbers, branches, branch-id reservations, clear
//! generations and per-turn usage (SPEC §5.3).
//!
//! Every operation is an [`AdvancedOp`] run for one session by one *handle*, whose state (current
//! branch + last seen clear generation) travels with the operation as a [`HandleView`]; the
//! answer reports the handle state after the operation, and the handle folds it in with
//! [`HandleView::merge`] — the one merge rule shared by the real sessions, the loom scenarios and
//! the tests.
//!
//! The item-level rules the SQLite engine must apply identically — [`classify`], [`tool_name`],
//! [`is_user_item`], [`user_content`] and [`turn_matches`] — live here too, so there is exactly
//! one definition of each.
//!
//! Invariants stated here and checked against the SQLite store by the tests: I9 (sequence
//! numbers unique per session, contiguous per batch), I10 (structure rows and messages agree
//! after every Advanced operation), I11 (a branch id is reserved at most once), I12 (generation
//! grows by one per clear; a newer generation resets the pointer to `main`), I13 (usage lands
//! only on the turn incarnation it was taken for), I15 (a failed operation changes nothing —
//! [`crate::Model::apply`] restores the state it started from).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::{parse_item, Item, Model, ModelError, Outcome};

/// The branch every session starts on, and the one a clear returns to.
pub const MAIN: &str = "main";

/// What a handle believes: its current branch and the last clear generation it has seen
/// (`None` before its first operation: a new handle adopts whatever generation it finds).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct HandleView {
    pub branch: String,
    pub generation: Option<i64>,
}

impl Default for HandleView {
    fn default() -> Self {
        HandleView::main()
    }
}

impl HandleView {
    /// A fresh handle: on `main`, no generation seen yet.
    pub fn main() -> HandleView {
        HandleView {
            branch: MAIN.to_owned(),
            generation: None,
        }
    }

    /// A handle on `branch` that has seen `generation`.
    pub fn at(branch: &str, generation: i64) -> HandleView {
        HandleView {
            branch: branch.to_owned(),
            generation: Some(generation),
        }
    }

    /// Whether the session was cleared since this handle last looked (a fresh handle never is).
    pub fn is_stale(&self, durable_generation: i64) -> bool {
        self.generation.is_some_and(|g| g != durable_generation)
    }

    /// The view an operation proceeds with once it has read the durable generation: the same
    /// branch when the handle was up to date (or fresh), else `main` (someone cleared the
    /// session since this handle last looked) — at the durable generation either way.
    pub fn refreshed(&self, durable_generation: i64) -> HandleView {
        let branch = if self.is_stale(durable_generation) {
            MAIN
        } else {
            &self.branch
        };
        HandleView::at(branch, durable_generation)
    }

    /// Fold into the handle's state the view an operation reported (`reported`), given the view
    /// it was sent with (`sent`, a snapshot of this handle's state at submission).
    ///
    /// - A report from an older generation than the handle now knows is stale: ignored (so a
    ///   switch or create that validated before a clear never re-points after it, I12).
    /// - A report from a newer generation is adopted whole (the pointer reset to `main` by the
    ///   clear, or moved by this very operation after it saw the clear).
    /// - At the generation the handle knows, the branch changes only if this operation moved
    ///   it; an operation that did not move the pointer never undoes a concurrent switch of
    ///   the same handle. (Two concurrent switches of *one* handle race: the last merged wins.
    ///   Give each task its own handle for a deterministic branch flow.)
    ///
    /// The generation never decreases.
    pub fn merge(&mut self, sent: &HandleView, reported: &HandleView) {
        use std::cmp::Ordering::*;
        match reported.generation.cmp(&self.generation) {
            Less => {}
            Greater => *self = reported.clone(),
            Equal => {
                // Did this operation move the pointer? At the generation it was sent with: if
                // the branch changed. After a clear it saw: if it ended anywhere but `main`
                // (the refresh alone only ever resets to `main`).
                let moved = if sent.generation == reported.generation {
                    reported.branch != sent.branch
                } else {
                    reported.branch != MAIN
                };
                if moved {
                    self.branch = reported.branch.clone();
                }
            }
        }
    }
}

/// Token usage of one run, as recorded for a turn (the SDK's `Usage`). The details are JSON
/// objects (for example `{"cached_tokens": 10}`) or `None`; they are stored as JSON text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Usage {
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub total_tokens: i64,
    pub input_tokens_details: Option<Value>,
    pub output_tokens_details: Option<Value>,
}

impl Usage {
    /// Reject details that are not JSON objects (the column holds an object or NULL).
    pub fn validate(&self) -> Result<(), ModelError> {
        for (name, d) in [
            ("input_tokens_details", &self.input_tokens_details),
            ("output_tokens_details", &self.output_tokens_details),
        ] {
            if let Some(v) = d {
                if !v.is_object() {
                    return Err(ModelError::InvalidArgument(format!(
                        "usage {name} must be a JSON object (or absent), got {v}"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// One turn's usage row, as listed by [`AdvancedOp::TurnUsage`] without a turn.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TurnUsage {
    pub user_turn_number: i64,
    /// Serialized flat, next to `user_turn_number`, as the SDK's `get_turn_usage` lists it.
    #[cfg_attr(feature = "serde", serde(flatten))]
    pub usage: Usage,
}

/// Sums over usage rows (one branch or the whole session).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct UsageTotals {
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub total_tokens: i64,
    pub total_turns: i64,
}

/// One turn *incarnation*: the branch, the turn number and the id of the turn's first structure
/// row. Structure ids are never reused, so a turn that was popped and re-created with the same
/// number has a different anchor (I13).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TurnAnchor {
    pub branch: String,
    pub turn: i64,
    pub structure_id: i64,
}

/// A branch as listed by [`AdvancedOp::ListBranches`] (the Python SDK's field names).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct BranchInfo {
    pub branch_id: String,
    pub message_count: i64,
    pub user_turns: i64,
    pub is_current: bool,
    /// `MIN(created_at)` of the branch's rows (SQLite `CURRENT_TIMESTAMP` text).
    pub created_at: String,
}

/// One user turn: its branch turn number, the item's `content` and the row's timestamp.
/// The SDK's truncated `content` preview is derived from `full_content` by the library.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TurnRecord {
    pub turn: i64,
    pub full_content: Value,
    pub timestamp: String,
}

/// One structure row as [`AdvancedOp::ConversationByTurns`] shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TurnItem {
    /// `"type"` in the SDK's `get_conversation_by_turns` dicts.
    #[cfg_attr(feature = "serde", serde(rename = "type"))]
    pub message_type: String,
    pub tool_name: Option<String>,
}

/// The rows of one turn, in sequence order.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TurnGroup {
    pub turn: i64,
    pub items: Vec<TurnItem>,
}

/// Tool calls of one name in one turn.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ToolUse {
    pub tool_name: Option<String>,
    pub usage_count: i64,
    pub user_turn_number: i64,
}

/// A `message_structure` row (the model's copy; also what the tests read back from SQLite).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct StructureRow {
    pub id: i64,
    pub session_id: String,
    pub message_id: i64,
    pub branch_id: String,
    pub message_type: String,
    pub sequence_number: i64,
    pub user_turn_number: i64,
    pub branch_turn_number: i64,
    pub tool_name: Option<String>,
    pub created_at: String,
}

/// An operation of an Advanced session handle. Branch arguments that are `None` mean the
/// handle's current branch.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum AdvancedOp {
    /// Append items on the current branch, numbering them (SPEC §5.3 "Numbering").
    AddItems {
        items: Vec<Item>,
    },
    /// Append one raw `message_data` text (possibly corrupt) as a non-user item of type
    /// `other`, as another program might.
    PlantRaw {
        data: String,
    },
    GetItems {
        limit: Option<i64>,
        branch: Option<String>,
    },
    /// Remove the newest valid item of the current branch.
    PopItem,
    /// Delete the session's messages, structure and usage; bump the clear generation.
    Clear,
    /// Replace the whole history atomically: [`AdvancedOp::Clear`] then
    /// [`AdvancedOp::AddItems`] (on `main`, at the new generation) in one transaction. The
    /// structure of the new items is numbered afresh, as after a clear; usage and branches of
    /// the old history go with it (branch ids stay reserved).
    ReplaceItems {
        items: Vec<Item>,
    },
    /// Copy the turns before `turn` into a new branch and point the handle at it.
    /// `now_unix` names generated ids (`branch_from_turn_{turn}_{now_unix}`).
    CreateBranchFromTurn {
        turn: i64,
        name: Option<String>,
        now_unix: i64,
    },
    /// [`AdvancedOp::CreateBranchFromTurn`] from the first user turn matching `term`.
    CreateBranchFromContent {
        term: String,
        name: Option<String>,
        now_unix: i64,
    },
    SwitchToBranch {
        branch: String,
    },
    DeleteBranch {
        branch: String,
        force: bool,
    },
    ListBranches,
    ConversationTurns {
        branch: Option<String>,
    },
    FindTurns {
        term: String,
        branch: Option<String>,
    },
    ConversationByTurns {
        branch: Option<String>,
    },
    ToolUsage {
        branch: Option<String>,
    },
    /// The current turn incarnation of the current branch (`None` when it has no rows).
    CurrentTurn,
    /// Record usage for a turn: the current turn when `anchor` is `None`, else the anchored
    /// turn incarnation, skipped when it no longer exists.
    RecordUsage {
        usage: Usage,
        anchor: Option<TurnAnchor>,
    },
    /// Totals of one branch, or of the whole session when `branch` is `None` or empty.
    SessionUsage {
        branch: Option<String>,
    },
    /// One turn's usage, or every turn's (in turn order) when `turn` is `None`.
    TurnUsage {
        turn: Option<i64>,
        branch: Option<String>,
    },
}

impl AdvancedOp {
    /// Whether the operation may change the database (writes go to the writer thread).
    pub fn is_write(&self) -> bool {
        match self {
            AdvancedOp::AddItems { .. }
            | AdvancedOp::PlantRaw { .. }
            | AdvancedOp::PopItem
            | AdvancedOp::Clear
            | AdvancedOp::ReplaceItems { .. }
            | AdvancedOp::CreateBranchFromTurn { .. }
            | AdvancedOp::CreateBranchFromContent { .. }
            | AdvancedOp::SwitchToBranch { .. }
            | AdvancedOp::DeleteBranch { .. }
            | AdvancedOp::RecordUsage { .. } => true,
            AdvancedOp::GetItems { .. }
            | AdvancedOp::ListBranches
            | AdvancedOp::ConversationTurns { .. }
            | AdvancedOp::FindTurns { .. }
            | AdvancedOp::ConversationByTurns { .. }
            | AdvancedOp::ToolUsage { .. }
            | AdvancedOp::CurrentTurn
            | AdvancedOp::SessionUsage { .. }
            | AdvancedOp::TurnUsage { .. } => false,
        }
    }
}

/// The answer to an [`AdvancedOp`] (the handle state after it travels beside it in
/// [`Outcome::Advanced`]).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum AdvancedAnswer {
    Done,
    Items(Vec<Item>),
    Popped(Option<Item>),
    BranchId(String),
    Branches(Vec<BranchInfo>),
    Turns(Vec<TurnRecord>),
    ByTurns(Vec<TurnGroup>),
    Tools(Vec<ToolUse>),
    Anchor(Option<TurnAnchor>),
    /// Whether a usage record was written (`false`: no turn, or the turn is gone).
    Recorded(bool),
    SessionUsage(Option<UsageTotals>),
    TurnUsage(Option<Usage>),
    TurnUsages(Vec<TurnUsage>),
}

impl AdvancedAnswer {
    pub(crate) fn blank_timestamps(&mut self) {
        match self {
            AdvancedAnswer::Branches(list) => {
                // Listing order follows creation time, which the model does not have; compare
                // by id (the order SQLite gives within one second).
                for b in list.iter_mut() {
                    b.created_at.clear();
                }
                list.sort_by(|a, b| a.branch_id.cmp(&b.branch_id));
            }
            AdvancedAnswer::Turns(list) => {
                for t in list {
                    t.timestamp.clear();
                }
            }
            _ => {}
        }
    }
}

/// Whether the structure tables of a file exist and belong to the opener's table pair.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum StructureStatus {
    /// No `message_structure` / `turn_usage` tables.
    Missing,
    /// Present, and their foreign keys name this opener's tables.
    Owned,
    /// Present but unusable by this opener (owned by another pair, or malformed); the text says
    /// why.
    Rejected(String),
}

/// The error texts shared by the model and the SQLite engine (so both fail identically).
pub mod errors {
    use crate::ModelError;

    pub fn structure_missing() -> ModelError {
        ModelError::Schema(
            "the structure tables message_structure/turn_usage are missing; open the store with \
             create_structure_tables(true) (CLI: `init --advanced`) to create and claim them"
                .into(),
        )
    }

    pub fn blank_branch_name(session: &str) -> ModelError {
        ModelError::InvalidArgument(format!("branch name cannot be empty (session '{session}')"))
    }

    pub fn blank_branch_id(session: &str) -> ModelError {
        ModelError::InvalidArgument(format!("branch ID cannot be empty (session '{session}')"))
    }

    pub fn delete_main(session: &str) -> ModelError {
        ModelError::InvalidArgument(format!(
            "cannot delete the 'main' branch of session '{session}'"
        ))
    }

    pub fn delete_current(session: &str, branch: &str) -> ModelError {
        ModelError::InvalidArgument(format!(
            "cannot delete current branch '{branch}' of session '{session}'; use force or \
             switch branches first"
        ))
    }

    pub fn turn_not_found(session: &str, branch: &str, turn: i64) -> ModelError {
        ModelError::TurnNotFound(format!(
            "turn {turn} does not contain a user message in branch '{branch}' of session \
             '{session}'"
        ))
    }

    pub fn no_turn_matches(session: &str, branch: &str, term: &str) -> ModelError {
        ModelError::TurnNotFound(format!(
            "no user turns found containing '{term}' in branch '{branch}' of session '{session}'"
        ))
    }

    pub fn branch_id_used(session: &str, branch: &str) -> ModelError {
        ModelError::BranchIdUsed(format!(
            "branch ID '{branch}' has already been used in session '{session}'; choose a new \
             branch ID"
        ))
    }

    pub fn branch_not_found(session: &str, branch: &str) -> ModelError {
        ModelError::BranchNotFound(format!(
            "branch '{branch}' does not exist in session '{session}' (a branch exists while it \
             has rows)"
        ))
    }
}

// ------------------------------------------------------------------------------------------
// Item-level rules (Python's `_classify_message_type`, `_extract_tool_name`, ...)
// ------------------------------------------------------------------------------------------

/// A user item: an object whose `role` is `"user"`. Each one starts a turn.
pub fn is_user_item(item: &Item) -> bool {
    item.get("role").and_then(Value::as_str) == Some("user")
}

/// The `message_type` of an item: `user` / `assistant` by role, else a truthy `type` (as
/// Python's `str()`), else `other`.
pub fn classify(item: &Item) -> String {
    let Some(obj) = item.as_object() else {
        return "other".into();
    };
    match obj.get("role").and_then(Value::as_str) {
        Some("user") => return "user".into(),
        Some("assistant") => return "assistant".into(),
        _ => {}
    }
    match obj.get("type") {
        Some(t) if py_truthy(t) => py_str(t),
        _ => "other".into(),
    }
}

/// Types whose tool name is the type itself (no `name` field).
const NAMELESS_TOOL_TYPES: [&str; 6] = [
    "computer_call",
    "file_search_call",
    "web_search_call",
    "code_interpreter_call",
    "shell_call",
    "apply_patch_call",
];

/// The `tool_name` of an item (first rule that applies):
/// 1. `mcp_call` / `mcp_approval_request` with a `server_label` key: `label.name` when both
///    are truthy, else the label, else the name, else none;
/// 2. the nameless tool types → the type; `tool_search_call` / `tool_search_output` →
///    `tool_search`;
/// 3. a `name` key: null → none; else the name, as `namespace.name` when a non-empty
///    namespace differs from it (an empty name gives `""`);
/// 4. none.
pub fn tool_name(item: &Item) -> Option<String> {
    let obj = item.as_object()?;
    let ty = obj.get("type").and_then(Value::as_str);
    if matches!(ty, Some("mcp_call" | "mcp_approval_request")) && obj.contains_key("server_label") {
        let label = obj.get("server_label").filter(|v| py_truthy(v));
        let name = obj.get("name").filter(|v| py_truthy(v));
        return match (label, name) {
            (Some(l), Some(n)) => Some(format!("{}.{}", py_str(l), py_str(n))),
            (Some(l), None) => Some(py_str(l)),
            (None, Some(n)) => Some(py_str(n)),
            (None, None) => None,
        };
    }
    if let Some(t) = ty {
        if NAMELESS_TOOL_TYPES.contains(&t) {
            return Some(t.to_owned());
        }
        if t == "tool_search_call" || t == "tool_search_output" {
            return Some("tool_search".into());
        }
    }
    if !obj.contains_key("name") {
        return None;
    }
    let name = match obj.get("name") {
        None | Some(Value::Null) => return None,
        Some(n) => py_str(n),
    };
    let namespace = match obj.get("namespace") {
        None | Some(Value::Null) => String::new(),
        Some(ns) => py_str(ns),
    };
    if name.is_empty() || namespace.is_empty() || namespace == name {
        Some(name)
    } else {
        Some(format!("{namespace}.{name}"))
    }
}

/// The message types counted by [`AdvancedOp::ToolUsage`] (besides unmatched
/// `tool_search_output`s).
pub const TOOL_CALL_TYPES: [&str; 12] = [
    "tool_call",
    "function_call",
    "computer_call",
    "file_search_call",
    "web_search_call",
    "code_interpreter_call",
    "tool_search_call",
    "custom_tool_call",
    "mcp_call",
    "mcp_approval_request",
    "shell_call",
    "apply_patch_call",
];

/// The `content` of a stored user item (`""` when the key is missing), or `None` when the
/// text is not JSON or not an object (such rows are skipped by turn listings).
pub fn user_content(message_data: &str) -> Option<Value> {
    let item = parse_item(message_data)?;
    let obj = item.as_object()?;
    Some(
        obj.get("content")
            .cloned()
            .unwrap_or_else(|| Value::String(String::new())),
    )
}

/// Whether a user turn's content contains `term`, ASCII case-insensitively: a string content
/// directly, a list of parts through each part's `text` (a missing text counts as `""`). Other
/// contents, and lists with a part that is not an object, never match.
pub fn turn_matches(content: &Value, term: &str) -> bool {
    let term = term.to_ascii_lowercase();
    let has = |text: &str| text.to_ascii_lowercase().contains(&term);
    match content {
        Value::String(s) => has(s),
        Value::Array(parts) => {
            if !parts.iter().all(Value::is_object) {
                return false;
            }
            parts.iter().any(|p| match p.get("text") {
                None => has(""),
                Some(Value::String(t)) => has(t),
                Some(_) => false,
            })
        }
        _ => false,
    }
}

/// Python's truthiness of a JSON value.
fn py_truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Python's `str()` of a decoded JSON value. Exact for strings, null, booleans and numbers;
/// lists and objects use Python's `repr` layout (characters Python would escape as
/// non-printable are approximated by the common control and format characters).
pub fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => py_repr(other),
    }
}

fn py_repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (None, Some(u), _) => u.to_string(),
            (_, _, Some(f)) => py_float(f),
            _ => n.to_string(),
        },
        Value::String(s) => py_repr_str(s),
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(py_repr).collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Object(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", py_repr_str(k), py_repr(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
    }
}

fn py_repr_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if !py_printable(c) => {
                let n = c as u32;
                if n <= 0xff {
                    out.push_str(&format!("\\x{n:02x}"));
                } else if n <= 0xffff {
                    out.push_str(&format!("\\u{n:04x}"));
                } else {
                    out.push_str(&format!("\\U{n:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

fn py_printable(c: char) -> bool {
    !(c.is_control()
        || matches!(c,
            '\u{a0}' | '\u{ad}' | '\u{1680}' | '\u{2000}'..='\u{200f}' | '\u{2028}'..='\u{202f}'
            | '\u{205f}'..='\u{2064}' | '\u{3000}' | '\u{feff}' | '\u{e000}'..='\u{f8ff}'))
}

/// Python's `repr(float)`: shortest round-trip digits, fixed notation for exponents in
/// `-4..16`, else scientific with a signed two-digit exponent.
fn py_float(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.into();
    }
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let exp: i32 = exp.parse().unwrap_or(0);
    let sign = if f.is_sign_negative() { "-" } else { "" };
    let decpt = exp + 1;
    if -4 < decpt && decpt <= 16 {
        if decpt <= 0 {
            format!(
                "{sign}0.{}{digits}",
                "0".repeat(decpt.unsigned_abs() as usize)
            )
        } else {
            let point = decpt as usize;
            if point < digits.len() {
                format!("{sign}{}.{}", &digits[..point], &digits[point..])
            } else {
                format!("{sign}{digits}{}.0", "0".repeat(point - digits.len()))
            }
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() { "" } else { "." };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{first}{dot}{rest}e{esign}{:02}", exp.unsigned_abs())
    }
}

/// Python's `str.strip()` emptiness (its whitespace set includes U+001C..U+001F).
pub fn is_blank(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

// ------------------------------------------------------------------------------------------
// The model's Advanced state and semantics
// ------------------------------------------------------------------------------------------

/// Advanced rows of the model (next to the shared message rows of [`Model`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct AdvancedState {
    /// Whether `message_structure`/`turn_usage` exist (created by `Init { structure: true }`).
    pub(crate) tables: bool,
    /// Every structure row of every session, in id order.
    pub(crate) rows: Vec<StructureRow>,
    pub(crate) last_row_id: i64,
    /// `(session, branch, turn)` → usage (one row per key: `INSERT OR REPLACE`).
    pub(crate) usage: BTreeMap<(String, String, i64), Usage>,
    /// `(session, branch)` ids ever used; never removed.
    pub(crate) reservations: BTreeSet<(String, String)>,
    /// Durable clear generation per session (a missing row reads as 0).
    pub(crate) generations: BTreeMap<String, i64>,
}

impl Model {
    /// Every `message_structure` row of a session, in id order.
    pub fn structure_rows(&self, session: &str) -> Vec<StructureRow> {
        self.adv
            .rows
            .iter()
            .filter(|r| r.session_id == session)
            .cloned()
            .collect()
    }

    /// The last row ids handed out (`AUTOINCREMENT`'s `sqlite_sequence`): messages, structure
    /// rows. They tell two histories apart whose rows are the same (an add then a clear).
    pub fn last_ids(&self) -> (i64, i64) {
        (self.last_id, self.adv.last_row_id)
    }

    /// Every `message_structure` row, in id order.
    pub fn all_structure_rows(&self) -> Vec<StructureRow> {
        self.adv.rows.clone()
    }

    /// Every message row as `(id, session_id, message_data)`, in id order. The model keeps
    /// `serde_json`'s text of an item (not Python's bytes): compare parsed values.
    pub fn message_rows(&self) -> Vec<(i64, String, String)> {
        self.messages
            .iter()
            .map(|m| (m.id, m.session.clone(), m.data.clone()))
            .collect()
    }

    /// Every usage row as `(session, branch, turn, usage)`, sorted by that key.
    pub fn usage_rows(&self) -> Vec<(String, String, i64, Usage)> {
        self.adv
            .usage
            .iter()
            .map(|((s, b, t), u)| (s.clone(), b.clone(), *t, u.clone()))
            .collect()
    }

    /// The reserved branch ids of a session, sorted.
    pub fn reserved_branches(&self, session: &str) -> Vec<String> {
        self.adv
            .reservations
            .iter()
            .filter(|(s, _)| s == session)
            .map(|(_, b)| b.clone())
            .collect()
    }

    /// The durable clear generation of a session (`None`: no generation row yet).
    pub fn generation_row(&self, session: &str) -> Option<i64> {
        self.adv.generations.get(session).copied()
    }

    /// Every reservation row as `(session, branch)`, sorted.
    pub fn reservation_rows(&self) -> Vec<(String, String)> {
        self.adv.reservations.iter().cloned().collect()
    }

    /// Every generation row as `(session, generation)`, sorted by session.
    pub fn generation_rows(&self) -> Vec<(String, i64)> {
        self.adv
            .generations
            .iter()
            .map(|(s, g)| (s.clone(), *g))
            .collect()
    }

    pub(crate) fn apply_advanced(
        &mut self,
        s: &str,
        view: &HandleView,
        op: &AdvancedOp,
    ) -> Result<Outcome, ModelError> {
        if !self.adv.tables {
            return Err(errors::structure_missing());
        }
        let (view, answer) = match op {
            AdvancedOp::AddItems { items } => {
                if items.is_empty() {
                    return Ok(advanced(view.clone(), AdvancedAnswer::Done));
                }
                self.ensure_generation(s);
                let view = view.refreshed(self.durable_generation(s));
                let batch: Vec<(String, String, Option<String>, bool)> = items
                    .iter()
                    .map(|i| (i.to_string(), classify(i), tool_name(i), is_user_item(i)))
                    .collect();
                self.append(s, &view.branch, batch);
                (view, AdvancedAnswer::Done)
            }
            AdvancedOp::PlantRaw { data } => {
                self.ensure_generation(s);
                let view = view.refreshed(self.durable_generation(s));
                self.append(
                    s,
                    &view.branch,
                    vec![(data.clone(), "other".into(), None, false)],
                );
                (view, AdvancedAnswer::Done)
            }
            AdvancedOp::GetItems { limit, branch } => {
                let (view, branch) = self.read_branch(s, view, branch);
                let valid: Vec<Item> = self
                    .branch_rows(s, &branch)
                    .iter()
                    .filter_map(|r| self.message(r.message_id))
                    .filter(|m| m.session == s)
                    .filter_map(|m| parse_item(&m.data))
                    .collect();
                (
                    view,
                    AdvancedAnswer::Items(crate::apply_limit(valid, *limit)),
                )
            }
            AdvancedOp::PopItem => {
                self.ensure_generation(s);
                let view = view.refreshed(self.durable_generation(s));
                let popped = self.pop_structured(s, &view.branch);
                (view, AdvancedAnswer::Popped(popped))
            }
            AdvancedOp::Clear => {
                self.ensure_reservations(s);
                self.ensure_generation(s);
                self.messages.retain(|m| m.session != s);
                self.sessions.remove(s);
                self.adv.rows.retain(|r| r.session_id != s);
                self.adv.usage.retain(|(us, _, _), _| us != s);
                let g = self.adv.generations.entry(s.to_owned()).or_insert(0);
                *g += 1;
                let view = HandleView::at(MAIN, *g);
                (view, AdvancedAnswer::Done)
            }
            AdvancedOp::ReplaceItems { items } => {
                let cleared = self.apply_advanced(s, view, &AdvancedOp::Clear)?;
                let Outcome::Advanced { view, .. } = cleared else {
                    unreachable!("a clear answers with a view")
                };
                return self.apply_advanced(
                    s,
                    &view,
                    &AdvancedOp::AddItems {
                        items: items.clone(),
                    },
                );
            }
            AdvancedOp::CreateBranchFromTurn {
                turn,
                name,
                now_unix,
            } => {
                if name.as_deref().is_some_and(is_blank) {
                    return Err(errors::blank_branch_name(s));
                }
                let (view, id) = self.create_branch(s, view, *turn, name.as_deref(), *now_unix)?;
                (view, AdvancedAnswer::BranchId(id))
            }
            AdvancedOp::CreateBranchFromContent {
                term,
                name,
                now_unix,
            } => {
                let current = view.refreshed(self.durable_generation(s));
                let turn = self
                    .turn_records(s, &current.branch)
                    .into_iter()
                    .find(|t| turn_matches(&t.full_content, term))
                    .ok_or_else(|| errors::no_turn_matches(s, &current.branch, term))?
                    .turn;
                if name.as_deref().is_some_and(is_blank) {
                    return Err(errors::blank_branch_name(s));
                }
                let (view, id) = self.create_branch(s, view, turn, name.as_deref(), *now_unix)?;
                (view, AdvancedAnswer::BranchId(id))
            }
            AdvancedOp::SwitchToBranch { branch } => {
                self.ensure_generation(s);
                if self.branch_rows(s, branch).is_empty() {
                    return Err(errors::branch_not_found(s, branch));
                }
                let view = HandleView::at(branch, self.durable_generation(s));
                (view, AdvancedAnswer::Done)
            }
            AdvancedOp::DeleteBranch { branch, force } => {
                if is_blank(branch) {
                    return Err(errors::blank_branch_id(s));
                }
                if branch == MAIN {
                    return Err(errors::delete_main(s));
                }
                let mut view = view.refreshed(self.durable_generation(s));
                let current = view.branch == *branch;
                if current && !force {
                    return Err(errors::delete_current(s, branch));
                }
                self.ensure_reservations(s);
                if self.branch_rows(s, branch).is_empty() {
                    return Err(errors::branch_not_found(s, branch));
                }
                self.adv
                    .usage
                    .retain(|(us, ub, _), _| !(us == s && ub == branch));
                self.adv
                    .rows
                    .retain(|r| !(r.session_id == s && r.branch_id == *branch));
                self.remove_orphans(s);
                if current {
                    view.branch = MAIN.into();
                }
                (view, AdvancedAnswer::Done)
            }
            AdvancedOp::ListBranches => {
                let view = view.refreshed(self.durable_generation(s));
                // The model keeps no wall clock: every structure row's `created_at` is empty, so a
                // branch's `MIN(created_at)` is its first row's and the list is in branch-id
                // order (outcomes are compared without timestamps).
                let mut by_branch: BTreeMap<&str, BranchInfo> = BTreeMap::new();
                for r in self.adv.rows.iter().filter(|r| r.session_id == s) {
                    let info =
                        by_branch
                            .entry(r.branch_id.as_str())
                            .or_insert_with(|| BranchInfo {
                                branch_id: r.branch_id.clone(),
                                message_count: 0,
                                user_turns: 0,
                                is_current: r.branch_id == view.branch,
                                created_at: r.created_at.clone(),
                            });
                    info.message_count += 1;
                    info.user_turns += i64::from(r.message_type == "user");
                }
                let mut list: Vec<BranchInfo> = by_branch.into_values().collect();
                list.sort_by(|a, b| {
                    (&a.created_at, &a.branch_id).cmp(&(&b.created_at, &b.branch_id))
                });
                (view, AdvancedAnswer::Branches(list))
            }
            AdvancedOp::ConversationTurns { branch } => {
                let (view, branch) = self.read_branch(s, view, branch);
                (view, AdvancedAnswer::Turns(self.turn_records(s, &branch)))
            }
            AdvancedOp::FindTurns { term, branch } => {
                let (view, branch) = self.read_branch(s, view, branch);
                let mut turns = self.turn_records(s, &branch);
                turns.retain(|t| turn_matches(&t.full_content, term));
                (view, AdvancedAnswer::Turns(turns))
            }
            AdvancedOp::ConversationByTurns { branch } => {
                let (view, branch) = self.read_branch(s, view, branch);
                let mut groups: Vec<TurnGroup> = Vec::new();
                for r in self.branch_rows(s, &branch) {
                    let item = TurnItem {
                        message_type: r.message_type.clone(),
                        tool_name: r.tool_name.clone(),
                    };
                    match groups.iter_mut().find(|g| g.turn == r.user_turn_number) {
                        Some(g) => g.items.push(item),
                        None => groups.push(TurnGroup {
                            turn: r.user_turn_number,
                            items: vec![item],
                        }),
                    }
                }
                (view, AdvancedAnswer::ByTurns(groups))
            }
            AdvancedOp::ToolUsage { branch } => {
                let (view, branch) = self.read_branch(s, view, branch);
                (view, AdvancedAnswer::Tools(self.tool_usage(s, &branch)))
            }
            AdvancedOp::CurrentTurn => {
                let view = view.refreshed(self.durable_generation(s));
                let anchor = self.current_anchor(s, &view.branch);
                (view, AdvancedAnswer::Anchor(anchor))
            }
            AdvancedOp::RecordUsage { usage, anchor } => {
                usage.validate()?;
                let durable = self.durable_generation(s);
                let refreshed = view.refreshed(durable);
                let target = match anchor {
                    // A clear the handle had not seen invalidates usage of the old history.
                    None if view.is_stale(durable) => None,
                    None => self.current_anchor(s, &view.branch),
                    Some(a) => self
                        .adv
                        .rows
                        .iter()
                        .any(|r| {
                            r.session_id == s
                                && r.branch_id == a.branch
                                && r.user_turn_number == a.turn
                                && r.id == a.structure_id
                        })
                        .then(|| a.clone()),
                };
                let recorded = target.is_some();
                if let Some(a) = target {
                    self.adv
                        .usage
                        .insert((s.to_owned(), a.branch, a.turn), usage.clone());
                }
                (refreshed, AdvancedAnswer::Recorded(recorded))
            }
            AdvancedOp::SessionUsage { branch } => {
                let branch = branch.as_deref().filter(|b| !b.is_empty());
                let rows: Vec<&Usage> = self
                    .adv
                    .usage
                    .iter()
                    .filter(|((us, ub, _), _)| us == s && branch.is_none_or(|b| ub == b))
                    .map(|(_, u)| u)
                    .collect();
                let totals = (!rows.is_empty()).then(|| UsageTotals {
                    requests: rows.iter().map(|u| u.requests).sum(),
                    input_tokens: rows.iter().map(|u| u.input_tokens).sum(),
                    output_tokens: rows.iter().map(|u| u.output_tokens).sum(),
                    total_tokens: rows.iter().map(|u| u.total_tokens).sum(),
                    total_turns: rows.len() as i64,
                });
                (view.clone(), AdvancedAnswer::SessionUsage(totals))
            }
            AdvancedOp::TurnUsage { turn, branch } => {
                let (view, branch) = self.read_branch(s, view, branch);
                let of_branch = self
                    .adv
                    .usage
                    .iter()
                    .filter(|((us, ub, _), _)| us == s && *ub == branch);
                let answer = match turn {
                    Some(t) => AdvancedAnswer::TurnUsage(
                        of_branch
                            .filter(|((_, _, ut), _)| ut == t)
                            .map(|(_, u)| u.clone())
                            .next(),
                    ),
                    None => AdvancedAnswer::TurnUsages(
                        of_branch
                            .map(|((_, _, ut), u)| TurnUsage {
                                user_turn_number: *ut,
                                usage: u.clone(),
                            })
                            .collect(),
                    ),
                };
                (view, answer)
            }
        };
        Ok(advanced(view, answer))
    }

    fn durable_generation(&self, s: &str) -> i64 {
        self.adv.generations.get(s).copied().unwrap_or(0)
    }

    fn ensure_generation(&mut self, s: &str) {
        self.adv.generations.entry(s.to_owned()).or_insert(0);
    }

    /// Reserve every branch that has rows (files written before reservations existed).
    fn ensure_reservations(&mut self, s: &str) {
        for r in self.adv.rows.iter().filter(|r| r.session_id == s) {
            self.adv
                .reservations
                .insert((s.to_owned(), r.branch_id.clone()));
        }
    }

    /// A read's branch: an explicit one as given (no generation check), else the refreshed
    /// current branch.
    fn read_branch(
        &self,
        s: &str,
        view: &HandleView,
        branch: &Option<String>,
    ) -> (HandleView, String) {
        match branch {
            Some(b) => (view.clone(), b.clone()),
            None => {
                let v = view.refreshed(self.durable_generation(s));
                let b = v.branch.clone();
                (v, b)
            }
        }
    }

    /// A branch's rows in sequence order.
    fn branch_rows(&self, s: &str, branch: &str) -> Vec<&StructureRow> {
        let mut rows: Vec<&StructureRow> = self
            .adv
            .rows
            .iter()
            .filter(|r| r.session_id == s && r.branch_id == branch)
            .collect();
        rows.sort_by_key(|r| (r.sequence_number, r.id));
        rows
    }

    fn message(&self, id: i64) -> Option<&crate::Message> {
        self.messages.iter().find(|m| m.id == id)
    }

    fn max_sequence(&self, s: &str) -> i64 {
        self.adv
            .rows
            .iter()
            .filter(|r| r.session_id == s)
            .map(|r| r.sequence_number)
            .max()
            .unwrap_or(0)
    }

    fn push_row(&mut self, mut row: StructureRow) {
        self.adv.last_row_id += 1;
        row.id = self.adv.last_row_id;
        self.adv.rows.push(row);
    }

    /// Insert a batch `(data, type, tool, is_user)` on `branch`: the messages, then one
    /// structure row each, numbered per SPEC §5.3.
    fn append(
        &mut self,
        s: &str,
        branch: &str,
        batch: Vec<(String, String, Option<String>, bool)>,
    ) {
        self.ensure_session(s);
        let first_id = self.last_id + 1;
        for (data, _, _, _) in &batch {
            self.push(s, data.clone(), String::new());
        }
        self.touch(s);
        let seq0 = self.max_sequence(s);
        let on_branch = self.branch_rows(s, branch);
        let t0 = on_branch
            .iter()
            .map(|r| r.user_turn_number)
            .max()
            .unwrap_or(0);
        let b0 = on_branch
            .iter()
            .map(|r| r.branch_turn_number)
            .max()
            .unwrap_or(0);
        let mut users = 0;
        for (i, (_, message_type, tool_name, user)) in batch.into_iter().enumerate() {
            users += i64::from(user);
            self.push_row(StructureRow {
                id: 0,
                session_id: s.to_owned(),
                message_id: first_id + i as i64,
                branch_id: branch.to_owned(),
                message_type,
                sequence_number: seq0 + i as i64 + 1,
                user_turn_number: t0 + users,
                branch_turn_number: b0 + users,
                tool_name,
                created_at: String::new(),
            });
        }
    }

    /// Delete the session's messages that no structure row references (including rows a
    /// basic session wrote).
    fn remove_orphans(&mut self, s: &str) {
        let referenced: BTreeSet<i64> = self
            .adv
            .rows
            .iter()
            .filter(|r| r.session_id == s)
            .map(|r| r.message_id)
            .collect();
        self.messages
            .retain(|m| m.session != s || referenced.contains(&m.id));
    }

    fn pop_structured(&mut self, s: &str, branch: &str) -> Option<Item> {
        self.ensure_reservations(s);
        loop {
            let newest = self.branch_rows(s, branch).last().map(|r| r.id)?;
            let pos = self.adv.rows.iter().position(|r| r.id == newest)?;
            let claimed = self.adv.rows.remove(pos);
            let data = self.message(claimed.message_id).map(|m| m.data.clone());
            self.remove_orphans(s);
            let turn = claimed.user_turn_number;
            if !self
                .branch_rows(s, branch)
                .iter()
                .any(|r| r.user_turn_number == turn)
            {
                self.adv
                    .usage
                    .remove(&(s.to_owned(), branch.to_owned(), turn));
            }
            if let Some(item) = data.as_deref().and_then(parse_item) {
                return Some(item);
            }
        }
    }

    fn create_branch(
        &mut self,
        s: &str,
        view: &HandleView,
        turn: i64,
        name: Option<&str>,
        now_unix: i64,
    ) -> Result<(HandleView, String), ModelError> {
        self.ensure_reservations(s);
        self.ensure_generation(s);
        let view = view.refreshed(self.durable_generation(s));
        let source = view.branch.clone();
        let has_user_turn = self.branch_rows(s, &source).iter().any(|r| {
            r.branch_turn_number == turn
                && r.message_type == "user"
                && self.message(r.message_id).is_some()
        });
        if !has_user_turn {
            return Err(errors::turn_not_found(s, &source, turn));
        }
        let id = match name {
            Some(n) => {
                if !self.adv.reservations.insert((s.to_owned(), n.to_owned())) {
                    return Err(errors::branch_id_used(s, n));
                }
                n.to_owned()
            }
            None => {
                let base = format!("branch_from_turn_{turn}_{now_unix}");
                let mut candidate = base.clone();
                let mut suffix = 1;
                while !self
                    .adv
                    .reservations
                    .insert((s.to_owned(), candidate.clone()))
                {
                    suffix += 1;
                    candidate = format!("{base}_{suffix}");
                }
                candidate
            }
        };
        let copies: Vec<StructureRow> = self
            .branch_rows(s, &source)
            .into_iter()
            .filter(|r| r.branch_turn_number < turn)
            .cloned()
            .collect();
        let seq0 = self.max_sequence(s);
        for (i, r) in copies.into_iter().enumerate() {
            self.push_row(StructureRow {
                branch_id: id.clone(),
                sequence_number: seq0 + i as i64 + 1,
                created_at: String::new(),
                ..r
            });
        }
        Ok((
            HandleView {
                branch: id.clone(),
                ..view
            },
            id,
        ))
    }

    /// User turns of a branch with their content, by branch turn number.
    fn turn_records(&self, s: &str, branch: &str) -> Vec<TurnRecord> {
        let mut users: Vec<&StructureRow> = self
            .branch_rows(s, branch)
            .into_iter()
            .filter(|r| r.message_type == "user")
            .collect();
        users.sort_by_key(|r| (r.branch_turn_number, r.sequence_number));
        users
            .into_iter()
            .filter_map(|r| {
                let m = self.message(r.message_id)?;
                Some(TurnRecord {
                    turn: r.branch_turn_number,
                    full_content: user_content(&m.data)?,
                    timestamp: r.created_at.clone(),
                })
            })
            .collect()
    }

    fn tool_usage(&self, s: &str, branch: &str) -> Vec<ToolUse> {
        let rows = self.branch_rows(s, branch);
        let mut counts: BTreeMap<(i64, Option<String>), i64> = BTreeMap::new();
        for r in &rows {
            let ty = r.message_type.as_str();
            let name = if TOOL_CALL_TYPES.contains(&ty) {
                r.tool_name.clone().or_else(|| {
                    matches!(ty, "shell_call" | "apply_patch_call").then(|| ty.to_owned())
                })
            } else if ty == "tool_search_output" {
                let answered = r.tool_name.is_some()
                    && rows.iter().any(|c| {
                        c.message_type == "tool_search_call"
                            && c.user_turn_number == r.user_turn_number
                            && c.tool_name == r.tool_name
                    });
                if answered {
                    continue;
                }
                r.tool_name.clone()
            } else {
                continue;
            };
            *counts.entry((r.user_turn_number, name)).or_insert(0) += 1;
        }
        counts
            .into_iter()
            .map(|((turn, tool_name), usage_count)| ToolUse {
                tool_name,
                usage_count,
                user_turn_number: turn,
            })
            .collect()
    }

    /// The newest turn of a branch and its first structure row, if the branch has rows there.
    fn current_anchor(&self, s: &str, branch: &str) -> Option<TurnAnchor> {
        let rows = self.branch_rows(s, branch);
        let turn = rows.iter().map(|r| r.user_turn_number).max().unwrap_or(0);
        let first = rows
            .iter()
            .filter(|r| r.user_turn_number == turn)
            .map(|r| r.id)
            .min()?;
        Some(TurnAnchor {
            branch: branch.to_owned(),
            turn,
            structure_id: first,
        })
    }
}

fn advanced(view: HandleView, answer: AdvancedAnswer) -> Outcome {
    Outcome::Advanced { view, answer }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn string_reprs_escape_what_python_does_not_print() {
        // Each expected text is what Python 3 prints for `repr(s)`.
        let cases = [
            ("\u{0}", r"'\x00'"),
            ("\u{7f}", r"'\x7f'"),
            ("\u{a0}", r"'\xa0'"),
            ("\u{2028}", r"'\u2028'"),
            ("\u{feff}", r"'\ufeff'"),
            ("é\u{1}", r"'é\x01'"),
            ("😀 tab\t", r"'😀 tab\t'"),
            ("it's", r#""it's""#),
        ];
        for (s, want) in cases {
            assert_eq!(py_repr_str(s), want, "{s:?}");
        }
    }

    #[test]
    fn classification_follows_role_then_truthy_type() {
        let cases = [
            (json!({"role": "user", "content": "x"}), "user"),
            (json!({"type": "message", "role": "assistant"}), "assistant"),
            (json!({"role": "system", "content": "x"}), "other"),
            (json!({"role": "developer", "type": "message"}), "message"),
            (json!({"type": "reasoning"}), "reasoning"),
            (json!({"type": ""}), "other"),
            (json!({"type": 5}), "5"),
            (json!({"type": true}), "True"),
            (json!({"type": 1.5}), "1.5"),
            (json!({"type": ["a", 1]}), "['a', 1]"),
            (json!({"content": "x"}), "other"),
            (json!("bare"), "other"),
            (json!([1]), "other"),
        ];
        for (item, want) in cases {
            assert_eq!(classify(&item), want, "{item}");
        }
    }

    #[test]
    fn python_float_repr() {
        for (f, want) in [
            (1.0, "1.0"),
            (1e16, "1e+16"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (123.456, "123.456"),
            (1e15, "1000000000000000.0"),
            (-0.0, "-0.0"),
            (2.5e-300, "2.5e-300"),
        ] {
            assert_eq!(py_float(f), want);
        }
    }

    #[test]
    fn merge_is_monotonic_and_ignores_stale_reports() {
        let main0 = HandleView::at(MAIN, 0);
        let x0 = HandleView::at("x", 0);
        let main1 = HandleView::at(MAIN, 1);
        // A switch at the same generation moves the pointer.
        let mut h = main0.clone();
        h.merge(&main0, &x0);
        assert_eq!(h, x0);
        // An add that did not move the pointer does not undo it.
        h.merge(&main0, &main0);
        assert_eq!(h, x0);
        // A newer generation resets.
        h.merge(&x0, &main1);
        assert_eq!(h, main1);
        // A stale switch (validated at generation 0) never re-points after the clear.
        h.merge(&main0, &x0);
        assert_eq!(h, main1);
    }
}
