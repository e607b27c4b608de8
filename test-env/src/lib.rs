//! What the workspace's tests need from the machine, found or started on first use, so that a
//! plain `cargo test --workspace` runs every suite with no setup:
//! - [`pg`]: a PostgreSQL server — the one `AGENT_SESSIONS_PG_URL` names, or a throwaway
//!   cluster this test process starts from the machine's PostgreSQL binaries (one per test
//!   binary; a watcher process stops and removes it when the test process exits, however it
//!   exits).
//! - [`python`]: the interpreter of the Python-interop tests — `AGENT_SESSIONS_PYTHON`, or the
//!   venv `target/pyenv`, made on first use.
//!
//! A test that cannot get what it needs calls [`unavailable`]: outside CI that prints why and
//! what to run on stderr (the packages' `build.rs` marks the PostgreSQL tests ignored where no
//! server can exist); under `CI=true` it fails, since a check that cannot run must never look
//! like a pass.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// What to run to make the venv the interop tests use (they try it themselves first).
pub const MAKE_VENV: &str = "python3 -m venv target/pyenv && target/pyenv/bin/pip install \
    'openai-agents[encrypt,sqlalchemy]==0.24.0' asyncpg 'psycopg[binary]' && \
    touch target/pyenv/.complete";

/// Under CI, fail; otherwise say on stderr that `test` did not run, why, and how to run it.
pub fn unavailable(test: &str, why: &str, how: &str) {
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false") {
        panic!("{test} cannot run under CI: {why}");
    }
    eprintln!("{test} NOT RUN: {why}; to run it: {how}");
}

/// The workspace root (this crate is one level below it).
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the test-env crate sits in the workspace")
}

/// The interop tests' Python: `AGENT_SESSIONS_PYTHON`, else the venv `target/pyenv`, made on
/// first use (`python3 -m venv`, then the SDK and its drivers from PyPI: a minute, once).
/// `None` where that fails (no `python3`, no network); stderr says why.
pub fn python() -> Option<PathBuf> {
    if let Some(exe) = std::env::var_os("AGENT_SESSIONS_PYTHON").filter(|v| !v.is_empty()) {
        return Some(exe.into());
    }
    static VENV: OnceLock<Option<PathBuf>> = OnceLock::new();
    VENV.get_or_init(|| match make_venv() {
        Ok(python) => Some(python),
        Err(why) => {
            eprintln!("cannot make the interop venv: {why}");
            None
        }
    })
    .clone()
}

/// What the venv holds (the SDK with its encryption and SQLAlchemy extras, PostgreSQL drivers).
const VENV_PACKAGES: &[&str] = &[
    "openai-agents[encrypt,sqlalchemy]==0.24.0",
    "asyncpg",
    "psycopg[binary]",
];

fn make_venv() -> Result<PathBuf, String> {
    let venv = workspace_root().join("target/pyenv");
    let python = venv.join("bin/python");
    let ready = venv.join(".complete");
    // Test binaries of one `cargo test` run one after another, but two runs may race: the
    // first to create the lock directory makes the venv, the other waits for it.
    let lock = workspace_root().join("target/pyenv.lock");
    std::fs::create_dir_all(workspace_root().join("target")).map_err(|e| e.to_string())?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(900);
    while std::fs::create_dir(&lock).is_err() {
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "{} is held for 15 minutes (remove it if stale)",
                lock.display()
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let made = (|| {
        if ready.exists() {
            return Ok(python.clone());
        }
        eprintln!(
            "making {} for the Python-interop tests (once): python3 -m venv, pip install {}",
            venv.display(),
            VENV_PACKAGES.join(" ")
        );
        let _ = std::fs::remove_dir_all(&venv);
        let status = |c: &mut Command, what: &str| match c.status() {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(format!("{what}: {s}")),
            Err(e) => Err(format!("{what}: {e}")),
        };
        status(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            "python3 -m venv",
        )?;
        status(
            Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(VENV_PACKAGES)
                .stdout(Stdio::null()),
            "pip install",
        )?;
        std::fs::write(&ready, VENV_PACKAGES.join("\n")).map_err(|e| e.to_string())?;
        Ok(python.clone())
    })();
    let _ = std::fs::remove_dir(&lock);
    made
}

pub mod pg {
    //! The PostgreSQL server of the tests.
    use super::*;

    /// A server the tests may use.
    pub struct Server {
        /// `postgresql://…` of its `postgres` database.
        pub url: String,
        /// The throwaway cluster behind it, when known — started here, or by
        /// `scripts/pg-cluster.sh` (`PG_BIN`, `PG_CLUSTER_DIR`). `None`: a server named from
        /// outside, which the tests never restart.
        pub cluster: Option<Cluster>,
    }

    /// A throwaway cluster: its binaries and its directory (data, socket, log).
    pub struct Cluster {
        pub bin: PathBuf,
        pub dir: PathBuf,
    }

    /// The server: `AGENT_SESSIONS_PG_URL` (with `PG_BIN`/`PG_CLUSTER_DIR` when
    /// `scripts/pg-cluster.sh` started it), or a cluster started now; `Err` says why there is
    /// none.
    pub fn server() -> Result<&'static Server, &'static str> {
        static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
        SERVER
            .get_or_init(|| match std::env::var("AGENT_SESSIONS_PG_URL") {
                Ok(url) => Ok(Server {
                    url,
                    cluster: match (
                        std::env::var_os("PG_BIN"),
                        std::env::var_os("PG_CLUSTER_DIR"),
                    ) {
                        (Some(bin), Some(dir)) => Some(Cluster {
                            bin: bin.into(),
                            dir: dir.into(),
                        }),
                        _ => None,
                    },
                }),
                Err(_) => start(),
            })
            .as_ref()
            .map_err(String::as_str)
    }

    /// The server's URL, or the test fails saying why (for suites that cannot run without it).
    pub fn url() -> &'static str {
        match server() {
            Ok(s) => &s.url,
            Err(why) => panic!("no PostgreSQL server for the tests: {why}"),
        }
    }

    /// The newest `/usr/lib/postgresql/<version>/bin` with a server, or `pg_config --bindir`.
    pub fn binaries() -> Option<PathBuf> {
        let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let version = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                bin.join("pg_ctl").exists().then_some((version, bin))
            })
            .collect();
        dirs.sort();
        dirs.pop().map(|(_, bin)| bin).or_else(|| {
            let out = Command::new("pg_config").arg("--bindir").output().ok()?;
            let bin = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
            bin.join("pg_ctl").exists().then_some(bin)
        })
    }

    impl Cluster {
        /// `pg_ctl`, run as the cluster's owner (`postgres` when the tests run as root).
        pub fn pg_ctl(&self) -> Command {
            as_owner(&self.bin.join("pg_ctl"))
        }
    }

    /// `program`, run as `postgres` when this process is root (the server refuses root).
    fn as_owner(program: &Path) -> Command {
        let mut c = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        c.stdin(Stdio::null());
        c
    }

    fn start() -> Result<Server, String> {
        let bin = binaries().ok_or(
            "AGENT_SESSIONS_PG_URL is not set and no PostgreSQL server binaries were found \
             (/usr/lib/postgresql/*/bin, pg_config)",
        )?;
        let root = is_root();
        let dir = PathBuf::from(format!(
            "/tmp/agent-sessions-test-pg.{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        if root {
            run(
                Command::new("chown").args(["postgres:postgres"]).arg(&dir),
                "chown",
            )?;
        }
        run(
            as_owner(&bin.join("initdb"))
                .arg("-D")
                .arg(dir.join("data"))
                .args([
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                    "--no-sync",
                ]),
            "initdb",
        )?;
        let port = free_port()?;
        // fsync stays on: the durability and crash tests need a server that really syncs.
        run(
            as_owner(&bin.join("pg_ctl"))
                .arg("-D")
                .arg(dir.join("data"))
                .arg("-l")
                .arg(dir.join("log"))
                .args(["-w", "-t", "60", "-o"])
                .arg(format!(
                    "-k {} -c listen_addresses=127.0.0.1 -p {port} -c max_connections=200",
                    dir.display()
                ))
                .arg("start"),
            "pg_ctl start",
        )?;
        watch(&bin, &dir, root)?;
        eprintln!(
            "started a throwaway PostgreSQL cluster on port {port} ({})",
            dir.display()
        );
        Ok(Server {
            url: format!("postgresql://postgres@127.0.0.1:{port}/postgres"),
            cluster: Some(Cluster { bin, dir }),
        })
    }

    /// A watcher that outlives nothing: it waits for this process to exit, then stops the
    /// cluster and removes its directory (a test binary has no exit hook of its own).
    fn watch(bin: &Path, dir: &Path, root: bool) -> Result<(), String> {
        let stop = format!(
            "{runas}'{pg_ctl}' -D '{data}' -m immediate -w stop >/dev/null 2>&1; rm -rf '{dir}'",
            runas = if root { "runuser -u postgres -- " } else { "" },
            pg_ctl = bin.join("pg_ctl").display(),
            data = dir.join("data").display(),
            dir = dir.display(),
        );
        let script = format!(
            "while kill -0 {} 2>/dev/null; do sleep 0.2; done; {stop}",
            std::process::id()
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(drop)
            .map_err(|e| format!("starting the cluster's watcher: {e}"))
    }

    fn run(c: &mut Command, what: &str) -> Result<(), String> {
        let out = c.output().map_err(|e| format!("{what}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{what} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn free_port() -> Result<u16, String> {
        let l =
            std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
        l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
    }

    fn is_root() -> bool {
        Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
    }
}
