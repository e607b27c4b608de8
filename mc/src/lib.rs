//! An explicit-state model checker of the PostgreSQL engine's multi-host protocol. It owns a
//! model of the server (sessions' committed items, transactions that commit or abort
//! atomically, shared/exclusive advisory locks and row locks with waiting, commit-status
//! lookup, crash and restart), N hosts each running its pool writer's groups through the
//! library's own decisions (`agent_sessions::hooks::pg_decide`, the code the engine runs), and
//! Python-style writers that hold one session row per transaction. Faults are injected at every
//! step, within a budget: a connection lost at any point (before, during or after COMMIT), a
//! lock timeout on any wait, a server crash and restart.
//!
//! [`check`] explores every interleaving breadth first (states deduplicated by a 64-bit
//! fingerprint, as TLC does) and checks, per session: no cycle of lock waits among our hosts
//! and the Python writers (I5 without deadlock); every acknowledged operation applied exactly
//! once, every "nothing written" one never, an "outcome unknown" one at most once (I6 across an
//! ambiguous COMMIT); and the acknowledged history (with the committed final state) linearizable
//! against the reference model `agent_sessions_model::Model` — so a pop returns the newest item
//! at its linearization point. Being breadth first, a counterexample is a shortest one.
//!
//! What the model mirrors rather than calls: the pool's group loop (`run_batch`: a savepoint
//! per request, a request whose lock times out is undone alone, a connection lost mid-group
//! fails the requests so far and begins again for the rest, replies after COMMIT) and the pop's
//! row choice, which is SQL in the engine (`PopRule::LockSession`).

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

pub mod scenarios;

use agent_sessions::hooks::pg_decide::{
    Action, Event, Failure, Group, LockPlan, Mode, PopRule, Rules, Status, Verdict, Write,
};
use agent_sessions_model::{Model, Op, Outcome};
use serde_json::json;

/// A session, by index.
pub type Sess = u8;

/// What a request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Add one item (a value unique in the scenario).
    Add(u8),
    Pop,
    /// A read of the whole session (a reader connection, outside any group).
    Get,
}

/// One request of a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Req {
    pub sess: Sess,
    pub kind: Kind,
}

pub fn add(sess: Sess, item: u8) -> Req {
    Req {
        sess,
        kind: Kind::Add(item),
    }
}
pub fn pop(sess: Sess) -> Req {
    Req {
        sess,
        kind: Kind::Pop,
    }
}
pub fn get(sess: Sess) -> Req {
    Req {
        sess,
        kind: Kind::Get,
    }
}

/// What to explore.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: &'static str,
    pub sessions: u8,
    /// Items stored before the hosts start, oldest first.
    pub preload: Vec<(Sess, u8)>,
    /// Per host, its groups (a group of one `Get` is a read).
    pub hosts: Vec<Vec<Vec<Req>>>,
    /// Python-style writers: one add each, in a transaction holding the session's row lock.
    pub python: Vec<Req>,
    /// Connection losses and lock timeouts, in all.
    pub faults: u8,
    pub crashes: u8,
    /// Callers retry a request answered with a retryable error, once.
    pub retries: bool,
    /// Commit-status queries a host makes before its deadline.
    pub asks: u8,
    /// The server ends an orphaned transaction before a host's settling deadline (the
    /// engine's `idle_in_transaction_session_timeout`, shorter than the deadline); then, with
    /// the server up, no lost COMMIT may be left "unknown".
    pub orphan_bound: bool,
    pub rules: Rules,
}

/// What the checker found wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// A cycle of lock waits among our hosts (and Python writers).
    Deadlock,
    /// An acknowledged (or "nothing written") request applied the wrong number of times.
    Duplicate { request: String, times: u8 },
    /// An acknowledged request whose work is not stored.
    Loss { request: String, verdict: String },
    /// A request answered "nothing written" whose work is stored.
    FalseFailure { request: String, verdict: String },
    /// No order of the acknowledged operations explains their answers and the final state.
    NotLinearizable { history: String },
    /// A lost COMMIT left "unknown" although the server never went down.
    Unsettled { request: String },
    /// No step possible, yet not finished.
    Stuck,
}

impl Violation {
    pub fn kind(&self) -> &'static str {
        match self {
            Violation::Deadlock => "deadlock",
            Violation::Duplicate { .. } => "duplicate",
            Violation::Loss { .. } => "loss",
            Violation::FalseFailure { .. } => "false failure",
            Violation::NotLinearizable { .. } => "not linearizable",
            Violation::Unsettled { .. } => "unsettled",
            Violation::Stuck => "stuck",
        }
    }
}

/// The result of exploring a scenario.
#[derive(Debug)]
pub struct Report {
    pub states: usize,
    pub terminal: usize,
    pub elapsed: Duration,
    /// The first violation found and the steps leading to it (a shortest trace).
    pub violation: Option<(Violation, Vec<String>)>,
}

// ---------------------------------------------------------------------------------------------
// The state.

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Res {
    /// An advisory lock, by key.
    Adv(u16),
    /// A session row's lock.
    Row(Sess),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum TxSt {
    Active,
    Committed,
    Aborted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Eff {
    Add(Sess, u8),
    Remove(Sess, u8),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Tx {
    st: TxSt,
    /// Its connection is up (a transaction whose connection died stays active until the
    /// server notices).
    alive: bool,
    held: Vec<(Res, Mode)>,
    effects: Vec<Eff>,
    /// The attempts whose work it holds.
    attempts: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Phase {
    Idle,
    Locking(u8),
    Running(u8),
    /// COMMIT sent.
    Committing,
    /// The server committed; the answer is on its way.
    Committed,
    /// Asking the commit status; the number of asks so far.
    Settling(u8),
}

/// A request's own result inside its group.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Own {
    Ok(Out),
    /// Undone to its savepoint (its row lock timed out): retryable.
    Busy,
    /// The connection was lost while the group ran.
    Failed,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Out {
    Done,
    Popped(Option<u8>),
    Items(Vec<u8>),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Host {
    /// Groups to run, as attempt ids; the first is the current one.
    queue: VecDeque<Vec<u8>>,
    phase: Phase,
    group: Group,
    xid: Option<u8>,
    /// The current group's results so far.
    results: Vec<Own>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Py {
    Start,
    /// In its transaction, `bool`: row locked and item inserted.
    In(u8, bool),
    Done,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Reply {
    NotYet,
    Invoked(u8),
    Done {
        inv: u8,
        resp: u8,
        verdict: Verdict,
        own: Own,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct State {
    up: bool,
    committed: Vec<Vec<u8>>,
    txs: Vec<Tx>,
    hosts: Vec<Host>,
    py: Vec<Py>,
    faults: u8,
    crashes: u8,
    /// Per attempt: how many committed transactions hold its work.
    applied: Vec<u8>,
    replies: Vec<Reply>,
    /// Replies sent so far (the clock of real-time order).
    clock: u8,
}

/// The fixed part: requests by attempt id. Attempts `0..n` are the hosts' requests, `n..2n`
/// their retries, `2n..` the Python writers'.
struct World<'a> {
    sc: &'a Scenario,
    reqs: Vec<Req>,
    n: usize,
    /// The host of each original request.
    host_of: Vec<u8>,
}

/// A table pair's key, apart from the sessions' keys.
const PAIR: u16 = 1000;

/// A session's advisory-lock key: in the reverse order of the indexes, so that a group's
/// requests in index order are not in key order.
fn key(sc: &Scenario, s: Sess) -> u16 {
    u16::from(sc.sessions - 1 - s)
}

fn conflicts(a: Mode, b: Mode) -> bool {
    a == Mode::Exclusive || b == Mode::Exclusive
}

impl World<'_> {
    fn new(sc: &Scenario) -> World<'_> {
        let mut reqs = Vec::new();
        let mut host_of = Vec::new();
        for (h, groups) in sc.hosts.iter().enumerate() {
            for r in groups.iter().flatten() {
                reqs.push(*r);
                host_of.push(h as u8);
            }
        }
        let n = reqs.len();
        let retries = reqs.clone();
        reqs.extend(retries);
        reqs.extend(sc.python.iter().copied());
        World {
            sc,
            reqs,
            n,
            host_of,
        }
    }

    fn init(&self) -> State {
        let mut committed = vec![Vec::new(); usize::from(self.sc.sessions)];
        for &(s, i) in &self.sc.preload {
            committed[usize::from(s)].push(i);
        }
        let mut next = 0u8;
        let hosts = self
            .sc
            .hosts
            .iter()
            .map(|groups| Host {
                queue: groups
                    .iter()
                    .map(|g| {
                        g.iter()
                            .map(|_| {
                                next += 1;
                                next - 1
                            })
                            .collect()
                    })
                    .collect(),
                phase: Phase::Idle,
                group: Group::new(),
                xid: None,
                results: Vec::new(),
            })
            .collect();
        let mut replies = vec![Reply::NotYet; self.reqs.len()];
        for r in replies.iter_mut().skip(2 * self.n) {
            *r = Reply::Invoked(0);
        }
        State {
            up: true,
            committed,
            txs: Vec::new(),
            hosts,
            py: vec![Py::Start; self.sc.python.len()],
            faults: self.sc.faults,
            crashes: self.sc.crashes,
            applied: vec![0; self.reqs.len()],
            replies,
            clock: 0,
        }
    }

    fn plan(&self, group: &[u8]) -> Vec<(Res, Mode)> {
        let writes = group.iter().filter_map(|&a| {
            let r = self.reqs[usize::from(a)];
            (r.kind != Kind::Get).then(|| Write {
                pair: PAIR,
                session: Some(key(self.sc, r.sess)),
                prune: false,
                pop: r.kind == Kind::Pop,
            })
        });
        LockPlan::of(&self.sc.rules, writes)
            .steps()
            .map(|(k, m)| (Res::Adv(k), m))
            .collect()
    }

    /// The lock actor `x` (hosts, then Python writers) waits for, with its transaction.
    fn wanted(&self, st: &State, x: usize) -> Option<(u8, Res, Mode)> {
        if x < st.hosts.len() {
            let h = &st.hosts[x];
            let xid = h.xid?;
            let tx = &st.txs[usize::from(xid)];
            if tx.st != TxSt::Active || !tx.alive {
                return None;
            }
            match h.phase {
                Phase::Locking(i) => {
                    let plan = self.plan(&h.queue[0]);
                    plan.get(usize::from(i)).map(|&(r, m)| (xid, r, m))
                }
                Phase::Running(i) => {
                    let a = *h.queue[0].get(usize::from(i))?;
                    let r = self.reqs[usize::from(a)];
                    let row = (Res::Row(r.sess), Mode::Exclusive);
                    let need = self.sc.rules.takes_row_lock(r.kind == Kind::Pop)
                        && !tx.held.contains(&row);
                    need.then_some((xid, row.0, row.1))
                }
                _ => None,
            }
        } else {
            match st.py[x - st.hosts.len()] {
                Py::In(xid, false) => {
                    let r = self.reqs[2 * self.n + x - st.hosts.len()];
                    Some((xid, Res::Row(r.sess), Mode::Exclusive))
                }
                _ => None,
            }
        }
    }

    /// The transactions holding a lock that conflicts with `(res, mode)` for `xid`.
    fn blockers(&self, st: &State, xid: u8, res: Res, mode: Mode) -> Vec<u8> {
        (0..st.txs.len() as u8)
            .filter(|&t| {
                t != xid
                    && st.txs[usize::from(t)].st == TxSt::Active
                    && st.txs[usize::from(t)]
                        .held
                        .iter()
                        .any(|&(r, m)| r == res && conflicts(m, mode))
            })
            .collect()
    }

    /// Whether the waits among live actors form a cycle.
    fn deadlocked(&self, st: &State) -> bool {
        let actors = st.hosts.len() + st.py.len();
        // The transaction each actor waits in, and the transactions it waits for.
        let mut waits: HashMap<u8, Vec<u8>> = HashMap::new();
        for x in 0..actors {
            if let Some((xid, r, m)) = self.wanted(st, x) {
                waits.insert(xid, self.blockers(st, xid, r, m));
            }
        }
        // Depth-first search for a cycle in a graph of at most a few nodes.
        fn reaches(w: &HashMap<u8, Vec<u8>>, from: u8, to: u8, seen: &mut Vec<u8>) -> bool {
            for &n in w.get(&from).into_iter().flatten() {
                if n == to {
                    return true;
                }
                if !seen.contains(&n) {
                    seen.push(n);
                    if reaches(w, n, to, seen) {
                        return true;
                    }
                }
            }
            false
        }
        waits
            .keys()
            .any(|&t| reaches(&waits, t, t, &mut Vec::new()))
    }

    fn release(st: &mut State, xid: u8) {
        st.txs[usize::from(xid)].held.clear();
    }

    fn abort(st: &mut State, xid: u8) {
        let tx = &mut st.txs[usize::from(xid)];
        if tx.st == TxSt::Active {
            tx.st = TxSt::Aborted;
        }
        Self::release(st, xid);
    }

    fn commit(st: &mut State, xid: u8) {
        let tx = st.txs[usize::from(xid)].clone();
        for e in &tx.effects {
            match *e {
                Eff::Add(s, i) => st.committed[usize::from(s)].push(i),
                Eff::Remove(s, i) => st.committed[usize::from(s)].retain(|&x| x != i),
            }
        }
        for &a in &tx.attempts {
            st.applied[usize::from(a)] += 1;
        }
        st.txs[usize::from(xid)].st = TxSt::Committed;
        Self::release(st, xid);
    }

    fn begin_tx(st: &mut State) -> u8 {
        st.txs.push(Tx {
            st: TxSt::Active,
            alive: true,
            held: Vec::new(),
            effects: Vec::new(),
            attempts: Vec::new(),
        });
        (st.txs.len() - 1) as u8
    }

    /// The session as transaction `xid` sees it (`skip`: without rows other transactions hold).
    fn view(st: &State, xid: u8, s: Sess, skip: bool) -> Vec<u8> {
        let mut v = st.committed[usize::from(s)].clone();
        for e in &st.txs[usize::from(xid)].effects {
            match *e {
                Eff::Add(es, i) if es == s => v.push(i),
                Eff::Remove(es, i) if es == s => v.retain(|&x| x != i),
                _ => {}
            }
        }
        if skip {
            for (t, tx) in st.txs.iter().enumerate() {
                if t != usize::from(xid) && tx.st == TxSt::Active {
                    for e in &tx.effects {
                        if let Eff::Remove(es, i) = *e {
                            if es == s {
                                v.retain(|&x| x != i);
                            }
                        }
                    }
                }
            }
        }
        v
    }

    /// Reply to the current group of host `h` and move on.
    fn reply(&self, st: &mut State, h: usize, verdict: Verdict) {
        let host = &mut st.hosts[h];
        let group = host.queue.pop_front().unwrap_or_default();
        let results = std::mem::take(&mut host.results);
        if let Some(xid) = host.xid.take() {
            if st.txs[usize::from(xid)].st == TxSt::Active && st.txs[usize::from(xid)].alive {
                // ROLLBACK of a group that failed on a live connection.
                Self::abort(st, xid);
            }
        }
        st.hosts[h].phase = Phase::Idle;
        st.clock += 1;
        for (i, &a) in group.iter().enumerate() {
            let own = if verdict == Verdict::Ok {
                results.get(i).cloned().unwrap_or(Own::Failed)
            } else {
                Own::Failed
            };
            let inv = match st.replies[usize::from(a)] {
                Reply::Invoked(t) => t,
                _ => 0,
            };
            let busy = verdict == Verdict::Busy || own == Own::Busy;
            st.replies[usize::from(a)] = Reply::Done {
                inv,
                resp: st.clock,
                verdict,
                own,
            };
            if busy && self.sc.retries && usize::from(a) < self.n {
                let retry = a + self.n as u8;
                st.replies[usize::from(retry)] = Reply::NotYet;
                st.hosts[h].queue.push_back(vec![retry]);
            }
        }
    }

    /// Host `h` observes its connection lost, in whatever phase it is.
    fn host_lost(&self, st: &mut State, h: usize) {
        let phase = st.hosts[h].phase;
        let rules = self.sc.rules;
        match phase {
            Phase::Locking(_) => {
                let a = st.hosts[h]
                    .group
                    .on(&rules, Event::BeginFailed(Failure::Lost));
                self.act(st, h, a);
            }
            // The loss is noticed by the COMMIT that was to follow the last request.
            Phase::Running(i) if usize::from(i) >= st.hosts[h].queue[0].len() => {
                let a = st.hosts[h].group.on(&rules, Event::CommitLost);
                self.act(st, h, a);
            }
            Phase::Running(i) => {
                // The pool: the requests so far are undone with the transaction (errors), the
                // rest run in a new one.
                let host = &mut st.hosts[h];
                let group = host.queue.pop_front().unwrap_or_default();
                let (done, rest) = group.split_at(usize::from(i) + 1);
                host.results = vec![Own::Failed; done.len()];
                host.queue.push_front(done.to_vec());
                host.xid = None;
                self.reply(st, h, Verdict::Failed);
                if !rest.is_empty() {
                    st.hosts[h].queue.push_front(rest.to_vec());
                }
            }
            Phase::Committing | Phase::Committed => {
                let a = st.hosts[h].group.on(&rules, Event::CommitLost);
                self.act(st, h, a);
            }
            Phase::Idle | Phase::Settling(_) => {}
        }
    }

    /// Perform `action` for host `h`.
    fn act(&self, st: &mut State, h: usize, action: Action) {
        match action {
            Action::RunRequests => st.hosts[h].phase = Phase::Running(0),
            Action::BeginAgain | Action::RerunGroup => {
                let host = &mut st.hosts[h];
                host.xid = None;
                host.results.clear();
                self.start(st, h);
            }
            Action::Reply(v) => self.reply(st, h, v),
            Action::AskStatus => {
                let host = &mut st.hosts[h];
                host.phase = match host.phase {
                    Phase::Settling(n) => Phase::Settling(n),
                    _ => Phase::Settling(0),
                };
            }
        }
    }

    /// BEGIN for host `h`'s current group (it keeps its decision state).
    fn start(&self, st: &mut State, h: usize) {
        if !st.up {
            let a = st.hosts[h]
                .group
                .on(&self.sc.rules, Event::BeginFailed(Failure::Lost));
            // A begin that failed at once leaves the host where it was: act on the decision.
            st.hosts[h].phase = Phase::Idle;
            return self.act(st, h, a);
        }
        let xid = Self::begin_tx(st);
        st.hosts[h].xid = Some(xid);
        st.hosts[h].phase = Phase::Locking(0);
    }

    /// Every step from `st`, labelled.
    fn next(&self, st: &State, out: &mut Vec<(String, State)>) {
        let rules = self.sc.rules;
        let nh = st.hosts.len();
        for h in 0..nh {
            let host = &st.hosts[h];
            let live = host
                .xid
                .map(|x| st.txs[usize::from(x)].alive)
                .unwrap_or(false);
            match host.phase {
                Phase::Idle => {
                    let Some(group) = host.queue.front() else {
                        continue;
                    };
                    let mut s = st.clone();
                    for &a in group {
                        if s.replies[usize::from(a)] == Reply::NotYet {
                            s.replies[usize::from(a)] = Reply::Invoked(s.clock);
                        }
                    }
                    let first = self.reqs[usize::from(group[0])];
                    if first.kind == Kind::Get {
                        // A read: one statement on a reader connection.
                        let own = if s.up {
                            Own::Ok(Out::Items(s.committed[usize::from(first.sess)].clone()))
                        } else {
                            Own::Failed
                        };
                        let v = if s.up { Verdict::Ok } else { Verdict::Failed };
                        s.hosts[h].results = vec![own];
                        self.reply(&mut s, h, v);
                        out.push((format!("host {h}: read {first:?}"), s));
                        continue;
                    }
                    s.hosts[h].group = Group::new();
                    self.start(&mut s, h);
                    out.push((format!("host {h}: BEGIN {group:?}"), s));
                }
                Phase::Locking(i) if live => {
                    let xid = host.xid.unwrap_or(0);
                    let plan = self.plan(&host.queue[0]);
                    match plan.get(usize::from(i)) {
                        None => {
                            let mut s = st.clone();
                            let a = s.hosts[h].group.on(&rules, Event::Begun);
                            self.act(&mut s, h, a);
                            out.push((format!("host {h}: locks granted"), s));
                        }
                        Some(&(r, m)) => {
                            if self.blockers(st, xid, r, m).is_empty() {
                                let mut s = st.clone();
                                s.txs[usize::from(xid)].held.push((r, m));
                                s.hosts[h].phase = Phase::Locking(i + 1);
                                out.push((format!("host {h}: lock {r:?} {m:?}"), s));
                            } else if st.faults > 0 {
                                let mut s = st.clone();
                                s.faults -= 1;
                                Self::abort(&mut s, xid);
                                let a = s.hosts[h]
                                    .group
                                    .on(&rules, Event::BeginFailed(Failure::LockTimeout));
                                self.act(&mut s, h, a);
                                out.push((format!("host {h}: lock timeout on {r:?}"), s));
                            }
                        }
                    }
                }
                Phase::Running(i) if live => {
                    let xid = host.xid.unwrap_or(0);
                    let group = &host.queue[0];
                    match group.get(usize::from(i)) {
                        None => {
                            let mut s = st.clone();
                            s.hosts[h].phase = Phase::Committing;
                            out.push((format!("host {h}: COMMIT sent"), s));
                        }
                        Some(&a) => {
                            let r = self.reqs[usize::from(a)];
                            let blocked = self
                                .wanted(st, h)
                                .map(|(x, res, m)| !self.blockers(st, x, res, m).is_empty())
                                .unwrap_or(false);
                            if !blocked {
                                let mut s = st.clone();
                                let row = (Res::Row(r.sess), Mode::Exclusive);
                                let tx = &mut s.txs[usize::from(xid)];
                                if rules.takes_row_lock(r.kind == Kind::Pop)
                                    && !tx.held.contains(&row)
                                {
                                    tx.held.push(row);
                                }
                                let own = match r.kind {
                                    Kind::Add(item) => {
                                        tx.effects.push(Eff::Add(r.sess, item));
                                        Own::Ok(Out::Done)
                                    }
                                    Kind::Pop => {
                                        let skip = rules.pop_rule() == PopRule::SkipLocked;
                                        let v = Self::view(&s, xid, r.sess, skip);
                                        let newest = v.last().copied();
                                        let tx = &mut s.txs[usize::from(xid)];
                                        if let Some(i) = newest {
                                            tx.effects.push(Eff::Remove(r.sess, i));
                                        }
                                        Own::Ok(Out::Popped(newest))
                                    }
                                    Kind::Get => {
                                        Own::Ok(Out::Items(Self::view(&s, xid, r.sess, false)))
                                    }
                                };
                                s.txs[usize::from(xid)].attempts.push(a);
                                s.hosts[h].results.push(own);
                                s.hosts[h].phase = Phase::Running(i + 1);
                                out.push((format!("host {h}: run {r:?}"), s));
                            } else if st.faults > 0 {
                                // The row lock timed out: this request alone is undone.
                                let mut s = st.clone();
                                s.faults -= 1;
                                s.hosts[h].results.push(Own::Busy);
                                s.hosts[h].phase = Phase::Running(i + 1);
                                out.push((format!("host {h}: row lock timeout {r:?}"), s));
                            }
                        }
                    }
                }
                Phase::Committing if live => {
                    let xid = host.xid.unwrap_or(0);
                    let mut s = st.clone();
                    Self::commit(&mut s, xid);
                    s.hosts[h].phase = Phase::Committed;
                    out.push((format!("server: commits host {h}'s group"), s));
                }
                Phase::Committed if live => {
                    let mut s = st.clone();
                    let a = s.hosts[h].group.on(&rules, Event::CommitOk);
                    self.act(&mut s, h, a);
                    out.push((format!("host {h}: COMMIT answered"), s));
                }
                Phase::Settling(n) => {
                    let xid = host.xid.unwrap_or(0);
                    let last = n + 1 >= self.sc.asks;
                    let orphan = st.txs[usize::from(xid)].st == TxSt::Active;
                    if last && orphan && st.up && self.sc.orphan_bound {
                        // The server ends the orphan first (see `orphan_bound`).
                        continue;
                    }
                    let mut s = st.clone();
                    let answer = if !s.up {
                        Status::Unreachable
                    } else {
                        match s.txs[usize::from(xid)].st {
                            TxSt::Active => Status::InProgress,
                            TxSt::Committed => Status::Committed,
                            TxSt::Aborted => Status::Aborted,
                        }
                    };
                    s.hosts[h].phase = Phase::Settling(n + 1);
                    let past_deadline = n + 1 >= self.sc.asks;
                    let a = s.hosts[h].group.on(
                        &rules,
                        Event::Status {
                            answer,
                            past_deadline,
                        },
                    );
                    self.act(&mut s, h, a);
                    out.push((format!("host {h}: status asked: {answer:?}"), s));
                }
                Phase::Locking(_) | Phase::Running(_) | Phase::Committing | Phase::Committed => {
                    // The connection is gone: the host notices.
                    let mut s = st.clone();
                    self.host_lost(&mut s, h);
                    out.push((format!("host {h}: notices its connection lost"), s));
                }
            }
            // Fault: the connection is lost now (in any phase with one open).
            if live && st.faults > 0 && host.phase != Phase::Idle {
                let mut s = st.clone();
                s.faults -= 1;
                let xid = host.xid.unwrap_or(0);
                s.txs[usize::from(xid)].alive = false;
                out.push((format!("fault: host {h}'s connection lost"), s));
            }
        }
        for p in 0..st.py.len() {
            let a = 2 * self.n + p;
            let r = self.reqs[a];
            match st.py[p] {
                Py::Start => {
                    let mut s = st.clone();
                    if s.up {
                        let xid = Self::begin_tx(&mut s);
                        s.py[p] = Py::In(xid, false);
                        out.push((format!("python {p}: BEGIN"), s));
                    } else {
                        self.py_fail(&mut s, p, a);
                        out.push((format!("python {p}: server down"), s));
                    }
                }
                Py::In(xid, locked) => {
                    let tx = &st.txs[usize::from(xid)];
                    if tx.st != TxSt::Active || !tx.alive {
                        let mut s = st.clone();
                        Self::abort(&mut s, xid);
                        self.py_fail(&mut s, p, a);
                        out.push((format!("python {p}: connection lost"), s));
                        continue;
                    }
                    let row = (Res::Row(r.sess), Mode::Exclusive);
                    if !locked {
                        if self.blockers(st, xid, row.0, row.1).is_empty() {
                            let mut s = st.clone();
                            let tx = &mut s.txs[usize::from(xid)];
                            tx.held.push(row);
                            if let Kind::Add(i) = r.kind {
                                tx.effects.push(Eff::Add(r.sess, i));
                            }
                            tx.attempts.push(a as u8);
                            s.py[p] = Py::In(xid, true);
                            out.push((format!("python {p}: row locked, {r:?}"), s));
                        } else if st.faults > 0 {
                            let mut s = st.clone();
                            s.faults -= 1;
                            Self::abort(&mut s, xid);
                            self.py_fail(&mut s, p, a);
                            out.push((format!("python {p}: lock timeout"), s));
                        }
                    } else {
                        let mut s = st.clone();
                        Self::commit(&mut s, xid);
                        Self::py_done(&mut s, p, a, Verdict::Ok, Own::Ok(Out::Done));
                        out.push((format!("python {p}: COMMIT"), s));
                    }
                }
                Py::Done => {}
            }
        }
        // The server notices a dead connection and rolls its transaction back.
        for (t, tx) in st.txs.iter().enumerate() {
            if tx.st == TxSt::Active && !tx.alive {
                let mut s = st.clone();
                Self::abort(&mut s, t as u8);
                out.push((format!("server: aborts orphaned transaction {t}"), s));
            }
        }
        if st.up && st.crashes > 0 {
            let mut s = st.clone();
            s.crashes -= 1;
            s.up = false;
            for t in 0..s.txs.len() {
                s.txs[t].alive = false;
                Self::abort(&mut s, t as u8);
            }
            out.push(("fault: server crash".to_string(), s));
        }
        if !st.up {
            let mut s = st.clone();
            s.up = true;
            out.push(("server: restarted".to_string(), s));
        }
    }

    fn py_fail(&self, st: &mut State, p: usize, a: usize) {
        Self::py_done(st, p, a, Verdict::Failed, Own::Failed);
    }

    /// The Python writer `p` is finished, its answer `a` given now.
    fn py_done(st: &mut State, p: usize, a: usize, verdict: Verdict, own: Own) {
        st.py[p] = Py::Done;
        st.clock += 1;
        st.replies[a] = Reply::Done {
            inv: 0,
            resp: st.clock,
            verdict,
            own,
        };
    }

    fn finished(&self, st: &State) -> bool {
        st.hosts
            .iter()
            .all(|h| h.queue.is_empty() && h.phase == Phase::Idle)
            && st.py.iter().all(|p| *p == Py::Done)
            && st.txs.iter().all(|t| t.st != TxSt::Active)
    }

    fn describe(&self, a: usize) -> String {
        let who = if a >= 2 * self.n {
            format!("python {}", a - 2 * self.n)
        } else {
            format!("host {}", self.host_of[a % self.n])
        };
        let retry = if (self.n..2 * self.n).contains(&a) {
            " (retry)"
        } else {
            ""
        };
        format!("{who} {:?}{retry}", self.reqs[a])
    }

    /// The end-of-run checks: exactly once, then linearizability.
    fn check_end(&self, st: &State) -> Option<Violation> {
        let mut ops = Vec::new();
        for (a, reply) in st.replies.iter().enumerate() {
            let applied = st.applied[a];
            let Reply::Done {
                inv,
                resp,
                verdict,
                own,
            } = reply
            else {
                continue;
            };
            let kind = self.reqs[a].kind;
            let acked = *verdict == Verdict::Ok && matches!(own, Own::Ok(_));
            if applied > 1 {
                return Some(Violation::Duplicate {
                    request: self.describe(a),
                    times: applied,
                });
            }
            let expected_once = acked && kind != Kind::Get;
            let bad = match verdict {
                Verdict::Unknown => false,
                _ => (applied == 1) != expected_once,
            };
            if bad {
                let request = self.describe(a);
                let verdict = format!("{verdict:?}/{own:?}, applied {applied} times");
                return Some(if expected_once {
                    Violation::Loss { request, verdict }
                } else {
                    Violation::FalseFailure { request, verdict }
                });
            }
            // Without crashes the server can always be asked: with orphans bounded, every lost
            // COMMIT must be settled.
            if *verdict == Verdict::Unknown && self.sc.crashes == 0 {
                return Some(Violation::Unsettled {
                    request: self.describe(a),
                });
            }
            match (verdict, own) {
                (Verdict::Ok, Own::Ok(out)) => ops.push(Lin {
                    a,
                    inv: *inv,
                    resp: *resp,
                    out: Some(out.clone()),
                }),
                (Verdict::Unknown, _) => ops.push(Lin {
                    a,
                    inv: *inv,
                    resp: *resp,
                    out: None,
                }),
                _ => {}
            }
        }
        let mut model = Model::new();
        for &(s, i) in &self.sc.preload {
            model
                .apply(&self.op(Req {
                    sess: s,
                    kind: Kind::Add(i),
                }))
                .ok()?;
        }
        if self.linearize(&ops, &mut vec![false; ops.len()], &model, st) {
            None
        } else {
            let history = ops
                .iter()
                .map(|o| {
                    format!(
                        "{} [{}, {}] -> {:?}",
                        self.describe(o.a),
                        o.inv,
                        o.resp,
                        o.out
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            Some(Violation::NotLinearizable {
                history: format!("{history}; final {:?}", st.committed),
            })
        }
    }

    fn op(&self, r: Req) -> Op {
        let session = format!("s{}", r.sess);
        match r.kind {
            Kind::Add(i) => Op::AddItems {
                session,
                items: vec![json!(i)],
            },
            Kind::Pop => Op::PopItem { session },
            Kind::Get => Op::GetItems {
                session,
                limit: None,
            },
        }
    }

    /// Wing and Gong's search: some order of the operations that respects real time, gives
    /// every acknowledged answer and ends in the committed state (an operation whose outcome
    /// is unknown may be left out).
    fn linearize(&self, ops: &[Lin], used: &mut Vec<bool>, model: &Model, st: &State) -> bool {
        if used.iter().all(|&u| u) {
            let end = (0..self.sc.sessions).all(|s| {
                let want: Vec<serde_json::Value> = st.committed[usize::from(s)]
                    .iter()
                    .map(|&i| json!(i))
                    .collect();
                let mut m = model.clone();
                m.apply(&self.op(get(s))).ok() == Some(Outcome::Items(want))
            });
            if end {
                return true;
            }
        }
        for i in 0..ops.len() {
            if used[i] {
                continue;
            }
            // Minimal: no unused operation responded before this one was invoked.
            if (0..ops.len()).any(|j| !used[j] && j != i && ops[j].resp <= ops[i].inv) {
                continue;
            }
            let mut m = model.clone();
            let Ok(got) = m.apply(&self.op(self.reqs[ops[i].a])) else {
                continue;
            };
            let fits = match &ops[i].out {
                None => true,
                Some(out) => got == self.outcome(out),
            };
            if fits {
                used[i] = true;
                if self.linearize(ops, used, &m, st) {
                    return true;
                }
                used[i] = false;
            }
            // An operation whose outcome is unknown may also never have happened.
            if ops[i].out.is_none() {
                used[i] = true;
                if self.linearize(ops, used, model, st) {
                    return true;
                }
                used[i] = false;
            }
        }
        false
    }

    fn outcome(&self, out: &Out) -> Outcome {
        match out {
            Out::Done => Outcome::Done,
            Out::Popped(p) => Outcome::Popped(p.map(|i| json!(i))),
            Out::Items(v) => Outcome::Items(v.iter().map(|&i| json!(i)).collect()),
        }
    }
}

struct Lin {
    a: usize,
    inv: u8,
    resp: u8,
    out: Option<Out>,
}

fn fingerprint(st: &State) -> u64 {
    let mut h = DefaultHasher::new();
    st.hash(&mut h);
    h.finish()
}

/// Explore every interleaving of `sc`, breadth first, stopping at the first violation.
pub fn check(sc: &Scenario) -> Report {
    let started = Instant::now();
    let w = World::new(sc);
    let init = w.init();
    let root = fingerprint(&init);
    // Every state seen: its parent and the step that reached it (for the trace), the steps'
    // labels interned (a few hundred distinct ones over millions of states).
    let mut seen: HashMap<u64, (u64, u32)> = HashMap::new();
    let mut labels: Vec<String> = vec![String::new()];
    let mut label_ids: HashMap<String, u32> = HashMap::new();
    seen.insert(root, (root, 0));
    let mut queue = VecDeque::from([(init, root)]);
    let mut terminal = 0;
    let mut next = Vec::new();
    let trace = |seen: &HashMap<u64, (u64, u32)>, labels: &[String], mut fp: u64| {
        let mut steps = Vec::new();
        while fp != root {
            let (parent, label) = seen[&fp];
            steps.push(labels[label as usize].clone());
            fp = parent;
        }
        steps.reverse();
        steps
    };
    while let Some((st, fp)) = queue.pop_front() {
        let violation = if w.deadlocked(&st) {
            Some(Violation::Deadlock)
        } else if w.finished(&st) {
            terminal += 1;
            w.check_end(&st)
        } else {
            next.clear();
            w.next(&st, &mut next);
            if next.is_empty() {
                Some(Violation::Stuck)
            } else {
                None
            }
        };
        if let Some(v) = violation {
            return Report {
                states: seen.len(),
                terminal,
                elapsed: started.elapsed(),
                violation: Some((v, trace(&seen, &labels, fp))),
            };
        }
        for (label, s) in next.drain(..) {
            let f = fingerprint(&s);
            if let std::collections::hash_map::Entry::Vacant(e) = seen.entry(f) {
                let id = *label_ids.entry(label).or_insert_with_key(|l| {
                    labels.push(l.clone());
                    (labels.len() - 1) as u32
                });
                e.insert((fp, id));
                queue.push_back((s, f));
            }
        }
    }
    Report {
        states: seen.len(),
        terminal,
        elapsed: started.elapsed(),
        violation: None,
    }
}
