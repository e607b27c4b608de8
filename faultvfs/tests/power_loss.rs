//! Power loss at chosen points under the real store.
//!
//! Each case runs a random sequence (basic or Advanced; several sessions; single requests and
//! held-writer groups; reopens) on a store opened through the fault-injecting VFS, comparing
//! every answer with the reference model and noting, after each write step, how many file
//! events (creates, writes, truncates, syncs, deletes) had happened when its acknowledgement
//! arrived, and the model's state then. Then, at crash points chosen in that trace (just
//! before and just after syncs, and at random), it builds the files a power loss there could
//! leave — unsynced writes all dropped, all kept, a random subset, or the last one torn —
//! reopens a store on them and requires:
//!
//! - `integrity_check` ok, and a store opens on the files with nothing done by hand and serves
//!   a write and a read;
//! - the rows (every table, via `proptests::advanced::compare_rows`) equal the model after
//!   some prefix of the write steps — never a group in part (I6);
//! - `Durability::Full` (and any durability when every unsynced write survived, i.e. a process
//!   crash): that prefix holds every acknowledged step, and at most the one step in flight
//!   beyond it;
//! - `Durability::Normal`: the lost suffix of acknowledged steps is counted and reported.
//!
//! Negative controls (each must be caught): a store that acknowledges before its COMMIT, a
//! writer at `synchronous=OFF` claiming Full, a group committed as two transactions.
//! `AGENT_SESSIONS_VFS_CASES=N` runs N cases per property (a soak).

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use agent_sessions::hooks::pool::Faults;
use agent_sessions::{Durability, Store};
use agent_sessions_model::Model;
use common::{
    adv_steps, basic_steps, cases, integrity, run_property, serves, tmpdir, Live, Mode, S,
};
use faultvfs::{Event, Loss, Replay, Rng};
use proptest::prelude::*;
use proptests::advanced::compare_rows;

/// Crash points examined per case.
const POINTS_PER_CASE: usize = 12;

#[derive(Default)]
struct Counts {
    cases: AtomicU64,
    points: AtomicU64,
    /// Crash points where some write was not yet synced (the loss mode mattered).
    unsynced_points: AtomicU64,
    /// Acknowledged steps lost over all Normal crash points (allowed there).
    lost_steps: AtomicU64,
    points_losing_acked: AtomicU64,
    in_flight_survived: AtomicU64,
    /// Crash points whose rows matched an unknown-outcome world: a group told its COMMIT failed
    /// at fsync survived whole, or (after a reopen had shown it) vanished whole.
    failed_group_survived: AtomicU64,
    /// I/O faults injected before the power losses (the after-faults properties).
    faults: AtomicU64,
}

impl Counts {
    fn report(&self, what: &str) {
        eprintln!(
            "{what}: {} cases, {} crash points explored ({} with unsynced writes); \
             {} points lost acknowledged steps ({} steps in all); the step in flight survived \
             at {} points; the rows were an unknown-outcome world (a group told its \
             COMMIT failed at fsync, survived or vanished whole) at {} points; {} I/O faults injected before the losses",
            self.cases.load(Ordering::Relaxed),
            self.points.load(Ordering::Relaxed),
            self.unsynced_points.load(Ordering::Relaxed),
            self.points_losing_acked.load(Ordering::Relaxed),
            self.lost_steps.load(Ordering::Relaxed),
            self.in_flight_survived.load(Ordering::Relaxed),
            self.failed_group_survived.load(Ordering::Relaxed),
            self.faults.load(Ordering::Relaxed),
        );
    }
}

/// One case: the live run, then every chosen crash point.
fn case(
    steps: &[S],
    durability: Durability,
    faults: Faults,
    seed: u64,
    counts: &Counts,
) -> Result<(), String> {
    case_with_faults(steps, durability, faults, None, seed, counts)
}

/// [`case`], with an I/O-fault plan armed after the open (and disarmed at step `stop_at`)
/// when one is given: requests may then fail with the fault (the model skips them), and a
/// group whose COMMIT failed at its fsync may survive the power loss whole (its frames are on
/// disk: `Live::unknown_outcome`) — or not at all.
fn case_with_faults(
    steps: &[S],
    durability: Durability,
    faults: Faults,
    plan: Option<(faultvfs::Plan, usize)>,
    seed: u64,
    counts: &Counts,
) -> Result<(), String> {
    let mut live = Live::new(durability, faults, true)?;
    let mode = if let Some((plan, _)) = plan {
        live.scope.arm(plan);
        Mode::Faulty
    } else {
        Mode::Exact
    };
    // ack_at[j]: events recorded when write step j was acknowledged (0: the open and its
    // table creation); snaps[j]: the model then; alts[j]: the model with a failed-at-fsync
    // group that could still reappear then.
    let mut ack_at = vec![live.scope.events()];
    let mut snaps: Vec<Model> = vec![live.model.clone()];
    let mut alts: Vec<Option<Model>> = vec![None];
    // doubts[j]: a group a reopen showed applied although its COMMIT failed at fsync, before
    // any sync made it durable: the model without it, and the trace length when it was seen.
    let mut doubts: Vec<Vec<(Model, usize)>> = vec![Vec::new()];
    for (i, step) in steps.iter().enumerate() {
        if plan.is_some_and(|(_, stop)| stop == i) {
            live.scope.disarm();
        }
        let what = plan.map(|(p, _)| format!("{p:?}: ")).unwrap_or_default();
        if live.step(i, step, mode).map_err(|e| format!("{what}{e}"))? {
            ack_at.push(live.scope.events());
            snaps.push(live.model.clone());
            alts.push(live.unknown_outcome.clone());
            doubts.push(live.resurrected_unsynced.clone());
        }
        if live.closed {
            break;
        }
    }
    live.scope.disarm();
    let fired: u64 = faultvfs::Kind::ALL
        .iter()
        .map(|k| live.scope.fired(*k))
        .sum();
    counts.faults.fetch_add(fired, Ordering::Relaxed);
    live.close();
    let trace = live.scope.trace();
    counts.cases.fetch_add(1, Ordering::Relaxed);

    let mut rng = Rng::new(seed);
    let mut points: Vec<usize> = Vec::new();
    for (i, e) in trace.iter().enumerate() {
        if matches!(e, Event::Sync { .. }) {
            points.push(i); // just before the sync: its writes are all at risk
            points.push(i + 1); // just after: the next step's writes start unsynced
        }
    }
    for _ in 0..4 {
        points.push(rng.below(trace.len() as u64 + 1) as usize);
    }
    points.push(trace.len());
    points.sort_unstable();
    points.dedup();
    while points.len() > POINTS_PER_CASE {
        let drop = rng.below(points.len() as u64) as usize;
        points.remove(drop);
    }

    let mut replay = Replay::new(&trace);
    for k in points {
        replay.advance_to(k);
        let loss = match rng.below(4) {
            0 => Loss::DropAll,
            1 => Loss::KeepAll,
            2 => Loss::Subset(rng.next_u64()),
            _ => Loss::TornLast(rng.next_u64()),
        };
        let unsynced = replay.unsynced();
        let acked = ack_at[1..].iter().filter(|&&a| a <= k).count();
        let last = snaps.len() - 1;
        let strict = durability == Durability::Full || loss == Loss::KeepAll || unsynced == 0;
        let lowest = if strict { acked } else { 0 };
        let highest = (acked + 1).min(last);
        let where_ = format!(
            "crash point {k} of {} ({loss:?}, {unsynced} unsynced writes), {acked} of {last} \
             write steps acknowledged, {durability:?}",
            trace.len()
        );
        let mut candidates: Vec<(usize, &Model, bool)> = Vec::new();
        for j in (lowest..=highest).rev() {
            candidates.push((j, &snaps[j], false));
            if let Some(alt) = &alts[j] {
                candidates.push((j, alt, true));
            }
            for (without, seen) in doubts[j].iter().rev() {
                let synced_since = trace[(*seen).min(k)..k]
                    .iter()
                    .any(|e| matches!(e, Event::Sync { .. }));
                if !synced_since {
                    candidates.push((j, without, true));
                }
            }
        }
        let (matched, failed_group_survived) =
            check_image(&replay, loss, &candidates).map_err(|e| format!("{where_}: {e}"))?;
        if failed_group_survived {
            counts.failed_group_survived.fetch_add(1, Ordering::Relaxed);
        }
        counts.points.fetch_add(1, Ordering::Relaxed);
        if unsynced > 0 {
            counts.unsynced_points.fetch_add(1, Ordering::Relaxed);
        }
        if matched < acked {
            counts.points_losing_acked.fetch_add(1, Ordering::Relaxed);
            counts
                .lost_steps
                .fetch_add((acked - matched) as u64, Ordering::Relaxed);
        } else if matched > acked {
            counts.in_flight_survived.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Reopen on the image and find the first of the candidate model states (newest first; each
/// with the write step it stands for, and whether it is a failed-at-fsync group's survival)
/// it equals.
fn check_image(
    replay: &Replay<'_>,
    loss: Loss,
    candidates: &[(usize, &Model, bool)],
) -> Result<(usize, bool), String> {
    let dir = tmpdir();
    faultvfs::write_image(dir.path(), &replay.image(loss)).map_err(|e| e.to_string())?;
    let path = dir.path().join("prop.db");
    if path.exists() {
        integrity(&path)?;
    }
    // A store opens on whatever survived (default VFS), with nothing done by hand.
    let store = Store::builder(&path)
        .create_structure_tables(true)
        .open()
        .map_err(|e| format!("reopening after the power loss: {e}"))?;
    let mut closest = String::new();
    let mut matched = None;
    for (j, m, alt) in candidates {
        match compare_rows(&path, m) {
            Ok(()) => {
                matched = Some((*j, *m, *alt));
                break;
            }
            Err(e) if closest.is_empty() => closest = format!("vs step {j}: {e}"),
            Err(_) => {}
        }
    }
    let steps: Vec<usize> = candidates.iter().map(|(j, _, _)| *j).collect();
    let Some((j, m, alt)) = matched else {
        store.close();
        return Err(format!(
            "the surviving rows equal no model state of steps {steps:?} \
             (a lost acknowledged write, or a group visible in part); {closest}"
        ));
    };
    let mut model = m.clone();
    serves(&store, &mut model)?;
    store.close();
    common::wait(
        store.wait_closed(),
        common::LIMIT,
        "closing the reopened store",
    );
    integrity(&path)?;
    Ok((j, alt))
}

fn property(
    steps: impl Strategy<Value = Vec<S>>,
    durability: Durability,
    n: u32,
    regressions: &'static str,
    what: &str,
) {
    let counts = Arc::new(Counts::default());
    let verdict = run_property(
        cases(n),
        Some(regressions),
        (steps, any::<u64>()),
        |(steps, seed)| case(&steps, durability, Faults::default(), seed, &counts),
    );
    counts.report(what);
    if let Err(e) = verdict {
        panic!("{what}: {e}");
    }
    assert!(
        counts.unsynced_points.load(Ordering::Relaxed) > 0,
        "{what}: no crash point had unsynced writes: nothing was at risk"
    );
}

#[test]
fn power_loss_full_keeps_every_acknowledged_group_basic() {
    property(
        basic_steps(30),
        Durability::Full,
        300,
        "regressions/power_loss.txt",
        "power loss, Full, basic",
    );
}

#[test]
fn power_loss_full_keeps_every_acknowledged_group_advanced() {
    property(
        adv_steps(30),
        Durability::Full,
        250,
        "regressions/power_loss.txt",
        "power loss, Full, Advanced",
    );
}

#[test]
fn power_loss_normal_keeps_a_prefix_of_groups_basic() {
    property(
        basic_steps(30),
        Durability::Normal,
        300,
        "regressions/power_loss.txt",
        "power loss, Normal, basic",
    );
}

#[test]
fn power_loss_normal_keeps_a_prefix_of_groups_advanced() {
    property(
        adv_steps(30),
        Durability::Normal,
        250,
        "regressions/power_loss.txt",
        "power loss, Normal, Advanced",
    );
}

fn plan() -> impl Strategy<Value = faultvfs::Plan> {
    use faultvfs::{Fault, Kind, Plan};
    let kind = prop::sample::select(vec![Kind::Write, Kind::Sync, Kind::Read, Kind::Truncate]);
    let fault = prop::sample::select(vec![Fault::Eio, Fault::Enospc, Fault::Short]);
    let count = prop_oneof![3 => Just(1u64), 1 => 2..5u64, 1 => Just(u64::MAX)];
    (kind, any::<u64>(), count, fault).prop_map(|(kind, r, count, fault)| {
        let span = match kind {
            Kind::Write => 60,
            Kind::Read => 40,
            Kind::Sync => 8,
            _ => 2,
        };
        Plan {
            kind,
            nth: 1 + r % span,
            count,
            fault,
        }
    })
}

/// I/O faults first, then the power loss: a fsync that failed leaves its writes unsynced (the
/// VFS records no sync), so they are at risk; a group told its COMMIT failed may survive whole
/// or vanish, never in part; everything acknowledged (Full) survives.
fn property_after_faults(
    steps: impl Strategy<Value = Vec<S>>,
    durability: Durability,
    n: u32,
    what: &str,
) {
    let counts = Counts::default();
    let verdict = run_property(
        cases(n),
        Some("regressions/power_loss.txt"),
        (steps, plan(), 0..40usize, any::<u64>()),
        |(steps, plan, stop_at, seed)| {
            case_with_faults(
                &steps,
                durability,
                Faults::default(),
                Some((plan, stop_at)),
                seed,
                &counts,
            )
        },
    );
    counts.report(what);
    if let Err(e) = verdict {
        panic!("{what}: {e}");
    }
    assert!(
        counts.unsynced_points.load(Ordering::Relaxed) > 0,
        "{what}: no crash point had unsynced writes: nothing was at risk"
    );
    assert!(
        counts.faults.load(Ordering::Relaxed) > 0,
        "{what}: no I/O fault was injected"
    );
}

#[test]
fn power_loss_after_io_faults_full_basic() {
    property_after_faults(
        basic_steps(30),
        Durability::Full,
        150,
        "power loss after I/O faults, Full, basic",
    );
}

#[test]
fn power_loss_after_io_faults_normal_basic() {
    property_after_faults(
        basic_steps(30),
        Durability::Normal,
        150,
        "power loss after I/O faults, Normal, basic",
    );
}

#[test]
fn power_loss_after_io_faults_full_advanced() {
    property_after_faults(
        adv_steps(30),
        Durability::Full,
        120,
        "power loss after I/O faults, Full, Advanced",
    );
}

/// A control must be caught: the same checks, on a deliberately broken store, must fail.
fn expect_caught(faults: Faults, durability: Durability, what: &str) {
    let counts = Counts::default();
    // Writes only: a read right after an early acknowledgement would catch the first control
    // before any power loss; this proves the crash checks catch it by themselves.
    let writes = basic_steps(30).prop_map(|steps| {
        steps
            .into_iter()
            .filter(|s| !matches!(s, S::One(common::Req::Basic(op)) if !op.is_write()))
            .collect::<Vec<_>>()
    });
    let verdict = run_property(60, None, (writes, any::<u64>()), |(steps, seed)| {
        case(&steps, durability, faults, seed, &counts)
    });
    match verdict {
        Err(e) if e.contains("crash point") => {
            let why: String = e
                .lines()
                .next()
                .unwrap_or_default()
                .chars()
                .take(400)
                .collect();
            eprintln!("negative control {what}: caught: {why}");
        }
        Err(e) => panic!("negative control {what}: failed outside the crash checks: {e}"),
        Ok(()) => panic!("negative control {what}: the power-loss checks did not catch it"),
    }
}

#[test]
fn negative_control_ack_before_commit_is_caught() {
    expect_caught(
        Faults {
            reply_before_commit: true,
            ..Faults::default()
        },
        Durability::Full,
        "acknowledges before its COMMIT",
    );
}

#[test]
fn negative_control_synchronous_off_claiming_full_is_caught() {
    expect_caught(
        Faults {
            synchronous_off: true,
            ..Faults::default()
        },
        Durability::Full,
        "synchronous=OFF while claiming Full",
    );
}

#[test]
fn negative_control_batch_split_in_two_transactions_is_caught() {
    expect_caught(
        Faults {
            split_batch: true,
            ..Faults::default()
        },
        Durability::Normal,
        "a group committed as two transactions",
    );
}
