//! The command line in Advanced mode: structure tables, branches, turns, tools and usage through
//! `agent-sessions`, and ownership claims raced by processes.

use std::path::Path;

use rusqlite::Connection;
use serde_json::{json, Value};

fn cli(db: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_agent-sessions"))
        .arg("--db")
        .arg(db)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

fn ok(o: std::process::Output) -> Vec<Value> {
    assert!(
        o.status.success(),
        "command failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn failed(o: std::process::Output) -> String {
    assert!(!o.status.success(), "command succeeded: {o:?}");
    String::from_utf8(o.stderr).unwrap()
}

#[test]
fn cli_advanced_mode_branches_turns_tools_and_usage() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cli.db");
    // Without structure tables, Advanced commands say how to get them.
    ok(cli(
        &db,
        &["add", "s", r#"{"role": "user", "content": "basic"}"#],
    ));
    assert!(failed(cli(&db, &["branches", "s"])).contains("init --advanced"));
    assert!(failed(cli(&db, &["items", "s", "--branch", "main"])).contains("Advanced mode"));
    ok(cli(&db, &["init", "--advanced"]));
    // Now the file is Advanced automatically.
    ok(cli(
        &db,
        &[
            "add",
            "s",
            r#"{"role": "user", "content": "What is the weather?"}"#,
            r#"{"type": "function_call", "name": "get_weather", "arguments": "{}"}"#,
            r#"{"role": "assistant", "content": "Sunny."}"#,
        ],
    ));
    ok(cli(
        &db,
        &[
            "add",
            "s",
            r#"{"role": "user", "content": "And tomorrow?"}"#,
        ],
    ));
    assert_eq!(
        ok(cli(&db, &["items", "s"])).len(),
        4,
        "the basic row is not shown"
    );
    assert_eq!(
        ok(cli(
            &db,
            &[
                "record-usage",
                "s",
                "--requests",
                "2",
                "--input-tokens",
                "10",
                "--output-tokens",
                "5",
                "--total-tokens",
                "15",
                "--input-details",
                r#"{"cached_tokens": 3}"#
            ]
        )),
        vec![json!({"recorded": true})]
    );
    assert_eq!(
        ok(cli(&db, &["usage", "s", "--turn", "2"])),
        vec![
            json!({"requests": 2, "input_tokens": 10, "output_tokens": 5, "total_tokens": 15,
                    "input_tokens_details": {"cached_tokens": 3}, "output_tokens_details": null})
        ]
    );
    assert_eq!(
        ok(cli(&db, &["usage", "s"])),
        vec![
            json!({"requests": 2, "input_tokens": 10, "output_tokens": 5, "total_tokens": 15,
                    "total_turns": 1})
        ]
    );
    assert_eq!(
        ok(cli(
            &db,
            &["branch", "s", "--from-turn", "2", "--name", "alt"]
        )),
        vec![json!({"branch_id": "alt"})]
    );
    ok(cli(
        &db,
        &[
            "add",
            "s",
            "--branch",
            "alt",
            r#"{"role": "user", "content": "Rome?"}"#,
        ],
    ));
    let alt = ok(cli(&db, &["items", "s", "--branch", "alt"]));
    assert_eq!(alt.len(), 4);
    assert_eq!(alt[3], json!({"role": "user", "content": "Rome?"}));
    let branches = ok(cli(&db, &["branches", "s"]));
    let mut ids: Vec<&str> = branches
        .iter()
        .map(|b| b["branch_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, vec!["alt", "main"]);
    assert!(branches
        .iter()
        .all(|b| b.get("user_turns").is_some() && b.get("is_current").is_some()));
    let turns = ok(cli(&db, &["turns", "s", "--branch", "alt"]));
    assert_eq!(turns[1]["content"], "Rome?");
    assert_eq!(turns[1]["can_branch"], true);
    assert_eq!(ok(cli(&db, &["search", "s", "WEATHER"]))[0]["turn"], 1);
    assert_eq!(
        ok(cli(&db, &["tools", "s"])),
        vec![json!({"tool_name": "get_weather", "usage_count": 1, "user_turn_number": 1})]
    );
    assert_eq!(
        ok(cli(&db, &["pop", "s", "--branch", "alt"])),
        vec![json!({"role": "user", "content": "Rome?"})]
    );
    // Errors are clear and change nothing.
    assert!(failed(cli(
        &db,
        &["branch", "s", "--from-turn", "2", "--name", "alt"]
    ))
    .contains("already been used"));
    assert!(failed(cli(&db, &["delete-branch", "s", "main"])).contains("'main'"));
    assert!(failed(cli(
        &db,
        &[
            "record-usage",
            "s",
            "--requests",
            "1",
            "--input-tokens",
            "1",
            "--output-tokens",
            "1",
            "--total-tokens",
            "2",
            "--output-details",
            "[1]"
        ]
    ))
    .contains("JSON object"));
    ok(cli(&db, &["delete-branch", "s", "alt"]));
    assert!(failed(cli(&db, &["pop", "s", "--branch", "alt"])).contains("does not exist"));
    // A basic-mode write is announced.
    let o = cli(&db, &["--basic", "add", "s", "\"plain\""]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("warning"));
    // Clear resets everything; a later usage record through a new handle still works.
    ok(cli(&db, &["clear", "s"]));
    assert!(ok(cli(&db, &["items", "s"])).is_empty());
    ok(cli(
        &db,
        &["add", "s", r#"{"role": "user", "content": "after"}"#],
    ));
    assert_eq!(
        ok(cli(
            &db,
            &[
                "record-usage",
                "s",
                "--requests",
                "1",
                "--input-tokens",
                "1",
                "--output-tokens",
                "1",
                "--total-tokens",
                "2"
            ]
        )),
        vec![json!({"recorded": true})]
    );
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

/// Racing `init --advanced` processes with four table pairs: exactly one pair wins, and the
/// losers leave no table behind.
#[test]
fn racing_claims_from_processes_have_exactly_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("race-processes.db");
    let children: Vec<_> = (0..4)
        .map(|i| {
            std::process::Command::new(env!("CARGO_BIN_EXE_agent-sessions"))
                .arg("--db")
                .arg(&path)
                .args(["--sessions-table", &format!("s{i}")])
                .args(["--messages-table", &format!("m{i}")])
                .args(["init", "--advanced"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let won = children
        .into_iter()
        .map(|mut c| c.wait().unwrap().success())
        .filter(|ok| *ok)
        .count();
    assert_eq!(won, 1);
    let tables = table_names(&path);
    let pairs = tables
        .iter()
        .filter(|t| t.starts_with('s') && t.len() == 2)
        .count();
    assert_eq!(pairs, 1, "{tables:?}");
}
