//! Advanced sessions under random operation sequences: three handles, each with its own branch
//! pointer per session, branch creation/switch/delete, usage with and without anchors, clears,
//! basic-session writes mixed in, group commits (where a failing request, e.g. a taken branch
//! id, must fail alone) and reopen — on file stores at both durabilities and on `:memory:`.
//! Every outcome and every reported handle view must equal the model's; at the end every row of
//! every table must too.
//!
//! Invariants: I6 (group members fail alone, all-or-nothing each), I9 (numbering), I10
//! (structure ↔ messages), I11 (reservations), I12 (generations, pointer resets), I13 (usage
//! anchors), I15 (failed ops change nothing). `PROPTEST_CASES=N` for soak runs.

use agent_sessions::Durability;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use proptests::advanced::{astep, check_advanced, ForgetsViews};
use proptests::{cases, Kind, SqliteTarget};

fn config(n: u32, persist: bool) -> Config {
    Config {
        cases: cases(n),
        failure_persistence: persist.then(|| {
            Box::new(FileFailurePersistence::Direct(
                "regressions/advanced_state_machine.txt",
            )) as _
        }),
        ..Config::default()
    }
}

fn run(kind: Kind, n: u32) {
    let mut runner = TestRunner::new(config(n, true));
    let result = runner.run(&proptest::collection::vec(astep(), 1..50), |steps| {
        let mut target = SqliteTarget::new(kind);
        check_advanced(&mut target, &steps).map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn advanced_file_store_normal_matches_model() {
    run(Kind::File(Durability::Normal), 300);
}

#[test]
fn advanced_file_store_full_matches_model() {
    run(Kind::File(Durability::Full), 100);
}

/// Injected failures: a file capped one page above its empty size. A write that meets the
/// full database changes nothing — messages, structure, usage, reservations, generation, handle
/// view (I6, I15) — and everything else still matches the model.
#[test]
fn advanced_full_database_failures_change_nothing() {
    run(Kind::TightFile(21), 200);
    let seen = proptests::FULL_SEEN.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("full-database failures injected: {seen}");
    assert!(
        seen > 0,
        "the capped file never filled up: nothing was injected"
    );
}

#[test]
fn advanced_memory_store_matches_model() {
    run(Kind::Memory, 300);
}

#[test]
fn negative_control_a_handle_that_forgets_its_branch_is_caught() {
    let mut runner = TestRunner::new(config(300, false));
    let result = runner.run(&proptest::collection::vec(astep(), 1..50), |steps| {
        let mut target = ForgetsViews(SqliteTarget::new(Kind::Memory));
        check_advanced(&mut target, &steps).map_err(TestCaseError::fail)
    });
    match result {
        Err(e) => eprintln!("negative control (forgotten handle state): caught: {e}"),
        Ok(()) => panic!("a handle that forgets its branch pointer went unnoticed"),
    }
}
