//! Advanced sessions under random operation sequences: three real session handles per session
//! (`AdvancedSession`, each with its own branch pointer), branch creation/switch/delete,
//! usage with and without anchors, clears, basic-session writes mixed in, group commits (where a
//! failing request, e.g. a taken branch id, must fail alone) and reopen — on file stores at both
//! durabilities and on `:memory:`.
//! Every answer must equal the model's and every handle's view the model's merge of the views
//! it reported; at the end every row of every table must equal the model's too.
//!
//! Invariants: I6 (group members fail alone, all-or-nothing each), I9 (numbering), I10
//! (structure ↔ messages), I11 (reservations), I12 (generations, pointer resets), I13 (usage
//! anchors), I15 (failed ops change nothing). `PROPTEST_CASES=N` for soak runs.

#[cfg(feature = "postgres")]
mod pg;

use agent_sessions::Durability;
use proptests::advanced::{astep, check_advanced, check_advanced_with, Handles};
use proptests::{assert_full_was_injected, run_property, Kind, SqliteTarget};

fn run(kind: Kind, n: u32) {
    let steps = proptest::collection::vec(astep(), 1..50);
    let verdict = run_property(
        n,
        Some("regressions/advanced_state_machine.txt"),
        steps,
        |steps| check_advanced(&mut SqliteTarget::new(kind), &steps),
    );
    if let Err(e) = verdict {
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
    assert_full_was_injected();
}

#[test]
fn advanced_memory_store_matches_model() {
    run(Kind::Memory, 300);
}

#[test]
fn negative_control_a_handle_that_forgets_its_branch_is_caught() {
    let steps = proptest::collection::vec(astep(), 1..50);
    let verdict = run_property(300, None, steps, |steps| {
        check_advanced_with(
            &mut SqliteTarget::new(Kind::Memory),
            &steps,
            Handles::FreshEveryOp,
        )
    });
    match verdict {
        Err(e) => eprintln!("negative control (forgotten handle state): caught: {e}"),
        Ok(()) => panic!("a handle that forgets its branch pointer went unnoticed"),
    }
}

/// The same Advanced state machine on PostgreSQL: three handles over two pools (two writers,
/// as two hosts) on one schema.
#[cfg(feature = "postgres")]
#[test]
fn advanced_postgres_store_matches_model() {
    let steps = proptest::collection::vec(astep(), 1..50);
    let verdict = run_property(40, None, steps, |steps| {
        check_advanced(&mut pg::PgTarget::new(), &steps)
    });
    if let Err(e) = verdict {
        panic!("{e}");
    }
}
