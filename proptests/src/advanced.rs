//! Strategies and the sequential runner for Advanced operations: several real session handles
//! (each an [`AdvancedSession`] with its own branch pointer per session), basic operations
//! mixed in on the same sessions, group commits, reopen; every answer compared with the model's,
//! every handle's view with the model's merge of the views it reported (the oracle), then every
//! row of every table.

use std::collections::HashMap;
use std::path::Path;

use agent_sessions::{AdvancedSession, Error, Op, Outcome};
use agent_sessions_model::advanced::{
    AdvancedAnswer, AdvancedOp, HandleView, StructureRow, TurnAnchor, Usage,
};
use agent_sessions_model::Model;
use proptest::prelude::*;
use rusqlite::{Connection, OpenFlags};
use serde_json::{json, Value};

use crate::{block_on, group_of, is_full, model_apply, normalize, Pending, Target};

pub const SESSIONS: [&str; 2] = ["s", "t"];
const BRANCHES: [&str; 4] = ["main", "b1", "b2", "b3"];
const TERMS: [&str; 5] = ["weather", "ROME", "é", "", "zzz"];

fn adv_item() -> impl Strategy<Value = Value> {
    prop::sample::select(vec![
        json!({"role": "user", "content": "hello weather"}),
        json!({"role": "user", "content": "Café ROME 😀"}),
        json!({"role": "user", "content": [{"type": "input_text", "text": "parts WEATHER"}]}),
        json!({"role": "user", "content": null}),
        json!({"role": "assistant", "content": "sunny"}),
        json!({"type": "function_call", "name": "get_weather", "arguments": "{}"}),
        json!({"type": "function_call_output", "output": "ok"}),
        json!({"type": "mcp_call", "server_label": "cal", "name": "list"}),
        json!({"type": "tool_search_call"}),
        json!({"type": "tool_search_output"}),
        json!({"type": "shell_call", "action": {}}),
        json!({"type": "reasoning"}),
        json!("bare"),
        json!([1, {"n": 1.5}]),
        json!({"role": "assistant", "content": "x".repeat(3000)}), // fills capped files
    ])
}

fn branch() -> impl Strategy<Value = Option<String>> {
    prop::option::weighted(
        0.4,
        prop::sample::select(BRANCHES.to_vec()).prop_map(str::to_owned),
    )
}

fn usage() -> impl Strategy<Value = Usage> {
    (0..5i64, 0..100i64, prop::bool::ANY).prop_map(|(requests, total, details)| Usage {
        requests,
        input_tokens: total / 2,
        output_tokens: total - total / 2,
        total_tokens: total,
        input_tokens_details: details.then(|| json!({"cached_tokens": total / 4})),
        output_tokens_details: None,
    })
}

pub fn adv_write() -> impl Strategy<Value = AdvancedOp> {
    let name = prop::option::weighted(
        0.7,
        prop::sample::select(BRANCHES.to_vec()).prop_map(str::to_owned),
    );
    prop_oneof![
        6 => prop::collection::vec(adv_item(), 0..4).prop_map(|items| AdvancedOp::AddItems { items }),
        1 => Just(AdvancedOp::PlantRaw { data: "{corrupt".into() }),
        3 => Just(AdvancedOp::PopItem),
        1 => Just(AdvancedOp::Clear),
        1 => prop::collection::vec(adv_item(), 0..3).prop_map(|items| AdvancedOp::ReplaceItems { items }),
        2 => (0..5i64, name.clone(), 0..2i64).prop_map(|(turn, name, t)| AdvancedOp::CreateBranchFromTurn {
            turn, name, now_unix: 1_700_000_000 + t }),
        1 => (prop::sample::select(TERMS.to_vec()), name).prop_map(|(term, name)| AdvancedOp::CreateBranchFromContent {
            term: term.into(), name, now_unix: 1_700_000_000 }),
        2 => prop::sample::select(BRANCHES.to_vec()).prop_map(|b| AdvancedOp::SwitchToBranch { branch: b.into() }),
        1 => (prop::sample::select(BRANCHES.to_vec()), prop::bool::ANY)
            .prop_map(|(b, force)| AdvancedOp::DeleteBranch { branch: b.into(), force }),
        2 => usage().prop_map(|usage| AdvancedOp::RecordUsage { usage, anchor: None }),
    ]
}

pub fn adv_read() -> impl Strategy<Value = AdvancedOp> {
    let limit = prop::sample::select(vec![None, Some(0), Some(1), Some(3), Some(-1)]);
    prop_oneof![
        3 => (limit, branch()).prop_map(|(limit, branch)| AdvancedOp::GetItems { limit, branch }),
        1 => Just(AdvancedOp::ListBranches),
        1 => branch().prop_map(|branch| AdvancedOp::ConversationTurns { branch }),
        1 => (prop::sample::select(TERMS.to_vec()), branch())
            .prop_map(|(t, branch)| AdvancedOp::FindTurns { term: t.into(), branch }),
        1 => branch().prop_map(|branch| AdvancedOp::ConversationByTurns { branch }),
        1 => branch().prop_map(|branch| AdvancedOp::ToolUsage { branch }),
        2 => Just(AdvancedOp::CurrentTurn),
        1 => branch().prop_map(|branch| AdvancedOp::SessionUsage { branch }),
        1 => (prop::option::of(0..4i64), branch()).prop_map(|(turn, branch)| AdvancedOp::TurnUsage { turn, branch }),
    ]
}

fn session() -> impl Strategy<Value = String> {
    prop::sample::select(SESSIONS.to_vec()).prop_map(str::to_owned)
}

/// One step of an Advanced run. Handles are numbered; each handle has one view per session.
#[allow(clippy::large_enum_variant)] // test data, built once per case
#[derive(Clone, Debug)]
pub enum AStep {
    Adv(usize, String, AdvancedOp),
    /// Record usage on an anchor seen earlier (index into the anchors collected so far).
    RecordAnchored(usize, String, Usage, usize),
    /// A basic-session write on the same ids (another program's, or a basic handle's).
    Basic(usize, Op),
    /// Advanced writes submitted together through one handle (one group commit).
    Group(usize, Vec<(String, AdvancedOp)>),
    Reopen,
}

pub fn astep() -> impl Strategy<Value = AStep> {
    let basic = prop_oneof![
        (session(), prop::collection::vec(adv_item(), 1..3))
            .prop_map(|(session, items)| Op::AddItems { session, items }),
        session().prop_map(|session| Op::PopItem { session }),
        session().prop_map(|session| Op::ClearSession { session }),
        session().prop_map(|session| Op::GetItems {
            session,
            limit: None
        }),
    ];
    prop_oneof![
        10 => (0..3usize, session(), adv_write()).prop_map(|(h, s, op)| AStep::Adv(h, s, op)),
        6 => (0..3usize, session(), adv_read()).prop_map(|(h, s, op)| AStep::Adv(h, s, op)),
        1 => (0..3usize, session(), usage(), any::<usize>()).prop_map(|(h, s, u, k)| AStep::RecordAnchored(h, s, u, k)),
        1 => (0..3usize, basic).prop_map(|(h, op)| AStep::Basic(h, op)),
        2 => (0..3usize, prop::collection::vec((session(), adv_write()), 2..5)).prop_map(|(h, ops)| AStep::Group(h, ops)),
        1 => Just(AStep::Reopen),
    ]
}

/// How the runner gets its real session handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handles {
    /// One [`AdvancedSession`] per (handle number, session), kept until a reopen closes
    /// its store.
    Kept,
    /// Negative control: a fresh handle for every operation (on `main`, no generation seen), as
    /// a handle that forgets its state would be; the state machine must catch it.
    FreshEveryOp,
}

/// The harness's handles: the real session handles the operations run through, and beside each
/// the oracle's view — the model's [`HandleView::merge`] of the views the model reported. After
/// every operation the real handle's view must equal the oracle's.
struct Harness {
    mode: Handles,
    real: HashMap<(usize, String), AdvancedSession>,
    oracle: HashMap<(usize, String), HandleView>,
}

impl Harness {
    fn handle(
        &mut self,
        target: &dyn Target,
        h: usize,
        s: &str,
    ) -> Result<AdvancedSession, String> {
        let key = (h, s.to_owned());
        if self.mode == Handles::Kept {
            if let Some(handle) = self.real.get(&key) {
                return Ok(handle.clone());
            }
        }
        let store = target
            .store(h)
            .ok_or("the Advanced state machine needs a target with stores")?;
        let handle = store.advanced_session(s).map_err(|e| e.to_string())?;
        self.real.insert(key, handle.clone());
        Ok(handle)
    }

    /// The view a correct handle would send: what the model's answers so far merge to.
    fn oracle(&self, h: usize, s: &str) -> HandleView {
        self.oracle
            .get(&(h, s.to_owned()))
            .cloned()
            .unwrap_or_else(HandleView::main)
    }

    /// Fold the model's reported view into the oracle.
    fn fold(&mut self, h: usize, s: &str, sent: &HandleView, want: &Result<Outcome, Error>) {
        let oracle = self
            .oracle
            .entry((h, s.to_owned()))
            .or_insert_with(HandleView::main);
        if let Ok(Outcome::Advanced { view, .. }) = want {
            oracle.merge(sent, view);
        }
    }

    /// The real handle's view equals the oracle's.
    fn check(&self, h: usize, s: &str) -> Result<(), String> {
        let key = (h, s.to_owned());
        let oracle = self
            .oracle
            .get(&key)
            .cloned()
            .unwrap_or_else(HandleView::main);
        let real = self.real.get(&key).map(|handle| handle.view());
        if real.as_ref() != Some(&oracle) {
            return Err(format!(
                "handle {h} on {s:?}: the real handle's view {real:?} != the model's {oracle:?}"
            ));
        }
        Ok(())
    }

    /// After a reopen: handles whose store was closed are gone, and so are their views.
    fn drop_closed(&mut self) {
        let Harness { real, oracle, .. } = self;
        real.retain(|key, handle| {
            let open = !handle.is_closed();
            if !open {
                oracle.remove(key);
            }
            open
        });
    }
}

/// A handle's answer in the form the model gives it (the view is compared separately).
fn as_outcome(r: Result<AdvancedAnswer, Error>) -> Result<Outcome, Error> {
    r.map(|answer| Outcome::Advanced {
        view: HandleView::main(),
        answer,
    })
}

fn without_view(r: &Result<Outcome, Error>) -> Result<Outcome, Error> {
    match r {
        Ok(Outcome::Advanced { answer, .. }) => as_outcome(Ok(answer.clone())),
        other => other.clone(),
    }
}

fn compare(
    i: usize,
    op: &Op,
    got: Result<Outcome, Error>,
    want: Result<Outcome, Error>,
) -> Result<Result<Outcome, Error>, String> {
    let (got, want) = (normalize(got), normalize(want));
    if without_view(&got) == without_view(&want) {
        Ok(want)
    } else {
        Err(format!("step {i} {op:?}: store {got:?} != model {want:?}"))
    }
}

struct Run {
    model: Model,
    handles: Harness,
    anchors: Vec<TurnAnchor>,
}

impl Run {
    fn adv(
        &mut self,
        target: &mut dyn Target,
        i: usize,
        h: usize,
        s: &str,
        op: AdvancedOp,
    ) -> Result<(), String> {
        let sent = self.handles.oracle(h, s);
        let handle = self.handles.handle(target, h, s)?;
        let got = as_outcome(handle.execute_op_blocking(op.clone()));
        if is_full(&got) {
            return Ok(()); // injected: a full database wrote nothing (the model knows no pages)
        }
        let full = Op::Advanced {
            session: s.to_owned(),
            view: sent.clone(),
            op,
        };
        let want = compare(i, &full, got, model_apply(&mut self.model, &full))?;
        if let Ok(Outcome::Advanced {
            answer: AdvancedAnswer::Anchor(Some(a)),
            ..
        }) = &want
        {
            self.anchors.push(a.clone());
        }
        self.handles.fold(h, s, &sent, &want);
        self.handles.check(h, s)
    }

    /// Advanced writes through the real handles of `h`, submitted together: one group commit.
    fn group(
        &mut self,
        target: &mut dyn Target,
        i: usize,
        h: usize,
        ops: &[(String, AdvancedOp)],
    ) -> Result<(), String> {
        let sent: Vec<HandleView> = ops.iter().map(|(s, _)| self.handles.oracle(h, s)).collect();
        let mut pending: Vec<Pending<'static>> = Vec::new();
        for (s, op) in ops {
            let handle = self.handles.handle(target, h, s)?;
            let op = op.clone();
            pending.push(Box::pin(
                async move { as_outcome(handle.execute_op(op).await) },
            ));
        }
        let store = target.store(h).ok_or("no store")?;
        let got = group_of(store, pending, block_on);
        for (((s, op), sent), got) in ops.iter().zip(&sent).zip(got) {
            if is_full(&got) {
                continue;
            }
            let full = Op::Advanced {
                session: s.clone(),
                view: sent.clone(),
                op: op.clone(),
            };
            let want = compare(i, &full, got, model_apply(&mut self.model, &full))?;
            self.handles.fold(h, s, sent, &want);
        }
        // Every reply has been merged by now: compare once the whole group is in.
        ops.iter().try_for_each(|(s, _)| self.handles.check(h, s))
    }
}

/// Run `steps` through real handles; fail at the first outcome or handle view that differs from
/// the model's, then compare rows.
pub fn check_advanced(target: &mut dyn Target, steps: &[AStep]) -> Result<(), String> {
    check_advanced_with(target, steps, Handles::Kept)
}

/// [`check_advanced`] with the handles got as `mode` says.
pub fn check_advanced_with(
    target: &mut dyn Target,
    steps: &[AStep],
    mode: Handles,
) -> Result<(), String> {
    let mut run = Run {
        model: target.model(),
        handles: Harness {
            mode,
            real: HashMap::new(),
            oracle: HashMap::new(),
        },
        anchors: Vec::new(),
    };
    model_apply(&mut run.model, &Op::Init { structure: true }).map_err(|e| e.to_string())?;
    for (i, step) in steps.iter().enumerate() {
        match step {
            AStep::Adv(h, s, op) => run.adv(target, i, *h, s, op.clone())?,
            AStep::RecordAnchored(h, s, usage, k) => {
                let anchor =
                    (!run.anchors.is_empty()).then(|| run.anchors[k % run.anchors.len()].clone());
                run.adv(
                    target,
                    i,
                    *h,
                    s,
                    AdvancedOp::RecordUsage {
                        usage: usage.clone(),
                        anchor,
                    },
                )?;
            }
            AStep::Basic(h, op) => {
                let got = target.exec(*h, op.clone());
                if !is_full(&got) {
                    let _basic_outcome = compare(i, op, got, model_apply(&mut run.model, op))?;
                }
            }
            AStep::Group(h, ops) => run.group(target, i, *h, ops)?,
            AStep::Reopen => {
                target.reopen();
                run.handles.drop_closed(); // new handles start fresh
            }
        }
    }
    if let Some(path) = target.path() {
        compare_rows(path, &run.model)?;
    } else if let Some(rows) = target.rows() {
        rows?.compare(&Rows::of_model(&run.model)?.renumbered())?;
    }
    Ok(())
}

/// Every row of every table, as the property tests compare them: message data parsed (the model
/// keeps `serde_json`'s text, engines Python's bytes), timestamps and row ids of `turn_usage`
/// left out. One comparator for every suite that compares a database with the model (the
/// state machines on SQLite and PostgreSQL, the hand-written Advanced scenarios, the VFS suites).
#[derive(Debug, PartialEq)]
pub struct Rows {
    pub structure: Vec<StructureRow>,
    pub messages: Vec<(i64, String, Value)>,
    pub usage: Vec<(String, String, i64, Usage)>,
    pub sessions: Vec<String>,
    /// `(session, branch)`, sorted.
    pub reservations: Vec<(String, String)>,
    /// `(session, generation)`, sorted.
    pub generations: Vec<(String, i64)>,
}

/// Stored text as a value; text that is not JSON compares as itself.
pub fn decode(t: &str) -> Value {
    serde_json::from_str::<Value>(t).unwrap_or_else(|_| Value::String(format!("<raw>{t}")))
}

impl Rows {
    pub fn of_model(model: &Model) -> Result<Rows, String> {
        let sessions = match model.clone().apply(&Op::ListSessions) {
            Ok(Outcome::Sessions(list)) => list.into_iter().map(|s| s.session_id).collect(),
            other => return Err(format!("model ListSessions: {other:?}")),
        };
        Ok(Rows {
            structure: model
                .all_structure_rows()
                .into_iter()
                .map(|mut r| {
                    r.created_at.clear();
                    r
                })
                .collect(),
            messages: model
                .message_rows()
                .into_iter()
                .map(|(id, s, t)| (id, s, decode(&t)))
                .collect(),
            usage: model.usage_rows(),
            sessions,
            reservations: model.reservation_rows(),
            generations: model.generation_rows(),
        })
    }

    /// The rows of an SQLite file.
    pub fn of_sqlite(path: &Path) -> Result<Rows, String> {
        let db = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| e.to_string())?;
        let q = |e: rusqlite::Error| e.to_string();
        let structure = db
            .prepare(STRUCTURE_ROWS)
            .map_err(q)?
            .query_map([], |r| {
                Ok(StructureRow {
                    id: r.get(0)?,
                    session_id: r.get(1)?,
                    message_id: r.get(2)?,
                    branch_id: r.get(3)?,
                    message_type: r.get(4)?,
                    sequence_number: r.get(5)?,
                    user_turn_number: r.get(6)?,
                    branch_turn_number: r.get(7)?,
                    tool_name: r.get(8)?,
                    created_at: String::new(),
                })
            })
            .map_err(q)?
            .collect::<rusqlite::Result<_>>()
            .map_err(q)?;
        let messages = db
            .prepare(MESSAGE_ROWS)
            .map_err(q)?
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, decode(&r.get::<_, String>(2)?)))
            })
            .map_err(q)?
            .collect::<rusqlite::Result<_>>()
            .map_err(q)?;
        let details = |t: Option<String>| t.map(|t| decode(&t));
        let usage = db
            .prepare(USAGE_ROWS)
            .map_err(q)?
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    Usage {
                        requests: r.get(3)?,
                        input_tokens: r.get(4)?,
                        output_tokens: r.get(5)?,
                        total_tokens: r.get(6)?,
                        input_tokens_details: details(r.get(7)?),
                        output_tokens_details: details(r.get(8)?),
                    },
                ))
            })
            .map_err(q)?
            .collect::<rusqlite::Result<_>>()
            .map_err(q)?;
        let sessions = db
            .prepare(SESSION_ROWS)
            .map_err(q)?
            .query_map([], |r| r.get(0))
            .map_err(q)?
            .collect::<rusqlite::Result<_>>()
            .map_err(q)?;
        fn pairs<T: rusqlite::types::FromSql>(
            db: &Connection,
            sql: &str,
        ) -> rusqlite::Result<Vec<(String, T)>> {
            db.prepare(sql)?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        }
        let reservations = pairs(&db, RESERVATION_ROWS).map_err(q)?;
        let generations = pairs(&db, GENERATION_ROWS).map_err(q)?;
        Ok(Rows {
            structure,
            messages,
            usage,
            sessions,
            reservations,
            generations,
        })
    }

    /// Row ids replaced by their rank (and message references with them): for engines whose
    /// id sequences skip values (PostgreSQL's are not rolled back with a transaction).
    pub fn renumbered(mut self) -> Rows {
        let rank: HashMap<i64, i64> = self
            .messages
            .iter()
            .enumerate()
            .map(|(i, m)| (m.0, i as i64 + 1))
            .collect();
        for m in &mut self.messages {
            m.0 = rank[&m.0];
        }
        for (i, r) in self.structure.iter_mut().enumerate() {
            r.id = i as i64 + 1;
            r.message_id = rank.get(&r.message_id).copied().unwrap_or(-r.message_id);
        }
        self
    }

    /// The first table whose rows differ, with both sides.
    pub fn compare(&self, model: &Rows) -> Result<(), String> {
        macro_rules! same {
            ($field:ident, $what:expr) => {
                if self.$field != model.$field {
                    return Err(format!(
                        "{}: store {:#?} != model {:#?}",
                        $what, self.$field, model.$field
                    ));
                }
            };
        }
        same!(structure, "message_structure");
        same!(messages, "agent_messages");
        same!(usage, "turn_usage");
        same!(sessions, "agent_sessions");
        same!(reservations, "branch_reservations");
        same!(generations, "session_clear_generations");
        Ok(())
    }
}

pub const STRUCTURE_ROWS: &str = "SELECT id, session_id, message_id, branch_id, message_type, \
     sequence_number, user_turn_number, branch_turn_number, tool_name FROM message_structure \
     ORDER BY id";
pub const MESSAGE_ROWS: &str =
    "SELECT id, session_id, message_data FROM agent_messages ORDER BY id";
pub const USAGE_ROWS: &str = "SELECT session_id, branch_id, user_turn_number, requests, \
     input_tokens, output_tokens, total_tokens, input_tokens_details, output_tokens_details \
     FROM turn_usage ORDER BY 1, 2, 3";
pub const SESSION_ROWS: &str = "SELECT session_id FROM agent_sessions ORDER BY session_id";
pub const RESERVATION_ROWS: &str =
    "SELECT session_id, branch_id FROM branch_reservations ORDER BY 1, 2";
pub const GENERATION_ROWS: &str =
    "SELECT session_id, generation FROM session_clear_generations ORDER BY 1";

/// Every row of the database at `path` against the model's.
pub fn compare_rows(path: &Path, model: &Model) -> Result<(), String> {
    Rows::of_sqlite(path)?.compare(&Rows::of_model(model)?)
}
