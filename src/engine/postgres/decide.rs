//! The multi-host decisions of the PostgreSQL engine as a pure state machine: which advisory
//! locks a group takes and in which order, and what a host does on each outcome of a group's
//! steps (locks granted or refused, a deadlock, a connection lost before, during or after
//! COMMIT, the server's answer about a COMMIT whose answer was lost). No I/O and no PostgreSQL
//! types, so that the real engine (`postgres::conn`) and the model checker (the workspace's `mc`
//! crate, through `agent_sessions::hooks::pg_decide`) run the same rules: the engine feeds the
//! events it observes and performs the actions returned; the checker does the same against a
//! model of the server, over every interleaving of hosts and faults.
//!
//! Invariants upheld: I5 per session (every group takes its sessions' exclusive advisory locks
//! in one global key order, so groups of different hosts serialise per session and never wait
//! for each other in a cycle) and I6 across a lost connection (a group is acknowledged only
//! when its COMMIT succeeded or the server says it committed; "nothing written" only when the
//! server says it rolled back; otherwise the outcome is reported unknown — never a silent
//! duplicate or loss).
//!
//! The checker's negative controls are broken [`Rules`], built only under `test-hooks`; the
//! engine always runs [`Rules::ENGINE`].

// The broken variants and the model's helpers are reached only by the checker.
#![cfg_attr(not(feature = "test-hooks"), allow(dead_code))]

/// The mode of an advisory lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    /// `pg_advisory_xact_lock_shared`.
    Shared,
    /// `pg_advisory_xact_lock`.
    Exclusive,
}

/// One write of a group, as the lock plan sees it: its table pair's key, its session's key and
/// whether it is a (non-dry-run) prune or a pop.
#[derive(Clone, Copy, Debug)]
pub struct Write<K> {
    /// The key of its table pair.
    pub pair: K,
    /// The key of its session, if it writes one.
    pub session: Option<K>,
    /// A prune that deletes (not a dry run).
    pub prune: bool,
    /// A pop.
    pub pop: bool,
}

/// In which order a group takes its advisory locks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LockOrder {
    /// Ascending key (the engine): one global order, so no cycle of waits.
    Key,
    /// The order of the requests (broken: two groups can wait for each other).
    Request,
}

/// What a host does when the connection was lost before COMMIT's answer arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LostCommit {
    /// Reconnect and ask the server (`pg_xact_status`) — the engine.
    AskServer,
    /// Broken: reply success without asking (a loss if the server never got the COMMIT).
    AssumeCommitted,
    /// Broken: run the group again (a duplicate if the server did commit).
    Rerun,
}

/// How a pop chooses its row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PopRule {
    /// Lock the session (advisory and row lock), then take the newest row — the engine
    /// (`basic::pop_item`).
    LockSession,
    /// Broken: no session lock; take the newest row no other transaction holds
    /// (`FOR UPDATE SKIP LOCKED`), which can return an item that was never the newest.
    SkipLocked,
}

/// The rules a host follows. The engine runs [`Rules::ENGINE`]; the others exist for the
/// checker's negative controls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rules {
    pub(crate) lock_order: LockOrder,
    pub(crate) lost_commit: LostCommit,
    pub(crate) pop: PopRule,
}

impl Rules {
    /// The rules of the real engine.
    pub const ENGINE: Rules = Rules {
        lock_order: LockOrder::Key,
        lost_commit: LostCommit::AskServer,
        pop: PopRule::LockSession,
    };

    /// The engine's rules with one of them broken, for a negative control.
    #[cfg(feature = "test-hooks")]
    pub fn broken(control: Control) -> Rules {
        let mut r = Rules::ENGINE;
        match control {
            Control::LocksInRequestOrder => r.lock_order = LockOrder::Request,
            Control::AckLostCommit => r.lost_commit = LostCommit::AssumeCommitted,
            Control::RerunLostCommit => r.lost_commit = LostCommit::Rerun,
            Control::PopSkipLocked => r.pop = PopRule::SkipLocked,
        }
        r
    }

    /// How a pop chooses its row under these rules (the model needs it; the engine's SQL is
    /// [`PopRule::LockSession`]).
    pub fn pop_rule(&self) -> PopRule {
        self.pop
    }

    /// Whether a write takes its session's row lock when it runs (the lock the SDK's writers
    /// take): every write does, except a pop under [`PopRule::SkipLocked`].
    pub fn takes_row_lock(&self, pop: bool) -> bool {
        !(pop && self.pop == PopRule::SkipLocked)
    }
}

/// The broken variants of [`Rules`] the checker must catch.
#[cfg(feature = "test-hooks")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Control {
    /// [`LockOrder::Request`].
    LocksInRequestOrder,
    /// [`LostCommit::AssumeCommitted`].
    AckLostCommit,
    /// [`LostCommit::Rerun`].
    RerunLostCommit,
    /// [`PopRule::SkipLocked`].
    PopSkipLocked,
}

/// The advisory locks a group takes when it begins, in this order: each table pair it writes
/// (shared, or exclusive for a pair it prunes), then each session it writes (exclusive).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockPlan<K> {
    /// Table pairs' keys and modes.
    pub pairs: Vec<(K, Mode)>,
    /// Sessions' keys (exclusive).
    pub sessions: Vec<K>,
}

impl<K: Ord + Copy> LockPlan<K> {
    /// The plan of a group whose writes are `writes`, in request order.
    pub fn of(rules: &Rules, writes: impl IntoIterator<Item = Write<K>>) -> Self {
        let (mut pairs, mut sessions) = (Vec::new(), Vec::new());
        for w in writes {
            let mode = if w.prune {
                Mode::Exclusive
            } else {
                Mode::Shared
            };
            pairs.push((w.pair, mode));
            // A skip-locked pop exists to avoid serialising on the session: it takes no lock.
            if w.pop && rules.pop == PopRule::SkipLocked {
                continue;
            }
            if let Some(s) = w.session {
                sessions.push(s);
            }
        }
        match rules.lock_order {
            LockOrder::Key => {
                // An exclusive entry sorts before a shared one of its key; dedup keeps the
                // first.
                pairs.sort_unstable_by_key(|&(k, m)| (k, std::cmp::Reverse(m)));
                pairs.dedup_by_key(|p| p.0);
                sessions.sort_unstable();
                sessions.dedup();
            }
            LockOrder::Request => {
                pairs = first_occurrences(pairs, |p| p.0);
                sessions = first_occurrences(sessions, |s| *s);
            }
        }
        LockPlan { pairs, sessions }
    }

    /// Every lock of the plan, in the order it is taken.
    pub fn steps(&self) -> impl Iterator<Item = (K, Mode)> + '_ {
        self.pairs
            .iter()
            .copied()
            .chain(self.sessions.iter().map(|&s| (s, Mode::Exclusive)))
    }
}

/// `items` without repeats of a key, each kept at its first place (an exclusive pair lock wins
/// over a shared one of the same key wherever it appears).
fn first_occurrences<T: Copy, K: Ord + Copy>(items: Vec<T>, key: impl Fn(&T) -> K) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(items.len());
    for it in items {
        if !out.iter().any(|o| key(o) == key(&it)) {
            out.push(it);
        }
    }
    out
}

/// Why a step of a group failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Failure {
    /// `lock_timeout` (55P03).
    LockTimeout,
    /// The server broke a cycle of waits (40P01).
    Deadlock,
    /// The connection was lost (or the server is down).
    Lost,
    /// Any other error the server answered with.
    Other,
}

/// The server's answer about the transaction of a COMMIT whose answer was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// `committed`.
    Committed,
    /// `aborted` (also what a restarted server says of a transaction it lost).
    Aborted,
    /// The server has not noticed the lost connection yet (or the answer was not a status).
    InProgress,
    /// The server could not be asked.
    Unreachable,
}

/// What a host observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// BEGIN, the transaction id and every lock of the plan were granted.
    Begun,
    /// BEGIN or one of its locks failed (no transaction is left behind).
    BeginFailed(Failure),
    /// COMMIT succeeded.
    CommitOk,
    /// COMMIT was answered with an error: the server rolled the group back.
    CommitRefused,
    /// The connection was lost before COMMIT's answer arrived: the outcome is ambiguous.
    CommitLost,
    /// The answer of the commit-status query; `past_deadline` once the host stopped waiting.
    Status {
        /// What the server said.
        answer: Status,
        /// The host's deadline for settling has passed.
        past_deadline: bool,
    },
}

/// What every request of a group is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Its work is stored (each request's own answer stands).
    Ok,
    /// Nothing of the group was written; retryable (`Error::Busy`).
    Busy,
    /// Nothing of the group was written; the server's error stands.
    Failed,
    /// The group may or may not be stored: an error saying so.
    Unknown,
}

/// What a host does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Run the requests, each in its savepoint, then COMMIT.
    RunRequests,
    /// Reconnect and begin once more: nothing had been done.
    BeginAgain,
    /// Reply to every request of the group.
    Reply(Verdict),
    /// Reconnect and ask the server whether the group's transaction committed (after a pause
    /// when it was asked before).
    AskStatus,
    /// Run the whole group again (only a broken rule says so).
    RerunGroup,
}

/// A group's progress through its decisions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Group {
    /// Begin was retried once after a lost connection.
    begin_retried: bool,
}

impl Group {
    /// A group about to begin.
    pub fn new() -> Group {
        Group::default()
    }

    /// The next action after `event`.
    pub fn on(&mut self, rules: &Rules, event: Event) -> Action {
        match event {
            Event::Begun => Action::RunRequests,
            // A connection that died while idle (a restarted server) is noticed only now; the
            // server aborts whatever the dead connection began, so beginning again is safe.
            Event::BeginFailed(Failure::Lost) if !self.begin_retried => {
                self.begin_retried = true;
                Action::BeginAgain
            }
            Event::BeginFailed(Failure::LockTimeout | Failure::Deadlock) => {
                Action::Reply(Verdict::Busy)
            }
            Event::BeginFailed(_) => Action::Reply(Verdict::Failed),
            Event::CommitOk => Action::Reply(Verdict::Ok),
            Event::CommitRefused => Action::Reply(Verdict::Failed),
            Event::CommitLost => match rules.lost_commit {
                LostCommit::AskServer => Action::AskStatus,
                LostCommit::AssumeCommitted => Action::Reply(Verdict::Ok),
                LostCommit::Rerun => Action::RerunGroup,
            },
            Event::Status {
                answer: Status::Committed,
                ..
            } => Action::Reply(Verdict::Ok),
            // The server rolled it back (it noticed the lost connection, or restarted).
            Event::Status {
                answer: Status::Aborted,
                ..
            } => Action::Reply(Verdict::Busy),
            Event::Status {
                past_deadline: false,
                ..
            } => Action::AskStatus,
            Event::Status { .. } => Action::Reply(Verdict::Unknown),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(pair: u8, session: u8) -> Write<u8> {
        Write {
            pair,
            session: Some(session),
            prune: false,
            pop: false,
        }
    }

    #[test]
    fn the_plan_is_in_key_order_and_a_prune_makes_its_pair_exclusive() {
        let prune = Write {
            pair: 1,
            session: None,
            prune: true,
            pop: false,
        };
        let p = LockPlan::of(&Rules::ENGINE, [w(2, 9), w(1, 3), prune, w(2, 3)]);
        assert_eq!(p.pairs, vec![(1, Mode::Exclusive), (2, Mode::Shared)]);
        assert_eq!(p.sessions, vec![3, 9]);
    }

    #[test]
    fn a_lost_commit_is_settled_with_the_server() {
        let mut g = Group::new();
        let r = Rules::ENGINE;
        assert_eq!(g.on(&r, Event::CommitLost), Action::AskStatus);
        let ask = |answer, past_deadline| Event::Status {
            answer,
            past_deadline,
        };
        assert_eq!(g.on(&r, ask(Status::InProgress, false)), Action::AskStatus);
        assert_eq!(
            g.on(&r, ask(Status::InProgress, true)),
            Action::Reply(Verdict::Unknown)
        );
        assert_eq!(
            g.on(&r, ask(Status::Aborted, false)),
            Action::Reply(Verdict::Busy)
        );
        assert_eq!(
            g.on(&r, ask(Status::Committed, true)),
            Action::Reply(Verdict::Ok)
        );
    }

    #[test]
    fn begin_is_retried_once_after_a_lost_connection() {
        let mut g = Group::new();
        let r = Rules::ENGINE;
        let lost = Event::BeginFailed(Failure::Lost);
        assert_eq!(g.on(&r, lost), Action::BeginAgain);
        assert_eq!(g.on(&r, lost), Action::Reply(Verdict::Failed));
    }
}
