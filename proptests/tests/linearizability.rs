//! Concurrent histories on real threads against a real file store, checked for linearizability
//! against the reference model (a Wing–Gong search): a sequential prefix, then 3 threads × 4-5
//! operations, each thread on its own store handle of the same file.
//!
//! Invariants: I5 (writes linearizable in commit order; reads see a prefix including every write
//! acknowledged before they began), I8 (no item popped twice), I4 (every call answered).
//! Negative control: known non-linearizable histories are rejected by the checker.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};

use agent_sessions::{Op, Outcome, Store};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use proptests::{any_op, cases, linearize, model_apply, write_op, Event};
use serde_json::json;
use session_model::Model;

fn run_history(prefix: &[Op], threads: &[Vec<Op>]) -> (Model, Vec<Event>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lin.db");
    let first = Store::open(&path).unwrap();
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
    let clock = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(threads.len()));
    let workers: Vec<_> = threads
        .iter()
        .enumerate()
        .map(|(t, ops)| {
            let store = Store::open(&path).unwrap();
            let (clock, barrier, ops) = (clock.clone(), barrier.clone(), ops.clone());
            std::thread::spawn(move || {
                barrier.wait();
                ops.into_iter()
                    .map(|op| {
                        let invoked = clock.fetch_add(1, Ordering::SeqCst);
                        let result = store.execute_blocking(op.clone());
                        let returned = clock.fetch_add(1, Ordering::SeqCst);
                        Event {
                            thread: t,
                            op,
                            result,
                            invoked,
                            returned,
                        }
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let history = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    (model, history)
}

#[test]
fn concurrent_histories_are_linearizable() {
    let mut runner = TestRunner::new(Config {
        cases: cases(300),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "regressions/linearizability.txt",
        ))),
        ..Config::default()
    });
    let strategy = (
        prop::collection::vec(write_op(), 0..6),
        prop::collection::vec(prop::collection::vec(any_op(), 4..=5), 3),
    );
    let result = runner.run(&strategy, |(prefix, threads)| {
        let (model, history) = run_history(&prefix, &threads);
        match linearize(&model, &history) {
            Some(_) => Ok(()),
            None => Err(TestCaseError::fail(format!(
                "no linearization of history {history:#?}"
            ))),
        }
    });
    if let Err(e) = result {
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
