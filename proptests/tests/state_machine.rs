//! Random operation sequences on the real SQLite store (file at both durabilities, and
//! `:memory:`), two handles per file, group commits and reopen, compared step by step with the
//! reference model, then the whole database compared at the end.
//!
//! Invariants: I5 (group order = commit order, reads see acknowledged writes), I6 (a group's
//! writes all land), I8 (pop), I9 (order = commit order), persistence across reopen.
//! Negative controls: a store that drops one add in N, and one that reorders a batch, must be
//! caught. `PROPTEST_CASES=N` raises the case count for soak runs.

#[cfg(feature = "postgres")]
mod pg;

use agent_sessions::Durability;
use proptests::{
    assert_full_was_injected, check_sequence, run_property, step, DropsAdds, Kind, ReordersBatches,
    SqliteTarget, Target,
};

fn run(kind: Kind, n: u32) {
    let steps = proptest::collection::vec(step(), 1..40);
    let verdict = run_property(n, Some("regressions/state_machine.txt"), steps, |steps| {
        check_sequence(&mut SqliteTarget::new(kind), &steps)
    });
    if let Err(e) = verdict {
        panic!("{e}");
    }
}

#[test]
fn file_store_normal_matches_model() {
    run(Kind::File(Durability::Normal), 1000);
}

#[test]
fn file_store_full_matches_model() {
    run(Kind::File(Durability::Full), 200);
}

/// Injected failures: the file is capped a few pages above its empty size, so adds (and a
/// group's members) meet "database or disk is full". A full write must change nothing (I6, I15)
/// and the store must go on: every other outcome and the final rows still equal the model's.
#[test]
fn full_database_failures_change_nothing() {
    run(Kind::TightFile(22), 300);
    assert_full_was_injected();
}

#[test]
fn memory_store_matches_model() {
    run(Kind::Memory, 1000);
}

fn expect_caught(make: impl Fn() -> Box<dyn Target>, what: &str) {
    let steps = proptest::collection::vec(step(), 1..40);
    match run_property(200, None, steps, |steps| {
        check_sequence(make().as_mut(), &steps)
    }) {
        Err(e) => eprintln!("negative control {what}: caught, minimal case: {e}"),
        Ok(()) => panic!("negative control {what}: the state machine did not catch it"),
    }
}

#[test]
fn negative_control_dropped_adds_are_caught() {
    expect_caught(
        || Box::new(DropsAdds::new(SqliteTarget::new(Kind::Memory), 50)),
        "drops one add in fifty",
    );
}

/// A group step must be one group commit (checked through the pool's statistics), so a writer
/// that commits each request alone is caught.
#[test]
fn negative_control_writer_that_never_groups_is_caught() {
    expect_caught(
        || Box::new(SqliteTarget::new(Kind::MemoryUngrouped)),
        "commits every request alone",
    );
}

#[test]
fn negative_control_reordered_batches_are_caught() {
    expect_caught(
        || Box::new(ReordersBatches(SqliteTarget::new(Kind::Memory))),
        "reorders a batch",
    );
}

/// The same state machine on PostgreSQL, two pools (two writers) on one schema.
#[cfg(feature = "postgres")]
#[test]
fn postgres_store_matches_model() {
    let steps = proptest::collection::vec(step(), 1..40);
    let verdict = run_property(60, None, steps, |steps| {
        check_sequence(&mut pg::PgTarget::new(), &steps)
    });
    if let Err(e) = verdict {
        panic!("{e}");
    }
}
