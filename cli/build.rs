//! A probe for this package's own tests, left out of the published crate (`include` in
//! Cargo.toml): where the machine has no PostgreSQL server binaries and no
//! `AGENT_SESSIONS_PG_URL`, it sets `cfg(agent_sessions_no_pg)`, under which the tests that
//! need a server are reported as ignored, with the reason — except under `CI=true`, where they
//! stay and fail. (It looks once per build of the package: after installing PostgreSQL, `touch
//! build.rs`.)
fn main() {
    println!("cargo::rustc-check-cfg=cfg(agent_sessions_no_pg)");
    println!("cargo::rerun-if-env-changed=AGENT_SESSIONS_PG_URL");
    println!("cargo::rerun-if-env-changed=CI");
    println!("cargo::rerun-if-changed=build.rs");
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
    let url = std::env::var_os("AGENT_SESSIONS_PG_URL").is_some();
    let binaries = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.path().join("bin/pg_ctl").exists());
    if !(ci || url || binaries) {
        println!("cargo::rustc-cfg=agent_sessions_no_pg");
        println!(
            "cargo::warning=no PostgreSQL server binaries and no AGENT_SESSIONS_PG_URL: the \
             PostgreSQL tests are ignored"
        );
    }
}
