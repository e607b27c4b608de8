//! Concurrent histories on real threads against a real file store, checked for linearizability
//! against the reference model (a Wing–Gong search): a sequential prefix, then 3 threads × 4-5
//! operations, each thread on its own store handle of the same file.
//!
//! Invariants: I5 (writes linearizable in commit order; reads see a prefix including every write
//! acknowledged before they began), I8 (no item popped twice), I4 (every call answered).
//! Negative controls: known non-linearizable histories are rejected by the checker, and the
//! real recorder on real threads rejects a store that replies before its COMMIT and one that
//! loses acknowledged adds.

#[cfg(feature = "postgres")]
mod pg;

use agent_sessions::hooks::pool::Faults;
use agent_sessions::{Op, Outcome, Store};
use agent_sessions_model::Model;
use proptest::prelude::*;
use proptests::{
    any_op, linearize, model_apply, record_concurrently, run_property, write_op, Event,
};
use serde_json::json;

/// Check one history: a verdict for `run_property`.
fn linearizable(model: &Model, history: &[Event]) -> Result<(), String> {
    match linearize(model, history) {
        Some(_) => Ok(()),
        None => Err(format!("no linearization of history {history:#?}")),
    }
}

/// How the store under test is broken, for the negative controls.
#[derive(Clone, Copy, PartialEq)]
enum Broken {
    No,
    /// The pool replies to a group before its COMMIT.
    ReplyBeforeCommit,
    /// Every third add is acknowledged without being written (a lost update).
    LosesAdds,
}

fn run_history(prefix: &[Op], threads: &[Vec<Op>]) -> (Model, Vec<Event>) {
    run_broken_history(prefix, threads, Broken::No)
}

fn run_broken_history(prefix: &[Op], threads: &[Vec<Op>], broken: Broken) -> (Model, Vec<Event>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lin.db");
    let faults = Faults {
        reply_before_commit: broken == Broken::ReplyBeforeCommit,
        ..Faults::default()
    };
    let first = Store::builder(&path).faults(faults).open().unwrap();
    let mut model = Model::new();
    for op in prefix {
        let got = first.execute_blocking(op.clone());
        let want = model_apply(&mut model, op);
        assert_eq!(
            proptests::normalize(got),
            proptests::normalize(want),
            "sequential prefix diverged at {op:?}"
        );
    }
    let threads = threads
        .iter()
        .map(|ops| {
            (
                Store::builder(&path).faults(faults).open().unwrap(),
                ops.clone(),
            )
        })
        .collect();
    type Recorder = fn(&Store, &mut usize, Op) -> (Op, Result<Outcome, agent_sessions::Error>);
    let honest: Recorder = |store, _, op| {
        let result = store.execute_blocking(op.clone());
        (op, result)
    };
    // Each thread acknowledges its third, sixth, ... add without writing it.
    let lossy: Recorder = |store, adds, op| {
        if matches!(op, Op::AddItems { .. }) {
            *adds += 1;
            if *adds % 3 == 0 {
                return (op, Ok(Outcome::Done));
            }
        }
        let result = store.execute_blocking(op.clone());
        (op, result)
    };
    let call = if broken == Broken::LosesAdds {
        lossy
    } else {
        honest
    };
    let history = record_concurrently(threads, || 0usize, call);
    (model, history)
}

/// The real recorder and checker, run on real threads against a broken store, must reject
/// some history: the checker is shown able to fail on what it is meant to catch, not only on
/// hand-built histories.
fn expect_rejected(broken: Broken, what: &str) {
    let strategy = (
        prop::collection::vec(write_op(), 0..3),
        prop::collection::vec(prop::collection::vec(any_op(), 4..=5), 3),
    );
    let verdict = run_property(100, None, strategy, |(prefix, threads)| {
        let (model, history) = run_broken_history(&prefix, &threads, broken);
        linearizable(&model, &history)
    });
    match verdict {
        Err(e) => eprintln!(
            "negative control {what}: rejected ({} chars of minimal history)",
            e.len()
        ),
        Ok(()) => panic!("negative control {what}: every history was accepted"),
    }
}

#[test]
fn negative_control_store_replying_before_commit_is_rejected() {
    expect_rejected(Broken::ReplyBeforeCommit, "reply before commit");
}

#[test]
fn negative_control_store_losing_updates_is_rejected() {
    expect_rejected(Broken::LosesAdds, "lost update");
}

#[test]
fn concurrent_histories_are_linearizable() {
    let strategy = (
        prop::collection::vec(write_op(), 0..6),
        prop::collection::vec(prop::collection::vec(any_op(), 4..=5), 3),
    );
    let verdict = run_property(
        300,
        Some("regressions/linearizability.txt"),
        strategy,
        |(prefix, threads)| {
            let (model, history) = run_history(&prefix, &threads);
            linearizable(&model, &history)
        },
    );
    if let Err(e) = verdict {
        panic!("{e}");
    }
}

fn event(thread: usize, op: Op, result: Outcome, invoked: u64, returned: u64) -> Event {
    Event {
        thread,
        op,
        result: Ok(result),
        invoked,
        returned,
    }
}

fn add(x: i64) -> Op {
    Op::AddItems {
        session: "s".into(),
        items: vec![json!(x)],
    }
}

fn get() -> Op {
    Op::GetItems {
        session: "s".into(),
        limit: None,
    }
}

#[test]
fn checker_accepts_overlapping_operations_in_either_order() {
    // The read overlaps the add: seeing it or not are both linearizable.
    for seen in [vec![], vec![json!(1)]] {
        let history = vec![
            event(0, add(1), Outcome::Done, 0, 3),
            event(1, get(), Outcome::Items(seen.clone()), 1, 2),
        ];
        assert!(linearize(&Model::new(), &history).is_some(), "{seen:?}");
    }
}

#[test]
fn negative_control_stale_read_is_rejected() {
    // The add returned (t=1) before the read began (t=2), yet the read missed it.
    let history = vec![
        event(0, add(1), Outcome::Done, 0, 1),
        event(1, get(), Outcome::Items(vec![]), 2, 3),
    ];
    assert!(linearize(&Model::new(), &history).is_none());
}

#[test]
fn negative_control_double_pop_is_rejected() {
    let pop = Op::PopItem {
        session: "s".into(),
    };
    let mut model = Model::new();
    model
        .apply(&Op::AddItems {
            session: "s".into(),
            items: vec![json!(1), json!(2)],
        })
        .unwrap();
    let history = vec![
        event(0, pop.clone(), Outcome::Popped(Some(json!(2))), 0, 3),
        event(1, pop, Outcome::Popped(Some(json!(2))), 1, 2),
    ];
    assert!(linearize(&model, &history).is_none());
}

#[test]
fn negative_control_lost_update_is_rejected() {
    // Two adds both acknowledged, but a later read sees only one of them.
    let history = vec![
        event(0, add(1), Outcome::Done, 0, 2),
        event(1, add(2), Outcome::Done, 1, 3),
        event(2, get(), Outcome::Items(vec![json!(2)]), 4, 5),
    ];
    assert!(linearize(&Model::new(), &history).is_none());
}

// ---- Advanced: several handles, clears and switches ------------------------------------------

mod advanced {
    use super::*;
    use agent_sessions::hooks::pointer::BranchPointer;
    use agent_sessions_model::advanced::AdvancedOp;

    fn user(t: &str) -> serde_json::Value {
        json!({"role": "user", "content": t})
    }

    /// Operations of thread `t`: branch names are per thread so creations can succeed.
    fn op(t: usize) -> impl Strategy<Value = AdvancedOp> {
        let mine = format!("t{t}");
        prop_oneof![
            3 => prop::sample::select(vec!["q", "r"]).prop_map(|c| AdvancedOp::AddItems { items: vec![user(c)] }),
            1 => Just(AdvancedOp::PopItem),
            2 => prop::sample::select(vec!["main".to_owned(), mine.clone(), "t0".into()])
                .prop_map(|b| AdvancedOp::SwitchToBranch { branch: b }),
            2 => (1..3i64).prop_map(move |turn| AdvancedOp::CreateBranchFromTurn {
                turn, name: Some(mine.clone()), now_unix: 0 }),
            1 => Just(AdvancedOp::Clear),
            2 => Just(AdvancedOp::GetItems { limit: None, branch: None }),
            1 => Just(AdvancedOp::ListBranches),
        ]
    }

    fn run(threads: &[Vec<AdvancedOp>]) -> (Model, Vec<Event>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lin-adv.db");
        let open = || {
            Store::builder(&path)
                .create_structure_tables(true)
                .open()
                .unwrap()
        };
        let first = open();
        let mut model = Model::new();
        model.apply(&Op::Init { structure: true }).unwrap();
        let setup = Op::Advanced {
            session: "s".into(),
            view: agent_sessions_model::advanced::HandleView::main(),
            op: AdvancedOp::AddItems {
                items: vec![user("one"), user("two")],
            },
        };
        let want = model_apply(&mut model, &setup);
        assert_eq!(
            proptests::normalize(first.execute_blocking(setup)),
            proptests::normalize(want)
        );
        let threads = threads.iter().map(|ops| (open(), ops.clone())).collect();
        // Each thread is one handle: its own branch pointer, merged after every call.
        let history = record_concurrently(threads, BranchPointer::new, |store, pointer, op| {
            let (sent, op) = pointer.prepare("s", op);
            let result = store.execute_blocking(op.clone());
            if let Ok(o) = &result {
                pointer.finish(&sent, o.clone()).unwrap();
            }
            (op, result)
        });
        (model, history)
    }

    /// Each operation carries the view its handle sent, so the model can replay it exactly:
    /// the history must have a real-time-consistent order with the model's outcomes (I5, I12).
    #[test]
    fn advanced_histories_with_clears_and_switches_are_linearizable() {
        let strategy = (
            prop::collection::vec(op(0), 3..=4),
            prop::collection::vec(op(1), 3..=4),
            prop::collection::vec(op(2), 3..=4),
        );
        let regressions = Some("regressions/linearizability_advanced.txt");
        let verdict = run_property(150, regressions, strategy, |(a, b, c)| {
            let (model, history) = run(&[a, b, c]);
            linearizable(&model, &history)
        });
        if let Err(e) = verdict {
            panic!("{e}");
        }
    }
}

/// Concurrent histories on PostgreSQL, each thread on a pool of its own (its own writer
/// connection, as separate hosts would have): the server-side lock protocol alone orders their
/// writes, and the history must still be linearizable.
#[cfg(feature = "postgres")]
#[test]
fn concurrent_histories_across_writers_on_postgres_are_linearizable() {
    let strategy = (
        prop::collection::vec(write_op(), 0..6),
        prop::collection::vec(prop::collection::vec(any_op(), 4..=5), 3),
    );
    let verdict = run_property(150, None, strategy, |(prefix, threads)| {
        let (_, url) = pg::fresh_schema("lin");
        let open = |host: usize| {
            Store::builder(format!("{url}&application_name=host{host}"))
                .open()
                .unwrap()
        };
        let first = open(0);
        let mut model = Model::new();
        for op in &prefix {
            let got = first.execute_blocking(op.clone());
            let want = model_apply(&mut model, op);
            assert_eq!(
                proptests::normalize(got),
                proptests::normalize(want),
                "sequential prefix diverged at {op:?}"
            );
        }
        let threads = threads
            .iter()
            .enumerate()
            .map(|(i, ops)| (open(i + 1), ops.clone()))
            .collect();
        let history = record_concurrently(
            threads,
            || (),
            |store, _, op| {
                let result = store.execute_blocking(op.clone());
                (op, result)
            },
        );
        first.close();
        linearizable(&model, &history)
    });
    if let Err(e) = verdict {
        panic!("{e}");
    }
}

/// Histories of several processes (hosts) on one PostgreSQL session: each child process runs a
/// few adds, pops and limited reads through its own store and reports when each call was invoked
/// and returned (the machine's wall clock, shared by the processes); the parent checks the merged
/// history against the model. Child entry point: `postgres_history_child` (ignored: run by the
/// parent only).
#[cfg(feature = "postgres")]
#[test]
fn concurrent_histories_across_processes_on_postgres_are_linearizable() {
    let cases = proptests::cases(12);
    if let Err(e) = process_histories(cases, false) {
        panic!("{e}");
    }
    eprintln!("{cases} histories of 3 processes × 6 calls on one session: linearizable");
}

/// The same recorder and checker, with children whose pools reply before they commit, must
/// reject some history.
#[cfg(feature = "postgres")]
#[test]
fn negative_control_processes_replying_before_commit_are_rejected() {
    match process_histories(40, true) {
        Err(e) => eprintln!(
            "negative control (processes replying before commit): rejected: {} chars",
            e.len()
        ),
        Ok(()) => {
            panic!("40 histories of processes that reply before committing were all accepted")
        }
    }
}

/// Run `cases` histories of 3 child processes; the first one that is not linearizable.
#[cfg(feature = "postgres")]
fn process_histories(cases: u32, broken: bool) -> Result<(), String> {
    use std::process::Command;
    for case in 0..cases {
        let (_, url) = pg::fresh_schema("mp");
        let start = now_ns() + 300_000_000; // all children begin together
        let children: Vec<_> = (0..3)
            .map(|child| {
                Command::new(std::env::current_exe().unwrap())
                    .args([
                        "--ignored",
                        "--exact",
                        "postgres_history_child",
                        "--nocapture",
                    ])
                    .env("LIN_URL", &url)
                    .env("LIN_CHILD", child.to_string())
                    .env("LIN_SEED", (case * 7 + child).to_string())
                    .env("LIN_START", start.to_string())
                    .env("LIN_BROKEN", if broken { "1" } else { "0" })
                    .output()
                    .unwrap()
            })
            .collect();
        let mut history = Vec::new();
        for (child, out) in children.iter().enumerate() {
            assert!(
                out.status.success(),
                "child {child}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let Some(json) = line.strip_prefix("EVENT ") else {
                    continue;
                };
                let v: serde_json::Value = serde_json::from_str(json).unwrap();
                let session = "s".to_owned();
                let (op, result) = match v["op"].as_str().unwrap() {
                    "add" => (
                        Op::AddItems {
                            session,
                            items: vec![v["item"].clone()],
                        },
                        Ok(Outcome::Done),
                    ),
                    "pop" => (
                        Op::PopItem { session },
                        Ok(Outcome::Popped(
                            (!v["out"].is_null()).then(|| v["out"].clone()),
                        )),
                    ),
                    _ => (
                        Op::GetItems {
                            session,
                            limit: v["limit"].as_i64(),
                        },
                        Ok(Outcome::Items(v["out"].as_array().unwrap().clone())),
                    ),
                };
                history.push(proptests::Event {
                    thread: child,
                    op,
                    result,
                    invoked: v["inv"].as_u64().unwrap(),
                    returned: v["ret"].as_u64().unwrap(),
                });
            }
        }
        assert_eq!(history.len(), 3 * 6, "every child reports every call");
        linearizable(&Model::new(), &history).map_err(|e| format!("case {case}: {e}"))?;
    }
    Ok(())
}

#[cfg(feature = "postgres")]
fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// One child process of the test above (does nothing unless run by it).
#[cfg(feature = "postgres")]
#[test]
#[ignore]
fn postgres_history_child() {
    let Ok(url) = std::env::var("LIN_URL") else {
        return;
    };
    let child: u64 = std::env::var("LIN_CHILD").unwrap().parse().unwrap();
    let mut seed: u64 = std::env::var("LIN_SEED").unwrap().parse().unwrap();
    let start: u64 = std::env::var("LIN_START").unwrap().parse().unwrap();
    // Its own pool, as another host's: a distinct URL.
    let faults = Faults {
        reply_before_commit: std::env::var("LIN_BROKEN").as_deref() == Ok("1"),
        ..Faults::default()
    };
    let store = Store::builder(format!("{url}&application_name=child{child}"))
        .faults(faults)
        .open()
        .unwrap();
    let session = store.session("s").blocking();
    while now_ns() < start {
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    for k in 0..6 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let inv = now_ns();
        let event = match (seed >> 33) % 4 {
            0 | 1 => {
                let item = json!({"c": child, "k": k});
                session.add_items(vec![item.clone()]).unwrap();
                json!({"op": "add", "item": item})
            }
            2 => json!({"op": "pop", "out": session.pop_item().unwrap()}),
            _ => json!({"op": "get", "limit": 3, "out": session.get_items(Some(3)).unwrap()}),
        };
        let ret = now_ns();
        let mut event = event;
        event["inv"] = json!(inv);
        event["ret"] = json!(ret);
        println!("EVENT {event}");
    }
    store.close();
}
