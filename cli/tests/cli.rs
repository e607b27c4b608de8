//! The command line as a user meets it: JSON lines out, input validated before anything is
//! written, errors on stderr with exit status 1 and a message that says what was wrong.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn cli(db: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_agent-sessions"))
        .arg("--db")
        .arg(db)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "command failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn add_items_pop_clear_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cli.db");
    stdout(&cli(
        &db,
        &[
            "add",
            "u1",
            r#"{"role": "user", "content": "hé"}"#,
            "[1, 2]",
        ],
        None,
    ));
    stdout(&cli(
        &db,
        &["add", "u1"],
        Some("\"from stdin\"\n\n{\"k\": null}\n"),
    ));
    assert_eq!(
        stdout(&cli(&db, &["items", "u1"], None)),
        "{\"role\":\"user\",\"content\":\"hé\"}\n[1,2]\n\"from stdin\"\n{\"k\":null}\n"
    );
    assert_eq!(
        stdout(&cli(&db, &["items", "u1", "--limit", "1"], None)),
        "{\"k\":null}\n"
    );
    assert_eq!(
        stdout(&cli(&db, &["items", "u1", "--limit", "-1"], None))
            .lines()
            .count(),
        4
    );
    assert_eq!(stdout(&cli(&db, &["pop", "u1"], None)), "{\"k\":null}\n");
    let sessions = stdout(&cli(&db, &["sessions"], None));
    let row: serde_json::Value = serde_json::from_str(sessions.trim()).unwrap();
    assert_eq!(row["session_id"], "u1");
    assert_eq!(row["item_count"], 3);
    assert!(row["created_at"].as_str().unwrap().len() >= 19);
    stdout(&cli(&db, &["clear", "u1"], None));
    assert_eq!(stdout(&cli(&db, &["items", "u1"], None)), "");
    assert_eq!(stdout(&cli(&db, &["pop", "u1"], None)), "");
}

#[test]
fn bad_json_on_stdin_writes_nothing_and_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cli.db");
    let out = cli(
        &db,
        &["add", "u1"],
        Some("{\"ok\": 1}\n{\"ok\": 2}\n{oops\n"),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("stdin line 3") && err.contains("nothing was written"),
        "{err}"
    );
    assert_eq!(stdout(&cli(&db, &["items", "u1"], None)), "");
    let out = cli(&db, &["add", "u1", "{\"fine\": 1}", "not json"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("argument 2"));
    assert_eq!(stdout(&cli(&db, &["items", "u1"], None)), "");
}

#[test]
fn export_import_round_trip_between_files() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    stdout(&cli(&a, &["add", "s1", "{\"x\": \"é\"}", "2.5"], None));
    stdout(&cli(&a, &["add", "s2", "null"], None));
    let dump = stdout(&cli(&a, &["export"], None));
    assert_eq!(dump.lines().count(), 2);
    stdout(&cli(&b, &["import"], Some(&dump)));
    assert_eq!(
        stdout(&cli(&b, &["export"], None)),
        dump,
        "export → import → export changed"
    );
    // A malformed dump line is rejected before anything is imported.
    let c = dir.path().join("c.db");
    let out = cli(
        &c,
        &["import"],
        Some(&format!("{dump}{{\"session_id\": 5}}\n")),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("stdin line 3"));
    assert_eq!(stdout(&cli(&c, &["sessions"], None)), "");
}

#[test]
fn bad_table_names_and_bad_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x.db");
    let out = cli(
        &db,
        &["--messages-table", "m; DROP TABLE x", "items", "s"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a valid table name"));
    assert!(!db.exists());
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, "this is not a database, just text ".repeat(200)).unwrap();
    let out = cli(&junk, &["items", "s"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an SQLite database"));
}

#[test]
fn check_passes_a_sound_file_and_fails_on_corrupt_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("check.db");
    stdout(&cli(
        &db,
        &[
            "--advanced",
            "add",
            "s",
            r#"{"role": "user", "content": "hi"}"#,
            r#""ok""#,
        ],
        None,
    ));
    let report: serde_json::Value =
        serde_json::from_str(stdout(&cli(&db, &["check"], None)).trim()).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["structure"]["orphan_structure_rows"], 0);
    // Another program writes a row that is not JSON.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "INSERT INTO agent_messages (session_id, message_data) VALUES ('s', '{not json')",
        [],
    )
    .unwrap();
    conn.execute(
        "DELETE FROM message_structure WHERE id = (SELECT MIN(id) FROM message_structure)",
        [],
    )
    .unwrap();
    drop(conn);
    let out = cli(&db, &["check"], None);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(report["corrupt_rows"], 1, "{report}");
    assert_eq!(
        report["structure"]["messages_without_structure"], 2,
        "{report}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("corrupt message rows"));
}

#[test]
fn stress_reports_its_figures_and_fails_when_a_write_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("stress.db");
    let args = [
        "stress",
        "--writers",
        "4",
        "--readers",
        "2",
        "--duration",
        "0.5",
        "--json",
    ];
    let out = cli(&db, &args, None);
    let report: serde_json::Value =
        serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    assert_eq!(report["integrity_ok"], true, "{report}");
    assert!(report["writes"].as_u64().unwrap() > 0);
    assert_eq!(report["writes"], report["stored_rows"]);
    for key in [
        "writes_per_sec",
        "reads_per_sec",
        "add_latency_ms",
        "fds",
        "peak_rss_mb",
    ] {
        assert!(!report[key].is_null(), "missing {key}");
    }
    // Negative control: one acknowledged row goes missing, and stress must say so (exit 1).
    let mut lossy = args.to_vec();
    lossy.push("--lose-one-write");
    let out = cli(&db, &lossy, None);
    assert_eq!(out.status.code(), Some(1), "a lost write went unnoticed");
    let report: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(report["integrity_ok"], false);
}

#[test]
fn replace_swaps_the_history_atomically_and_validates_stdin_first() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("replace.db");
    stdout(&cli(
        &db,
        &["add", "s", "\"one\"", "\"two\"", "\"three\""],
        None,
    ));
    // A bad line: nothing is replaced, the line is named.
    let bad = cli(&db, &["replace", "s"], Some("\"summary\"\n{oops\n"));
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("line 2"), "{err}");
    assert_eq!(stdout(&cli(&db, &["items", "s"], None)).lines().count(), 3);
    stdout(&cli(
        &db,
        &["replace", "s"],
        Some("\"summary\"\n\"of three\"\n"),
    ));
    assert_eq!(
        stdout(&cli(&db, &["items", "s"], None)),
        "\"summary\"\n\"of three\"\n"
    );
}

#[test]
fn prune_lists_idle_sessions_and_deletes_them_only_with_yes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("prune.db");
    stdout(&cli(&db, &["add", "fresh", "\"hi\""], None));
    let old = r#"{"session_id": "old", "created_at": "2001-01-01 00:00:00", "updated_at": "2001-01-01 00:00:00", "messages": [{"message_data": "\"hello\"", "created_at": "2001-01-01 00:00:00"}]}"#;
    stdout(&cli(&db, &["import"], Some(&format!("{old}\n"))));
    let dry = stdout(&cli(&db, &["prune", "--idle", "30d"], None));
    assert_eq!(dry.lines().count(), 1, "{dry}");
    assert!(dry.contains("\"old\""), "{dry}");
    assert_eq!(stdout(&cli(&db, &["sessions"], None)).lines().count(), 2);
    let done = stdout(&cli(&db, &["prune", "--idle", "30d", "--yes"], None));
    assert!(done.contains("\"old\""), "{done}");
    let left = stdout(&cli(&db, &["sessions"], None));
    assert_eq!(left.lines().count(), 1);
    assert!(left.contains("\"fresh\""), "{left}");
    let bad = cli(&db, &["prune", "--idle", "a month"], None);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a duration"));
}

#[test]
fn encrypted_items_round_trip_with_the_key_and_stay_hidden_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("enc.db");
    let with_key = |key: &str, args: &[&str]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_agent-sessions"))
            .arg("--db")
            .arg(&db)
            .args(["--encryption-key-env", "TEST_SESSION_KEY"])
            .args(args)
            .env("TEST_SESSION_KEY", key)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take();
        child.wait_with_output().unwrap()
    };
    stdout(&with_key(
        "right key",
        &["add", "s", r#"{"role": "user", "content": "secret"}"#],
    ));
    assert_eq!(
        stdout(&with_key("right key", &["items", "s"])),
        "{\"role\":\"user\",\"content\":\"secret\"}\n"
    );
    // Stored as the SDK's envelope, not in clear.
    let raw = stdout(&cli(&db, &["items", "s"], None));
    assert!(
        raw.contains("\"__enc__\":1") && !raw.contains("secret"),
        "{raw}"
    );
    // A wrong key hides the item; it stays stored.
    assert_eq!(stdout(&with_key("wrong key", &["items", "s"])), "");
    assert_eq!(stdout(&cli(&db, &["items", "s"], None)).lines().count(), 1);
    // No key in the environment: a clear error, nothing done.
    let missing = cli(
        &db,
        &["--encryption-key-env", "NO_SUCH_VAR_HERE", "items", "s"],
        None,
    );
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("NO_SUCH_VAR_HERE"));
}
