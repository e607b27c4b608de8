//! Advanced-session semantics (SPEC §5.3) on real SQLite files, scenario by scenario. Every
//! operation runs through a real session handle (`AdvancedSession`, its branch pointer
//! included) and on the reference model and must give the same answer; the handle's view must
//! equal the model's merge of the views it reported; after every operation the whole database —
//! every row of every table, by the property tests' comparator — must equal the model's rows
//! (I9-I13, I15). Random sequences of the same operations are the Advanced state machine's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use agent_sessions::testing::Model;
use agent_sessions::{
    AdvancedAnswer, AdvancedOp, AdvancedSession, Error, HandleView, Op, Outcome, Store,
    StructureStatus, Usage,
};
use agent_sessions_model::advanced::{classify, tool_name};
use agent_sessions_model::TurnAnchor;
use proptests::advanced::{compare_rows, Rows};
use rusqlite::{Connection, OpenFlags};
use serde_json::{json, Value};

/// A real handle and the model's view of it (the oracle).
struct Handle {
    session: String,
    real: AdvancedSession,
    oracle: HandleView,
}

/// A file store and the model, run in lockstep, with named real handles.
struct Twin {
    _dir: tempfile::TempDir,
    path: PathBuf,
    store: Store,
    model: Model,
    /// Handle name → handle. A handle belongs to one session.
    handles: BTreeMap<String, Handle>,
    /// The last operation run, named when the rows differ.
    last_op: String,
}

impl Twin {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("adv.db");
        let store = Store::builder(&path)
            .create_structure_tables(true)
            .open()
            .unwrap();
        let mut model = Model::new();
        model.apply(&Op::Init { structure: true }).unwrap();
        let twin = Twin {
            _dir: dir,
            path,
            store,
            model,
            handles: BTreeMap::new(),
            last_op: "open".into(),
        };
        twin.assert_same_rows();
        twin
    }

    /// Run `op` on both; assert equal outcomes and equal databases afterwards.
    fn run(&mut self, op: Op) -> Result<Outcome, Error> {
        let want = self.model.apply(&op).map_err(Error::from);
        let got = self.store.execute_blocking(op.clone());
        let strip = |r: &Result<Outcome, Error>| r.clone().map(Outcome::without_timestamps);
        assert_eq!(
            strip(&got),
            strip(&want),
            "store and model differ on {op:?}"
        );
        self.last_op = format!("{op:?} -> {got:?}");
        self.assert_same_rows();
        got
    }

    /// Run an Advanced op for `session` through the real handle `handle`; the model runs it with
    /// the oracle's view, whose merge the real handle's view must then equal.
    fn adv(
        &mut self,
        handle: &str,
        session: &str,
        op: AdvancedOp,
    ) -> Result<AdvancedAnswer, Error> {
        if !self.handles.contains_key(handle) {
            let real = self.store.advanced_session(session).unwrap();
            self.handles.insert(
                handle.into(),
                Handle {
                    session: session.into(),
                    real,
                    oracle: HandleView::main(),
                },
            );
        }
        let h = self.handles.get_mut(handle).expect("handle exists");
        assert_eq!(
            h.session, session,
            "handle {handle} belongs to another session"
        );
        let sent = h.oracle.clone();
        let full = Op::Advanced {
            session: session.into(),
            view: sent.clone(),
            op: op.clone(),
        };
        let want = self.model.apply(&full).map_err(Error::from);
        let got = h.real.execute_op_blocking(op);
        let got_answer = answer_only(got.clone().map(|answer| Outcome::Advanced {
            view: HandleView::main(),
            answer,
        }));
        assert_eq!(
            got_answer,
            answer_only(want.clone()),
            "store and model differ on {full:?}"
        );
        if let Ok(Outcome::Advanced { view, .. }) = &want {
            h.oracle.merge(&sent, view);
        }
        assert_eq!(
            h.real.view(),
            h.oracle,
            "handle {handle}: the real view differs from the model's merge after {full:?}"
        );
        self.last_op = format!("{full:?} -> {got:?}");
        self.assert_same_rows();
        got
    }

    fn view(&self, handle: &str) -> HandleView {
        self.handles
            .get(handle)
            .map(|h| h.real.view())
            .unwrap_or_default()
    }

    fn add(&mut self, h: &str, s: &str, items: Vec<Value>) {
        assert_eq!(
            self.adv(h, s, AdvancedOp::AddItems { items }),
            Ok(AdvancedAnswer::Done)
        );
    }

    fn items(&mut self, h: &str, s: &str, branch: Option<&str>) -> Vec<Value> {
        match self.adv(
            h,
            s,
            AdvancedOp::GetItems {
                limit: None,
                branch: branch.map(Into::into),
            },
        ) {
            Ok(AdvancedAnswer::Items(v)) => v,
            other => panic!("{other:?}"),
        }
    }

    fn pop(&mut self, h: &str, s: &str) -> Option<Value> {
        match self.adv(h, s, AdvancedOp::PopItem) {
            Ok(AdvancedAnswer::Popped(v)) => v,
            other => panic!("{other:?}"),
        }
    }

    fn branch(&mut self, h: &str, s: &str, turn: i64, name: Option<&str>) -> Result<String, Error> {
        match self.adv(
            h,
            s,
            AdvancedOp::CreateBranchFromTurn {
                turn,
                name: name.map(Into::into),
                now_unix: 1_700_000_000,
            },
        )? {
            AdvancedAnswer::BranchId(id) => Ok(id),
            other => panic!("{other:?}"),
        }
    }

    fn switch(&mut self, h: &str, s: &str, branch: &str) -> Result<(), Error> {
        self.adv(
            h,
            s,
            AdvancedOp::SwitchToBranch {
                branch: branch.into(),
            },
        )
        .map(|_| ())
    }

    fn record(&mut self, h: &str, s: &str, usage: Usage, anchor: Option<TurnAnchor>) -> bool {
        match self.adv(h, s, AdvancedOp::RecordUsage { usage, anchor }) {
            Ok(AdvancedAnswer::Recorded(b)) => b,
            other => panic!("{other:?}"),
        }
    }

    fn anchor(&mut self, h: &str, s: &str) -> Option<TurnAnchor> {
        match self.adv(h, s, AdvancedOp::CurrentTurn) {
            Ok(AdvancedAnswer::Anchor(a)) => a,
            other => panic!("{other:?}"),
        }
    }

    fn turn_usage(&mut self, h: &str, s: &str, turn: i64) -> Option<Usage> {
        match self.adv(
            h,
            s,
            AdvancedOp::TurnUsage {
                turn: Some(turn),
                branch: None,
            },
        ) {
            Ok(AdvancedAnswer::TurnUsage(u)) => u,
            other => panic!("{other:?}"),
        }
    }

    fn conn(&self) -> Connection {
        Connection::open_with_flags(&self.path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
    }

    /// Every row of every table equals the model's (the property tests' comparator).
    fn assert_same_rows(&self) {
        if let Err(e) = compare_rows(&self.path, &self.model) {
            panic!("rows after {}: {e}", self.last_op);
        }
        let db = self.conn();
        // I9: live sequence numbers unique per session.
        let dupes: i64 = db
            .query_row(
                "SELECT COUNT(*) FROM (SELECT session_id, sequence_number FROM message_structure \
                 GROUP BY 1, 2 HAVING COUNT(*) > 1)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(dupes, 0, "duplicate sequence numbers");
    }
}

/// An outcome's answer without timestamps, the view left out (handle views are compared on
/// their own).
fn answer_only(r: Result<Outcome, Error>) -> Result<Outcome, Error> {
    r.map(|o| match o.without_timestamps() {
        Outcome::Advanced { answer, .. } => Outcome::Advanced {
            view: HandleView::main(),
            answer,
        },
        other => other,
    })
}

fn user(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

fn asst(text: &str) -> Value {
    json!({"role": "assistant", "content": text})
}

fn usage(requests: i64, total: i64) -> Usage {
    Usage {
        requests,
        input_tokens: total - 1,
        output_tokens: 1,
        total_tokens: total,
        input_tokens_details: Some(json!({"cached_tokens": 10})),
        output_tokens_details: None,
    }
}

/// `(message_type, user_turn, branch_turn, sequence)` of a branch's rows, in id order.
fn numbering(t: &Twin, session: &str, branch: &str) -> Vec<(String, i64, i64, i64)> {
    t.model
        .structure_rows(session)
        .into_iter()
        .filter(|r| r.branch_id == branch)
        .map(|r| {
            (
                r.message_type,
                r.user_turn_number,
                r.branch_turn_number,
                r.sequence_number,
            )
        })
        .collect()
}

fn n(ty: &str, turn: i64, seq: i64) -> (String, i64, i64, i64) {
    (ty.into(), turn, turn, seq)
}

#[test]
fn items_before_the_first_user_item_of_a_batch_join_the_previous_turn() {
    let mut t = Twin::new();
    t.add("h", "s", vec![asst("pre")]);
    t.add("h", "s", vec![user("u1"), asst("a1")]);
    t.add(
        "h",
        "s",
        vec![
            asst("late"),
            json!({"type": "function_call", "name": "f", "arguments": "{}"}),
            user("u2"),
            user("u3"),
            json!({"type": "reasoning"}),
        ],
    );
    assert_eq!(
        numbering(&t, "s", "main"),
        vec![
            n("assistant", 0, 1),
            n("user", 1, 2),
            n("assistant", 1, 3),
            n("assistant", 1, 4),
            n("function_call", 1, 5),
            n("user", 2, 6),
            n("user", 3, 7),
            n("reasoning", 3, 8),
        ]
    );
    assert_eq!(t.items("h", "s", None).len(), 8);
    let by_turns = t
        .adv("h", "s", AdvancedOp::ConversationByTurns { branch: None })
        .unwrap();
    let AdvancedAnswer::ByTurns(groups) = by_turns else {
        panic!()
    };
    let shape: Vec<(i64, usize)> = groups.iter().map(|g| (g.turn, g.items.len())).collect();
    assert_eq!(shape, vec![(0, 1), (1, 4), (2, 1), (3, 2)]);
    // Turn 0 can carry usage.
    let mut fresh = Twin::new();
    fresh.add("h", "z", vec![asst("only")]);
    assert!(fresh.record("h", "z", usage(1, 2), None));
    assert_eq!(fresh.turn_usage("h", "z", 0), Some(usage(1, 2)));
}

#[test]
fn branch_from_turn_one_is_empty_current_and_unlisted() {
    let mut t = Twin::new();
    t.add("h", "s", vec![user("u1"), asst("a1"), user("u2")]);
    assert_eq!(t.branch("h", "s", 1, Some("empty")), Ok("empty".into()));
    assert_eq!(t.view("h").branch, "empty");
    assert_eq!(t.items("h", "s", None), Vec::<Value>::new());
    let listed = t.adv("h", "s", AdvancedOp::ListBranches).unwrap();
    let AdvancedAnswer::Branches(list) = listed else {
        panic!()
    };
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].branch_id.as_str(), list[0].is_current),
        ("main", false)
    );
    assert!(matches!(
        t.switch("h", "s", "empty"),
        Err(Error::BranchNotFound(_))
    ));
    // Adding on the empty branch starts its numbering at turn 1, after the session's sequence.
    t.add("h", "s", vec![user("new first")]);
    assert_eq!(numbering(&t, "s", "empty"), vec![n("user", 1, 4)]);
    let view = t.view("h");
    t.run(Op::Advanced {
        session: "s".into(),
        view,
        op: AdvancedOp::ListBranches,
    })
    .unwrap();
}

#[test]
fn generated_branch_ids_within_one_second_get_suffixes_and_ids_are_never_reused() {
    let mut t = Twin::new();
    t.add(
        "h",
        "s",
        vec![user("u1"), asst("a1"), user("u2"), asst("a2")],
    );
    let first = t.branch("h", "s", 2, None).unwrap();
    assert_eq!(first, "branch_from_turn_2_1700000000");
    assert_eq!(
        numbering(&t, "s", &first),
        vec![n("user", 1, 5), n("assistant", 1, 6)]
    );
    t.switch("h", "s", "main").unwrap();
    assert_eq!(t.branch("h", "s", 2, None).unwrap(), format!("{first}_2"));
    t.switch("h", "s", "main").unwrap();
    assert_eq!(t.branch("h", "s", 2, None).unwrap(), format!("{first}_3"));
    t.switch("h", "s", "main").unwrap();
    for taken in ["main", first.as_str()] {
        assert!(matches!(
            t.branch("h", "s", 1, Some(taken)),
            Err(Error::BranchIdUsed(_))
        ));
    }
    // Deleted ids stay reserved.
    t.adv(
        "h",
        "s",
        AdvancedOp::DeleteBranch {
            branch: first.clone(),
            force: false,
        },
    )
    .unwrap();
    assert!(matches!(
        t.branch("h", "s", 2, Some(&first)),
        Err(Error::BranchIdUsed(_))
    ));
    // A taken name is checked after the turn (Python's order).
    assert!(matches!(
        t.branch("h", "s", 9, Some("main")),
        Err(Error::TurnNotFound(_))
    ));
    assert!(matches!(
        t.branch("h", "s", 1, Some(" \t")),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn deleting_a_branch_keeps_messages_another_branch_still_shows() {
    let mut t = Twin::new();
    t.add(
        "h",
        "s",
        vec![user("u1"), asst("a1"), user("u2"), asst("a2")],
    );
    let b = t.branch("h", "s", 2, Some("alt")).unwrap();
    t.add("h", "s", vec![user("alt u2"), asst("alt a2")]);
    let on_branch = t.items("h", "s", None);
    assert_eq!(on_branch.len(), 4);
    assert_eq!(on_branch[..2], [user("u1"), asst("a1")]);
    // The current branch needs force; main never.
    assert!(matches!(
        t.adv(
            "h",
            "s",
            AdvancedOp::DeleteBranch {
                branch: b.clone(),
                force: false
            }
        ),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        t.adv(
            "h",
            "s",
            AdvancedOp::DeleteBranch {
                branch: "main".into(),
                force: true
            }
        ),
        Err(Error::InvalidArgument(_))
    ));
    t.adv(
        "h",
        "s",
        AdvancedOp::DeleteBranch {
            branch: b,
            force: true,
        },
    )
    .unwrap();
    assert_eq!(t.view("h").branch, "main");
    assert_eq!(
        t.items("h", "s", None),
        vec![user("u1"), asst("a1"), user("u2"), asst("a2")]
    );
    // The branch-only messages are gone, the shared ones stay (checked row by row in run()).
    assert_eq!(t.model.message_rows().len(), 4);
    assert!(matches!(
        t.adv(
            "h",
            "s",
            AdvancedOp::DeleteBranch {
                branch: "nope".into(),
                force: false
            }
        ),
        Err(Error::BranchNotFound(_))
    ));
}

#[test]
fn pop_removes_a_turns_usage_only_when_the_turn_is_emptied() {
    let mut t = Twin::new();
    t.add("h", "s", vec![user("u1"), asst("a1")]);
    assert!(t.record("h", "s", usage(1, 10), None));
    t.add("h", "s", vec![user("u2"), asst("a2")]);
    assert!(t.record("h", "s", usage(2, 20), None));
    assert_eq!(t.pop("h", "s"), Some(asst("a2")));
    assert_eq!(t.turn_usage("h", "s", 2), Some(usage(2, 20)));
    assert_eq!(t.pop("h", "s"), Some(user("u2")));
    assert_eq!(t.turn_usage("h", "s", 2), None);
    assert_eq!(t.turn_usage("h", "s", 1), Some(usage(1, 10)));
    // Popping on a branch leaves the message main still shows, and main's usage.
    t.add("h", "s", vec![user("u2 again")]);
    t.branch("h", "s", 2, Some("b")).unwrap();
    assert_eq!(t.pop("h", "s"), Some(asst("a1")));
    assert_eq!(t.pop("h", "s"), Some(user("u1")));
    assert_eq!(t.pop("h", "s"), None);
    t.switch("h", "s", "main").unwrap();
    assert_eq!(t.items("h", "s", None).len(), 3);
    assert_eq!(t.turn_usage("h", "s", 1), Some(usage(1, 10)));
}

#[test]
fn usage_is_replaced_not_added() {
    let mut t = Twin::new();
    t.add("h", "s", vec![user("u1")]);
    assert!(t.record("h", "s", usage(1, 10), None));
    assert!(t.record("h", "s", usage(3, 30), None));
    assert_eq!(t.turn_usage("h", "s", 1), Some(usage(3, 30)));
    let totals = t
        .adv("h", "s", AdvancedOp::SessionUsage { branch: None })
        .unwrap();
    let AdvancedAnswer::SessionUsage(Some(totals)) = totals else {
        panic!("{totals:?}")
    };
    assert_eq!(
        (totals.requests, totals.total_tokens, totals.total_turns),
        (3, 30, 1)
    );
}

#[test]
fn usage_is_skipped_after_pop_and_after_pop_and_recreate_of_the_same_turn() {
    let mut t = Twin::new();
    // No rows yet: nothing to record on.
    assert!(!t.record("h", "s", usage(1, 1), None));
    assert_eq!(t.anchor("h", "s"), None);
    t.add(
        "h",
        "s",
        vec![user("u1"), asst("a1"), user("u2"), asst("a2")],
    );
    let taken = t.anchor("h", "s").unwrap();
    assert_eq!(
        (taken.branch.as_str(), taken.turn, taken.structure_id),
        ("main", 2, 3)
    );
    // The turn is popped before the usage arrives: skipped.
    t.pop("h", "s");
    t.pop("h", "s");
    assert!(!t.record("h", "s", usage(5, 50), Some(taken.clone())));
    // ABA: turn 2 exists again, but it is another incarnation: still skipped.
    t.add("h", "s", vec![user("u2 again")]);
    assert!(!t.record("h", "s", usage(5, 50), Some(taken.clone())));
    assert_eq!(t.turn_usage("h", "s", 2), None);
    // The new incarnation takes usage.
    let now = t.anchor("h", "s").unwrap();
    assert_eq!(now.turn, 2);
    assert_ne!(now, taken);
    assert!(t.record("h", "s", usage(6, 60), Some(now)));
    assert_eq!(t.turn_usage("h", "s", 2), Some(usage(6, 60)));
}

#[test]
fn usage_is_kept_when_an_unrelated_branch_is_deleted() {
    let mut t = Twin::new();
    t.add("h", "s", vec![user("u1"), asst("a1"), user("u2")]);
    let taken = t.anchor("h", "s").unwrap();
    t.branch("h", "s", 2, Some("side")).unwrap();
    t.switch("h", "s", "main").unwrap();
    t.adv(
        "h",
        "s",
        AdvancedOp::DeleteBranch {
            branch: "side".into(),
            force: false,
        },
    )
    .unwrap();
    assert!(t.record("h", "s", usage(2, 7), Some(taken)));
    assert_eq!(t.turn_usage("h", "s", 2), Some(usage(2, 7)));
}

#[test]
fn clear_resets_numbering_and_pointer_and_keeps_reservations() {
    let mut t = Twin::new();
    t.add("h", "s", vec![user("u1"), asst("a1"), user("u2")]);
    t.branch("h", "s", 2, Some("b1")).unwrap();
    t.add("h", "s", vec![user("b1 u2")]);
    assert!(t.record("h", "s", usage(1, 3), None));
    t.add("o", "other", vec![user("untouched")]);
    t.adv("h", "s", AdvancedOp::Clear).unwrap();
    assert_eq!(t.view("h"), HandleView::at("main", 1));
    assert!(t.model.structure_rows("s").is_empty());
    assert_eq!(t.model.reserved_branches("s"), vec!["b1", "main"]);
    assert_eq!(t.items("o", "other", None), vec![user("untouched")]);
    t.add("h", "s", vec![asst("zero"), user("again")]);
    assert_eq!(
        numbering(&t, "s", "main"),
        vec![n("assistant", 0, 1), n("user", 1, 2)]
    );
    assert!(matches!(
        t.branch("h", "s", 1, Some("b1")),
        Err(Error::BranchIdUsed(_))
    ));
    t.adv("h", "s", AdvancedOp::Clear).unwrap();
    assert_eq!(t.view("h").generation, Some(2));
    assert_eq!(t.model.generation_row("s"), Some(2));
    // After a clear main has no rows: switching to it fails, but the pointer is main anyway.
    assert!(matches!(
        t.switch("h", "s", "main"),
        Err(Error::BranchNotFound(_))
    ));
}

#[test]
fn a_clear_by_another_handle_sends_this_handles_next_write_to_main() {
    let mut t = Twin::new();
    t.add("a", "s", vec![user("u1"), asst("a1"), user("u2")]);
    t.branch("a", "s", 2, Some("alt")).unwrap();
    assert_eq!(t.view("a").branch, "alt");
    // Handle b (another object, maybe another process) clears the session.
    t.adv("b", "s", AdvancedOp::Clear).unwrap();
    assert_eq!(t.view("a").branch, "alt", "a has not looked yet");
    t.add("a", "s", vec![user("after the clear")]);
    assert_eq!(t.view("a"), HandleView::at("main", 1));
    assert_eq!(numbering(&t, "s", "main"), vec![n("user", 1, 1)]);
    assert!(numbering(&t, "s", "alt").is_empty());
    // A default-branch read also adopts the new generation; an explicit-branch read does not.
    t.adv("c", "s", AdvancedOp::Clear).unwrap();
    t.items("a", "s", Some("main"));
    assert_eq!(t.view("a").generation, Some(1));
    t.items("a", "s", None);
    assert_eq!(t.view("a").generation, Some(2));
    // A record through a handle that missed a clear is skipped.
    t.add("a", "s", vec![user("x")]);
    t.adv("b", "s", AdvancedOp::Clear).unwrap();
    t.add("b", "s", vec![user("y")]);
    assert!(!t.record("a", "s", usage(1, 1), None));
    assert!(t.record("a", "s", usage(1, 1), None));
}

#[test]
fn handles_through_the_public_api_see_each_others_clears() {
    let store = Store::builder(":memory:")
        .create_structure_tables(true)
        .open()
        .unwrap();
    let a = store.advanced_session("s").unwrap().blocking();
    let b = store.advanced_session("s").unwrap().blocking();
    a.add_items(vec![user("u1"), asst("a1"), user("u2")])
        .unwrap();
    a.create_branch_from_turn(2, Some("alt")).unwrap();
    assert_eq!(a.current_branch_id(), "alt");
    assert_eq!(b.current_branch_id(), "main");
    b.clear_session().unwrap();
    a.add_items(vec![user("lands on main")]).unwrap();
    assert_eq!(a.current_branch_id(), "main");
    assert_eq!(b.get_items(None).unwrap(), vec![user("lands on main")]);
    // Clones are the same handle.
    let a2 = a.handle().clone();
    a.add_items(vec![user("second")]).unwrap();
    a2.blocking()
        .create_branch_from_turn(2, Some("fork"))
        .unwrap();
    assert_eq!(a.current_branch_id(), "fork");
}

#[test]
fn failed_operations_change_neither_rows_nor_handle_state() {
    let mut t = Twin::new();
    t.add("h", "s", vec![user("u1"), asst("a1"), user("u2")]);
    t.branch("h", "s", 2, Some("alt")).unwrap();
    // Another handle clears: the next create by h would refresh to main, then fail on the turn.
    t.adv("x", "s", AdvancedOp::Clear).unwrap();
    let before = t.view("h");
    let rows_before = t.model.clone();
    for op in [
        AdvancedOp::CreateBranchFromTurn {
            turn: 1,
            name: None,
            now_unix: 5,
        },
        AdvancedOp::CreateBranchFromContent {
            term: "nothing".into(),
            name: None,
            now_unix: 5,
        },
        AdvancedOp::SwitchToBranch {
            branch: "alt".into(),
        },
        AdvancedOp::DeleteBranch {
            branch: "alt".into(),
            force: true,
        },
        AdvancedOp::DeleteBranch {
            branch: "".into(),
            force: true,
        },
        AdvancedOp::RecordUsage {
            usage: Usage {
                input_tokens_details: Some(json!(5)),
                ..Usage::default()
            },
            anchor: None,
        },
    ] {
        assert!(t.adv("h", "s", op.clone()).is_err(), "{op:?} should fail");
        assert_eq!(t.view("h"), before, "{op:?} changed the handle");
        assert_eq!(t.model, rows_before, "{op:?} changed the model");
    }
}

/// The classification and tool-name table of the notes (Python 0.24 behaviour, probe + edge
/// cases), checked on the rows the store writes and on the shared functions.
#[test]
fn classification_and_tool_names_follow_the_python_sdk() {
    let table = tool_table();
    for (item, ty, tool) in &table {
        assert_eq!(classify(item), *ty, "type of {item}");
        assert_eq!(tool_name(item).as_deref(), *tool, "tool of {item}");
    }
    let mut t = Twin::new();
    t.add("h", "s", table.iter().map(|(i, _, _)| i.clone()).collect());
    let rows: Vec<(String, Option<String>)> = Rows::of_sqlite(&t.path)
        .unwrap()
        .structure
        .into_iter()
        .map(|r| (r.message_type, r.tool_name))
        .collect();
    let want: Vec<(String, Option<String>)> = table
        .iter()
        .map(|(_, ty, tool)| (ty.to_string(), tool.map(str::to_owned)))
        .collect();
    assert_eq!(rows, want);
}

/// `(item, message_type, tool_name)` as Python 0.24 writes them (notes: probe and edge cases).
#[rustfmt::skip]
fn tool_table() -> Vec<(Value, &'static str, Option<&'static str>)> {
    vec![
        (json!({"role": "user", "content": "x"}), "user", None),
        (json!({"type": "function_call", "call_id": "c", "name": "get_weather", "arguments": "{}"}), "function_call", Some("get_weather")),
        (json!({"type": "function_call_output", "call_id": "c", "output": "x"}), "function_call_output", None),
        (json!({"id": "m", "type": "message", "role": "assistant", "content": []}), "assistant", None),
        (json!({"role": "user", "type": "message", "content": []}), "user", None),
        (json!({"type": "mcp_call", "server_label": "calendar", "name": "list_events"}), "mcp_call", Some("calendar.list_events")),
        (json!({"type": "mcp_list_tools", "server_label": "calendar", "tools": []}), "mcp_list_tools", None),
        (json!({"type": "tool_search_call", "id": "ts"}), "tool_search_call", Some("tool_search")),
        (json!({"type": "tool_search_output", "id": "tso"}), "tool_search_output", Some("tool_search")),
        (json!({"type": "function_call", "name": "lookup", "namespace": "crm"}), "function_call", Some("crm.lookup")),
        (json!({"type": "function_call", "name": "same", "namespace": "same"}), "function_call", Some("same")),
        (json!({"type": "function_call", "name": ""}), "function_call", Some("")),
        (json!({"type": "function_call", "name": "n", "namespace": ""}), "function_call", Some("n")),
        (json!({"type": "shell_call", "action": {}}), "shell_call", Some("shell_call")),
        (json!({"type": "apply_patch_call"}), "apply_patch_call", Some("apply_patch_call")),
        (json!({"type": "web_search_call"}), "web_search_call", Some("web_search_call")),
        (json!({"type": "computer_call"}), "computer_call", Some("computer_call")),
        (json!({"type": "file_search_call"}), "file_search_call", Some("file_search_call")),
        (json!({"type": "code_interpreter_call"}), "code_interpreter_call", Some("code_interpreter_call")),
        (json!({"type": "reasoning", "summary": []}), "reasoning", None),
        (json!({"role": "system", "content": "sys"}), "other", None),
        (json!({"role": "developer", "type": "message", "content": "dev"}), "message", None),
        (json!({"content": "no role no type"}), "other", None),
        (json!({"type": "custom_tool_call", "name": 5}), "custom_tool_call", Some("5")),
        (json!({"type": "mcp_call", "server_label": "srv"}), "mcp_call", Some("srv")),
        (json!({"type": "mcp_approval_request", "server_label": null, "name": "tool"}), "mcp_approval_request", Some("tool")),
        (json!({"type": "mcp_call", "server_label": "", "name": ""}), "mcp_call", None),
        (json!({"type": "mcp_call", "name": "nolabel", "namespace": "ns"}), "mcp_call", Some("ns.nolabel")),
        (json!({"type": "", "name": null}), "other", None),
        (json!({"type": "x", "name": true, "namespace": 1.5}), "x", Some("1.5.True")),
        (json!("a bare string"), "other", None),
        (json!(null), "other", None),
    ]
}

#[test]
fn tool_usage_counts_calls_and_unmatched_tool_search_outputs() {
    let mut t = Twin::new();
    t.add(
        "h",
        "s",
        vec![
            user("t1"),
            json!({"type": "function_call", "name": "get_weather"}),
            json!({"type": "function_call_output", "output": "x"}),
            user("t2"),
            json!({"type": "tool_search_call", "id": "ts_1"}),
            json!({"type": "tool_search_output", "id": "tso_1"}),
            json!({"type": "tool_search_output", "id": "tso_2"}),
            json!({"type": "function_call", "name": "", "namespace": "x"}),
            json!({"type": "shell_call"}),
            json!({"type": "mcp_call", "server_label": "", "name": ""}),
            user("t3"),
            json!({"type": "tool_search_output", "id": "orphan"}),
            json!({"type": "tool_search_output", "id": "orphan2"}),
        ],
    );
    let AdvancedAnswer::Tools(tools) = t
        .adv("h", "s", AdvancedOp::ToolUsage { branch: None })
        .unwrap()
    else {
        panic!()
    };
    let got: Vec<(Option<&str>, i64, i64)> = tools
        .iter()
        .map(|u| (u.tool_name.as_deref(), u.usage_count, u.user_turn_number))
        .collect();
    assert_eq!(
        got,
        vec![
            (Some("get_weather"), 1, 1),
            (None, 1, 2),
            (Some(""), 1, 2),
            (Some("shell_call"), 1, 2),
            (Some("tool_search"), 1, 2),
            (Some("tool_search"), 2, 3),
        ]
    );
}

#[test]
fn turns_and_search_follow_the_sdk() {
    let mut t = Twin::new();
    let long = format!("{}é☃", "x".repeat(99));
    t.add(
        "h",
        "s",
        vec![
            json!({"role": "user", "content": "Find a tool: 100% café_bar \"quoted\""}),
            json!({"role": "user", "content": [{"type": "input_image", "image_url": "u"}, {"type": "input_text", "text": "Weather in ROME"}]}),
            json!({"role": "user", "content": null}),
            json!({"role": "user", "content": long}),
            json!({"role": "user"}),
            json!({"role": "user", "content": ["not", "parts"]}),
            asst("weather is not a user turn"),
        ],
    );
    t.adv(
        "h",
        "s",
        AdvancedOp::PlantRaw {
            data: "{\"role\": \"user\", NaN".into(),
        },
    )
    .unwrap();
    let find = |t: &mut Twin, term: &str| -> Vec<i64> {
        match t.adv(
            "h",
            "s",
            AdvancedOp::FindTurns {
                term: term.into(),
                branch: None,
            },
        ) {
            Ok(AdvancedAnswer::Turns(v)) => v.iter().map(|r| r.turn).collect(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(find(&mut t, "weather"), vec![2]);
    assert_eq!(find(&mut t, "100%"), vec![1]);
    assert_eq!(find(&mut t, "é_b"), vec![1]);
    assert_eq!(find(&mut t, "CAFÉ"), Vec::<i64>::new());
    assert_eq!(find(&mut t, "CAFé"), vec![1]);
    assert_eq!(find(&mut t, "\"quoted\""), vec![1]);
    assert_eq!(find(&mut t, "null"), Vec::<i64>::new());
    assert_eq!(find(&mut t, "role"), Vec::<i64>::new());
    assert_eq!(find(&mut t, "☃"), vec![4]);
    assert_eq!(find(&mut t, ""), vec![1, 2, 4, 5]);
    // Through the public API: previews.
    let a = t.store.advanced_session("s").unwrap().blocking();
    let turns = a.get_conversation_turns(None).unwrap();
    let previews: Vec<(i64, &str)> = turns.iter().map(|t| (t.turn, t.content.as_str())).collect();
    let cut = format!("{}é...", "x".repeat(99));
    assert_eq!(
        previews,
        vec![
            (1, "Find a tool: 100% café_bar \"quoted\""),
            (2, "[{\"type\": \"input_image\", \"image_url\": \"u\"}, {\"type\": \"input_text\", \"text\": \"Weather in ROME\"}]"),
            (3, "null"),
            (4, cut.as_str()),
            (5, ""),
            (6, "[\"not\", \"parts\"]"),
        ]
    );
    assert!(turns
        .iter()
        .all(|t| t.can_branch && !t.timestamp.is_empty()));
    let found = a.find_turns_by_content("xxé☃", None).unwrap();
    assert_eq!(found[0].content, long);
    // Branch from content: the first matching turn.
    let id = a
        .create_branch_from_content("rome", Some("from-rome"))
        .unwrap();
    assert_eq!(id, "from-rome");
    assert_eq!(a.get_items(None).unwrap().len(), 1);
    assert!(matches!(
        a.create_branch_from_content("zzz", None),
        Err(Error::TurnNotFound(m)) if m.contains("zzz")
    ));
}

#[test]
fn limits_corrupt_rows_and_explicit_branch_reads() {
    let mut t = Twin::new();
    t.add("h", "s", vec![user("u1"), asst("a1")]);
    t.adv(
        "h",
        "s",
        AdvancedOp::PlantRaw {
            data: "{broken".into(),
        },
    )
    .unwrap();
    t.adv("h", "s", AdvancedOp::PlantRaw { data: "NaN".into() })
        .unwrap();
    for (limit, want) in [
        (Some(1), 1),
        (Some(2), 2),
        (Some(0), 0),
        (Some(-1), 2),
        (None, 2),
    ] {
        let got = t
            .adv(
                "h",
                "s",
                AdvancedOp::GetItems {
                    limit,
                    branch: None,
                },
            )
            .unwrap();
        assert!(
            matches!(&got, AdvancedAnswer::Items(v) if v.len() == want),
            "{limit:?}: {got:?}"
        );
    }
    // Pop skips (and deletes) the corrupt rows.
    assert_eq!(t.pop("h", "s"), Some(asst("a1")));
    t.branch("h", "s", 1, Some("empty")).unwrap();
    assert_eq!(t.items("h", "s", Some("main")), vec![user("u1")]);
    assert_eq!(t.items("h", "s", Some("nope")), Vec::<Value>::new());
}

#[test]
fn basic_rows_are_invisible_to_advanced_and_removed_by_its_orphan_cleanup() {
    let mut t = Twin::new();
    t.add("h", "s", vec![user("advanced")]);
    t.run(Op::AddItems {
        session: "s".into(),
        items: vec![json!("basic row")],
    })
    .unwrap();
    assert_eq!(t.items("h", "s", None), vec![user("advanced")]);
    // The basic view shows both.
    assert!(matches!(
        t.run(Op::GetItems { session: "s".into(), limit: None }),
        Ok(Outcome::Items(v)) if v.len() == 2
    ));
    assert_eq!(t.pop("h", "s"), Some(user("advanced")));
    assert!(
        t.model.message_rows().is_empty(),
        "the basic row was an orphan"
    );
}

#[test]
fn sqlite_master_holds_python_ddl_text() {
    let t = Twin::new();
    let master: Vec<(String, String, Option<String>)> = t
        .conn()
        .prepare("SELECT type, name, sql FROM sqlite_master ORDER BY rowid")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let names: Vec<&str> = master.iter().map(|(_, n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "agent_sessions",
            "sqlite_autoindex_agent_sessions_1",
            "agent_messages",
            "sqlite_sequence",
            "idx_agent_messages_session_id",
            "message_structure",
            "turn_usage",
            "sqlite_autoindex_turn_usage_1",
            "branch_reservations",
            "sqlite_autoindex_branch_reservations_1",
            "session_clear_generations",
            "sqlite_autoindex_session_clear_generations_1",
            "idx_structure_session_seq",
            "idx_structure_branch",
            "idx_structure_turn",
            "idx_structure_branch_seq",
            "idx_turn_usage_session_turn",
        ]
    );
    let sql = |name: &str| {
        master
            .iter()
            .find(|(_, n, _)| n == name)
            .and_then(|(_, _, s)| s.clone())
            .unwrap()
    };
    // Copied from the Python SDK's file (notes/advanced_dump.txt).
    assert_eq!(sql("message_structure"), "CREATE TABLE message_structure (\n                id INTEGER PRIMARY KEY AUTOINCREMENT,\n                session_id TEXT NOT NULL,\n                message_id INTEGER NOT NULL,\n                branch_id TEXT NOT NULL DEFAULT 'main',\n                message_type TEXT NOT NULL,\n                sequence_number INTEGER NOT NULL,\n                user_turn_number INTEGER,\n                branch_turn_number INTEGER,\n                tool_name TEXT,\n                created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,\n                FOREIGN KEY (session_id)\n                    REFERENCES agent_sessions(session_id) ON DELETE CASCADE,\n                FOREIGN KEY (message_id)\n                    REFERENCES agent_messages(id) ON DELETE CASCADE\n            )");
    assert_eq!(sql("turn_usage"), "CREATE TABLE turn_usage (\n                id INTEGER PRIMARY KEY AUTOINCREMENT,\n                session_id TEXT NOT NULL,\n                branch_id TEXT NOT NULL DEFAULT 'main',\n                user_turn_number INTEGER NOT NULL,\n                requests INTEGER DEFAULT 0,\n                input_tokens INTEGER DEFAULT 0,\n                output_tokens INTEGER DEFAULT 0,\n                total_tokens INTEGER DEFAULT 0,\n                input_tokens_details JSON,\n                output_tokens_details JSON,\n                created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,\n                FOREIGN KEY (session_id)\n                    REFERENCES agent_sessions(session_id) ON DELETE CASCADE,\n                UNIQUE(session_id, branch_id, user_turn_number)\n            )");
    assert_eq!(sql("branch_reservations"), "CREATE TABLE branch_reservations (\n                session_id TEXT NOT NULL,\n                branch_id TEXT NOT NULL,\n                PRIMARY KEY (session_id, branch_id)\n            )");
    assert_eq!(sql("session_clear_generations"), "CREATE TABLE session_clear_generations (\n                session_id TEXT PRIMARY KEY,\n                generation INTEGER NOT NULL DEFAULT 0\n            )");
    assert_eq!(sql("idx_structure_session_seq"), "CREATE INDEX idx_structure_session_seq\n            ON message_structure(session_id, sequence_number)\n        ");
    assert_eq!(sql("idx_turn_usage_session_turn"), "CREATE INDEX idx_turn_usage_session_turn\n            ON turn_usage(session_id, branch_id, user_turn_number)\n        ");
}

fn table_names(path: &Path) -> Vec<String> {
    let db = Connection::open(path).unwrap();
    let names = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    names
}

#[test]
fn ownership_is_checked_and_a_rejected_claim_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("own.db");
    // A fresh file opened without claiming: basic works, Advanced is refused.
    let plain = Store::open(&path).unwrap();
    assert_eq!(plain.structure_status().unwrap(), StructureStatus::Missing);
    assert!(
        matches!(plain.advanced_session("s"), Err(Error::Schema(m)) if m.contains("create_structure_tables"))
    );
    plain.close();
    let claimed = Store::builder(&path)
        .create_structure_tables(true)
        .open()
        .unwrap();
    claimed
        .advanced_session("s")
        .unwrap()
        .blocking()
        .add_items(vec![user("hi")])
        .unwrap();
    claimed.close();
    let before = table_names(&path);
    // Another pair may not claim the same file's structure tables.
    let err = Store::builder(&path)
        .sessions_table("s2")
        .messages_table("m2")
        .create_structure_tables(true)
        .open()
        .err();
    match err {
        Some(Error::Schema(m)) => {
            assert!(
                m.contains("agent_sessions(session_id)/agent_messages(id)") && m.contains("s2/m2"),
                "{m}"
            )
        }
        other => panic!("expected a schema error, got {other:?}"),
    }
    assert_eq!(
        table_names(&path),
        before,
        "the rejected claim left tables behind"
    );
    // Opened as a basic store, the other pair works, but cannot be Advanced.
    let other = Store::builder(&path)
        .sessions_table("s2")
        .messages_table("m2")
        .open()
        .unwrap();
    assert!(matches!(
        other.structure_status().unwrap(),
        StructureStatus::Rejected(_)
    ));
    assert!(matches!(other.advanced_session("s"), Err(Error::Schema(_))));
    other.close();
    // Identifiers compare like SQLite's NOCASE.
    let upper = Store::builder(&path)
        .sessions_table("AGENT_SESSIONS")
        .messages_table("Agent_Messages")
        .open()
        .unwrap();
    assert_eq!(upper.structure_status().unwrap(), StructureStatus::Owned);
    let a = upper.advanced_session("s").unwrap().blocking();
    assert_eq!(a.get_items(None).unwrap(), vec![user("hi")]);
}

#[test]
fn legacy_files_without_helper_tables_work_and_reads_create_nothing() {
    let t = Twin::new();
    t.store
        .advanced_session("s")
        .unwrap()
        .blocking()
        .add_items(vec![user("u1"), asst("a1"), user("u2")])
        .unwrap();
    let path = t.path.clone();
    t.store.close();
    {
        let db = Connection::open(&path).unwrap();
        db.execute_batch("DROP TABLE branch_reservations; DROP TABLE session_clear_generations;")
            .unwrap();
    }
    let store = Store::open(&path).unwrap();
    let a = store.advanced_session("s").unwrap().blocking();
    assert_eq!(a.get_items(None).unwrap().len(), 3);
    assert_eq!(a.list_branches().unwrap().len(), 1);
    assert!(!table_names(&path).contains(&"session_clear_generations".to_string()));
    // A branch operation recreates them and backfills `main`'s reservation.
    assert!(matches!(
        a.create_branch_from_turn(2, Some("main")),
        Err(Error::BranchIdUsed(_))
    ));
    a.create_branch_from_turn(2, Some("b")).unwrap();
    let names = table_names(&path);
    assert!(names.contains(&"branch_reservations".to_string()));
    assert!(names.contains(&"session_clear_generations".to_string()));
}

#[test]
fn usage_reads_and_all_branch_totals() {
    let store = Store::builder(":memory:")
        .create_structure_tables(true)
        .open()
        .unwrap();
    let a = store.advanced_session("s").unwrap().blocking();
    assert_eq!(a.get_session_usage(None).unwrap(), None);
    assert!(a.get_turn_usage(Some(1), None).unwrap().is_empty());
    a.add_items(vec![user("u1")]).unwrap();
    assert!(a.record_usage(usage(1, 10)).unwrap());
    a.add_items(vec![user("u2")]).unwrap();
    assert!(a.record_usage(usage(2, 20)).unwrap());
    a.create_branch_from_turn(2, Some("b")).unwrap();
    a.add_items(vec![user("b2")]).unwrap();
    assert!(a.record_usage(usage(4, 40)).unwrap());
    let all = a.get_session_usage(None).unwrap().unwrap();
    assert_eq!(
        (all.requests, all.total_tokens, all.total_turns),
        (7, 70, 3)
    );
    let b = a.get_session_usage(Some("b")).unwrap().unwrap();
    assert_eq!((b.requests, b.total_turns), (4, 1));
    let main_turns = a.get_turn_usage(None, Some("main")).unwrap();
    assert_eq!(
        main_turns
            .iter()
            .map(|u| (u.user_turn_number, u.usage.requests))
            .collect::<Vec<_>>(),
        vec![(1, 1), (2, 2)]
    );
    let one = a.get_turn_usage(Some(2), None).unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(
        one[0].usage.input_tokens_details,
        Some(json!({"cached_tokens": 10}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_api_and_the_session_trait() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::builder(dir.path().join("a.db"))
        .create_structure_tables(true)
        .open()
        .unwrap();
    let a = store.advanced_session("s").unwrap();
    a.add_items(vec![user("u1"), asst("a1")]).await.unwrap();
    a.add_items(vec![]).await.unwrap();
    assert_eq!(
        a.get_branch_items(Some("main"), Some(1)).await.unwrap(),
        vec![asst("a1")]
    );
    let dynamic: Box<dyn agent_sessions::Session> = Box::new(a.clone());
    dynamic.add_items(vec![user("u2")]).await.unwrap();
    assert_eq!(dynamic.pop_item().await.unwrap(), Some(user("u2")));
    assert_eq!(a.get_conversation_turns(None).await.unwrap().len(), 1);
    assert_eq!(
        a.get_conversation_by_turns(None).await.unwrap()[0]
            .items
            .len(),
        2
    );
    assert!(a.current_turn().await.unwrap().is_some());
    dynamic.clear_session().await.unwrap();
    assert_eq!(a.view().generation, Some(1));
    store.close();
    assert_eq!(a.add_items(vec![]).await, Err(Error::Closed));
    assert_eq!(a.list_branches().await, Err(Error::Closed));
}

/// Writers on several handles and threads: every structure row keeps a message, sequence
/// numbers stay unique, each batch is contiguous (I9, I10).
#[test]
fn concurrent_handles_keep_structure_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let store = Store::builder(&path)
        .create_structure_tables(true)
        .open()
        .unwrap();
    let threads: Vec<_> = (0..4)
        .map(|w| {
            let a = store.advanced_session("shared").unwrap().blocking();
            std::thread::spawn(move || {
                for i in 0..40 {
                    a.add_items(vec![
                        user(&format!("w{w} u{i}")),
                        asst(&format!("w{w} a{i}")),
                    ])
                    .unwrap();
                    if i % 7 == 3 {
                        a.pop_item().unwrap();
                    }
                    if i % 13 == 5 {
                        let _ = a.create_branch_from_turn(1, None);
                        a.switch_to_branch("main").unwrap();
                    }
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    let db = Connection::open(&path).unwrap();
    let dangling: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM message_structure s LEFT JOIN agent_messages m \
             ON m.id = s.message_id WHERE m.id IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let unstructured: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM agent_messages m WHERE NOT EXISTS \
             (SELECT 1 FROM message_structure s WHERE s.message_id = m.id)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let dupes: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM (SELECT sequence_number FROM message_structure \
             GROUP BY 1 HAVING COUNT(*) > 1)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!((dangling, unstructured, dupes), (0, 0, 0));
    // Each add batch (a user item + its assistant) sits on consecutive sequence numbers (I9):
    // every user item on main whose assistant partner is still there (pops may have taken it)
    // is directly followed by it, in sequence numbers and message ids.
    let main_rows: Vec<(String, i64, i64)> = db
        .prepare(
            "SELECT m.message_data, s.sequence_number, s.message_id FROM message_structure s \
             JOIN agent_messages m ON m.id = s.message_id \
             WHERE s.branch_id = 'main' ORDER BY s.sequence_number",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let by_content: BTreeMap<String, (i64, i64)> = main_rows
        .iter()
        .map(|(data, seq, id)| {
            let v: Value = serde_json::from_str(data).unwrap();
            (v["content"].as_str().unwrap().to_owned(), (*seq, *id))
        })
        .collect();
    let mut pairs = 0;
    for (content, (seq, id)) in &by_content {
        let Some((worker, i)) = content.split_once(" u") else {
            continue; // an assistant item
        };
        let partner = format!("{worker} a{i}");
        if let Some((partner_seq, partner_id)) = by_content.get(&partner) {
            assert_eq!(
                (*partner_seq, *partner_id),
                (seq + 1, id + 1),
                "{content:?} and {partner:?} are not adjacent"
            );
            pairs += 1;
        }
    }
    assert!(pairs > 0, "no complete batch left on main to check");
}

#[test]
fn a_new_handle_adopts_the_generation_it_finds() {
    let mut t = Twin::new();
    t.add("old", "s", vec![user("u1")]);
    t.adv("old", "s", AdvancedOp::Clear).unwrap();
    t.adv("old", "s", AdvancedOp::Clear).unwrap();
    // A handle created after the clears is not stale: it records on the turn it finds.
    t.add("new", "s", vec![user("u1 again")]);
    assert_eq!(t.view("new"), HandleView::at("main", 2));
    assert!(t.record("fresh", "s", usage(1, 1), None));
    assert_eq!(t.view("fresh"), HandleView::at("main", 2));
}

/// Foreign keys stay off, as in Python: the schema's `ON DELETE CASCADE`s never fire (the
/// bundled SQLite would enable them by default).
#[test]
fn foreign_keys_are_off_as_in_python() {
    let mut t = Twin::new();
    t.add("h", "s", vec![user("u1"), asst("a1")]);
    // A basic pop deletes the message only; its structure row stays (dangling), as in Python.
    t.run(Op::PopItem {
        session: "s".into(),
    })
    .unwrap();
    assert_eq!(t.model.structure_rows("s").len(), 2);
    // A basic clear leaves structure rows too; Advanced reads skip rows without a message.
    t.run(Op::ClearSession {
        session: "s".into(),
    })
    .unwrap();
    assert_eq!(t.model.structure_rows("s").len(), 2);
    assert!(t.items("h", "s", None).is_empty());
    // Advanced pop claims the dangling rows and finds nothing valid.
    assert_eq!(t.pop("h", "s"), None);
    assert!(t.model.structure_rows("s").is_empty());
}

/// Two racing claims on threads: exactly one pair wins, and the losers leave no table behind
/// (the CLI tests race processes).
#[test]
fn racing_claims_have_exactly_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("race.db");
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let path = path.clone();
            std::thread::spawn(move || {
                Store::builder(&path)
                    .sessions_table(format!("s{i}"))
                    .messages_table(format!("m{i}"))
                    .create_structure_tables(true)
                    .open()
                    .map(|store| store.close())
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    assert!(results
        .iter()
        .all(|r| matches!(r, Ok(()) | Err(Error::Schema(_)))));
    let tables = table_names(&path);
    let pairs = tables
        .iter()
        .filter(|t| t.starts_with('s') && t.len() == 2)
        .count();
    assert_eq!(pairs, 1, "{tables:?}");
}

/// Deliberately not Python: force-deleting the current branch always lands on `main`, even when
/// `main` has no rows (Python first switches to `main`, which then fails with "does not exist").
#[test]
fn force_deleting_the_current_branch_lands_on_main_even_when_main_is_empty() {
    let mut t = Twin::new();
    t.add("h", "s", vec![user("u1")]);
    t.branch("h", "s", 1, Some("e")).unwrap();
    t.add("h", "s", vec![user("on e")]);
    t.switch("h", "s", "main").unwrap();
    assert_eq!(t.pop("h", "s"), Some(user("u1")));
    t.switch("h", "s", "e").unwrap();
    t.adv(
        "h",
        "s",
        AdvancedOp::DeleteBranch {
            branch: "e".into(),
            force: true,
        },
    )
    .unwrap();
    assert_eq!(t.view("h").branch, "main");
    assert!(t.model.structure_rows("s").is_empty());
    assert!(t.model.message_rows().is_empty());
}

/// Replace (the compaction primitive) on an Advanced session: an Advanced clear then an add on
/// `main`, in one transaction; every handle moves to `main` at the new generation, branch ids
/// stay reserved, rows equal the model's.
#[test]
fn replace_items_clears_structure_and_adds_on_main_atomically() {
    let mut t = Twin::new();
    t.add(
        "h",
        "s",
        vec![user("u1"), json!({"role": "assistant", "content": "a1"})],
    );
    t.branch("h", "s", 1, Some("alt")).unwrap();
    t.add("h", "s", vec![user("on alt")]);
    assert!(t.record("h", "s", usage(1, 5), None));
    t.adv(
        "h",
        "s",
        AdvancedOp::ReplaceItems {
            items: vec![
                user("summary"),
                json!({"role": "assistant", "content": "ok"}),
            ],
        },
    )
    .unwrap();
    assert_eq!(t.view("h").branch, "main");
    assert_eq!(
        t.items("h", "s", None),
        vec![
            user("summary"),
            json!({"role": "assistant", "content": "ok"})
        ]
    );
    assert_eq!(t.items("other", "s", None).len(), 2);
    // The old branch id stays reserved.
    assert!(matches!(
        t.branch("h", "s", 1, Some("alt")),
        Err(Error::BranchIdUsed(_))
    ));
    assert_eq!(t.turn_usage("h", "s", 1), None);
}

/// Prune on a file with structure tables: idle sessions go with all their Advanced rows (their
/// generation bumped, reservations kept); fresh ones stay; a dry run changes nothing.
#[test]
fn prune_takes_idle_sessions_with_their_advanced_rows() {
    let mut t = Twin::new();
    t.add("h", "fresh", vec![user("recent")]);
    t.run(Op::Import(agent_sessions::SessionDump {
        session_id: "old".into(),
        created_at: Some("2001-01-01 00:00:00".into()),
        updated_at: Some("2001-01-01 00:00:00".into()),
        messages: vec![],
    }))
    .unwrap();
    t.add("o", "old", vec![user("hello")]); // touches updated_at: no longer idle
    t.run(Op::Import(agent_sessions::SessionDump {
        session_id: "idle".into(),
        created_at: Some("2001-01-01 00:00:00".into()),
        updated_at: Some("2001-01-01 00:00:00".into()),
        messages: vec![agent_sessions_model::RawMessage {
            message_data: "\"imported\"".into(),
            created_at: "2001-01-01 00:00:00".into(),
        }],
    }))
    .unwrap();
    let prune = |dry_run| Op::PruneSessions {
        idle_before: "2020-01-01 00:00:00".into(),
        dry_run,
        max: 10,
    };
    let listed = |o: Outcome| match o {
        Outcome::Sessions(list) => list.into_iter().map(|s| s.session_id).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    assert_eq!(listed(t.run(prune(true)).unwrap()), vec!["idle"]);
    assert_eq!(listed(t.run(prune(false)).unwrap()), vec!["idle"]);
    assert!(listed(t.run(prune(false)).unwrap()).is_empty());
    assert_eq!(t.items("h", "fresh", None), vec![user("recent")]);
    assert!(matches!(
        t.run(Op::PruneSessions {
            idle_before: "yesterday".into(),
            dry_run: true,
            max: 1
        }),
        Err(Error::InvalidArgument(_))
    ));
}

/// A structure table dropped behind the store's back (another program): Advanced operations
/// fail with the schema error that names the fix, not SQLite's bare "no such table", and the
/// messages are untouched.
#[test]
fn a_structure_table_dropped_by_another_program_is_a_clear_schema_error() {
    for table in ["message_structure", "turn_usage"] {
        let t = Twin::new();
        let db = Connection::open(&t.path).unwrap();
        db.execute_batch(&format!("DROP TABLE {table}")).unwrap();
        let a = t.store.advanced_session("s").unwrap().blocking();
        let err = if table == "turn_usage" {
            a.get_session_usage(None).unwrap_err()
        } else {
            a.add_items(vec![user("lost?")]).unwrap_err()
        };
        assert!(
            matches!(&err, Error::Schema(m) if m.contains("create_structure_tables(true)")),
            "{table}: {err:?}"
        );
        let messages: i64 = db
            .query_row("SELECT COUNT(*) FROM agent_messages", [], |r| r.get(0))
            .unwrap();
        assert_eq!(messages, 0, "{table}: a failed add left messages behind");
        // One of the pair left is not "missing" (a fresh opener would not create it): rejected,
        // with the reason.
        let status = t.store.structure_status().unwrap();
        assert!(
            matches!(&status, StructureStatus::Rejected(why) if why.contains(table)),
            "{table}: {status:?}"
        );
    }
}
