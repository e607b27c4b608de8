//! The scenarios the test suite explores, shared by the tests and the negative controls (a
//! control is a scenario run under broken rules, so it is caught in the same world the engine's
//! rules pass in).

use agent_sessions::hooks::pg_decide::Rules;

use crate::{add, get, pop, Scenario};

/// Two hosts whose groups write two sessions in opposite request orders; a connection loss or
/// lock timeout and a server crash anywhere; callers retry busy requests.
pub fn crossed_groups(rules: Rules) -> Scenario {
    Scenario {
        name: "crossed groups: 2 hosts x 1 group of 2 adds on 2 sessions",
        sessions: 2,
        preload: vec![],
        hosts: vec![
            vec![vec![add(0, 1), add(1, 2)]],
            vec![vec![add(1, 3), add(0, 4)]],
        ],
        python: vec![],
        faults: 1,
        crashes: 1,
        retries: true,
        asks: 2,
        orphan_bound: true,
        rules,
    }
}

/// One host adds then reads, another pops, on one session; two faults (connection losses at
/// any point, COMMIT included, or lock timeouts) and a crash.
pub fn ambiguous_commit(rules: Rules) -> Scenario {
    Scenario {
        name: "ambiguous commit: add+get vs pop on 1 session",
        sessions: 1,
        preload: vec![(0, 10)],
        hosts: vec![vec![vec![add(0, 1)], vec![get(0)]], vec![vec![pop(0)]]],
        python: vec![],
        faults: 2,
        crashes: 1,
        retries: true,
        asks: 2,
        orphan_bound: true,
        rules,
    }
}

/// Two hosts pop one session while a Python writer adds to it.
pub fn pop_race(rules: Rules) -> Scenario {
    Scenario {
        name: "pop race: 2 hosts pop, 1 Python writer adds, 1 session",
        sessions: 1,
        preload: vec![(0, 10), (0, 11)],
        hosts: vec![vec![vec![pop(0)]], vec![vec![pop(0)]]],
        python: vec![add(0, 5)],
        faults: 1,
        crashes: 1,
        retries: true,
        asks: 2,
        orphan_bound: true,
        rules,
    }
}

/// Three hosts with groups over two sessions, a Python writer holding one session's row; one
/// fault (no crash: the other scenarios cover it, and this one is the largest).
pub fn three_hosts(rules: Rules) -> Scenario {
    Scenario {
        name: "three hosts: add+pop groups crossing 2 sessions, a read, 1 Python writer",
        sessions: 2,
        preload: vec![(0, 10)],
        hosts: vec![
            vec![vec![add(0, 1), pop(1)]],
            vec![vec![add(1, 2), pop(0)]],
            vec![vec![get(1)]],
        ],
        python: vec![add(1, 5)],
        faults: 1,
        crashes: 0,
        retries: false,
        asks: 2,
        orphan_bound: true,
        rules,
    }
}
