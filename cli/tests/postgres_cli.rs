//! The command line on PostgreSQL (`--db postgresql://…`): the session commands, Advanced mode,
//! `check`, and `stress` with its integrity check and lost-write control. Needs the server named
//! by `AGENT_SESSIONS_PG_URL`, or a throwaway cluster the test binary starts
//! (`agent_sessions_test_env::pg`); not run where neither exists, except under CI.
#![cfg(feature = "postgres")]

use std::process::{Command, Output};

fn url() -> Option<String> {
    match agent_sessions_test_env::pg::server().map(|s| s.url.as_str()) {
        Ok(base) => {
            let schema = format!("cli_{}", std::process::id());
            let mut c = postgres::Client::connect(base, postgres::NoTls).unwrap();
            c.batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
            ))
            .unwrap();
            Some(format!("{base}?options=-csearch_path%3D{schema}"))
        }
        Err(why) => {
            agent_sessions_test_env::unavailable(
                "the CLI's PostgreSQL tests",
                why,
                "install the PostgreSQL server (Debian: apt install postgresql), or set \
                 AGENT_SESSIONS_PG_URL",
            );
            None
        }
    }
}

fn cli(db: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agent-sessions"))
        .args(["--db", db])
        .args(args)
        .output()
        .unwrap()
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

#[test]
#[cfg_attr(
    agent_sessions_no_pg,
    ignore = "no PostgreSQL server: install postgresql (its binaries start a throwaway cluster) or set AGENT_SESSIONS_PG_URL"
)]
fn session_commands_check_and_stress_work_on_a_server() {
    let Some(db) = url() else { return };
    ok(cli(
        &db,
        &["add", "u", r#"{"role": "user", "content": "hé"}"#, "[1, 2]"],
    ));
    assert_eq!(
        ok(cli(&db, &["items", "u"])),
        "{\"role\":\"user\",\"content\":\"hé\"}\n[1,2]\n"
    );
    assert_eq!(ok(cli(&db, &["pop", "u"])), "[1,2]\n");
    ok(cli(
        &db,
        &[
            "--advanced",
            "add",
            "a",
            r#"{"role": "user", "content": "q"}"#,
        ],
    ));
    assert!(ok(cli(&db, &["branches", "a"])).contains("\"branch_id\":\"main\""));
    let check: serde_json::Value = serde_json::from_str(&ok(cli(&db, &["check"]))).unwrap();
    assert_eq!(check["ok"], true, "{check}");
    assert_eq!(check["messages"], 2, "{check}");

    let stress = [
        "stress",
        "--writers",
        "4",
        "--readers",
        "2",
        "--duration",
        "0.5",
        "--json",
    ];
    let report: serde_json::Value =
        serde_json::from_str(ok(cli(&db, &stress)).lines().last().unwrap()).unwrap();
    assert_eq!(report["integrity_ok"], true, "{report}");
    assert!(report["writes"].as_u64().unwrap() > 0);
    let mut lossy = stress.to_vec();
    lossy.push("--lose-one-write");
    let out = cli(&db, &lossy);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a lost write went unnoticed on PostgreSQL"
    );

    // A URL that does not connect: a clear error, exit 1, the password not shown.
    let out = cli(
        "postgresql://me:s3cret@127.0.0.1:1/x?connect_timeout=2",
        &["items", "u"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("connecting to") && !err.contains("s3cret"),
        "{err}"
    );
}
