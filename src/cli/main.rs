//! The `agent-sessions` command line: every command is one or more operations of the shared
//! vocabulary (`Op`) run on a store; machine output is JSON lines on stdout, errors go to stderr
//! with a non-zero exit status. Input is validated completely before anything is written.

use std::io::{self, BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use agent_sessions::{Error, Item, Op, Outcome, SessionDump, Store};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use serde_json::{json, Value};
use session_model::RawMessage;

mod stress;

#[derive(Parser)]
#[command(
    name = "agent-sessions",
    version,
    about = "Conversation-history store for AI agents (SQLite, compatible with the OpenAI Agents SDK)"
)]
struct Cli {
    /// Database file.
    #[arg(
        long,
        global = true,
        env = "AGENT_SESSIONS_DB",
        default_value = "agent_sessions.db"
    )]
    db: PathBuf,
    /// Sessions table name (plain or double-quoted identifier).
    #[arg(long, global = true, default_value = "agent_sessions")]
    sessions_table: String,
    /// Messages table name (plain or double-quoted identifier).
    #[arg(long, global = true, default_value = "agent_messages")]
    messages_table: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the tables (idempotent).
    Init,
    /// Append items: JSON arguments, else one JSON item per line on stdin. All or nothing.
    Add { session: String, items: Vec<String> },
    /// Print items as JSON lines, oldest first.
    Items {
        session: String,
        /// Newest N items (0: none; negative: all).
        #[arg(long, allow_negative_numbers = true)]
        limit: Option<i64>,
    },
    /// Remove the newest item and print it (nothing if the session is empty).
    Pop { session: String },
    /// Delete a session and its items.
    Clear { session: String },
    /// One JSON line per session: id, item count, created/updated.
    Sessions,
    /// Dump sessions (all when none named) as JSON lines, rows exactly as stored.
    Export { sessions: Vec<String> },
    /// Load the JSON lines written by `export` from stdin.
    Import,
    /// Run the concurrent session stress workload and report throughput and resource use.
    Stress(stress::Args),
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let db_given = !matches!(
        matches.value_source("db"),
        Some(clap::parser::ValueSource::DefaultValue) | None
    );
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match run(cli, db_given) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("agent-sessions: error: {e}");
            ExitCode::FAILURE
        }
    }
}

type CliResult<T> = Result<T, Box<dyn std::error::Error>>;

fn open(cli: &Cli) -> agent_sessions::Result<Store> {
    Store::builder(&cli.db)
        .sessions_table(&cli.sessions_table)
        .messages_table(&cli.messages_table)
        .open()
}

fn run(cli: Cli, db_given: bool) -> CliResult<ExitCode> {
    if let Command::Stress(args) = &cli.command {
        return stress::run(
            &cli.db,
            db_given,
            args,
            &cli.sessions_table,
            &cli.messages_table,
        );
    }
    let store = open(&cli)?;
    let out = io::stdout();
    let mut out = BufWriter::new(out.lock());
    match &cli.command {
        Command::Init => {}
        Command::Add { session, items } => {
            let items = if items.is_empty() {
                read_items(io::stdin().lock())?
            } else {
                items
                    .iter()
                    .enumerate()
                    .map(|(i, s)| parse_json(s, &format!("argument {}", i + 1)))
                    .collect::<CliResult<Vec<Item>>>()?
            };
            store.execute_blocking(Op::AddItems {
                session: session.clone(),
                items,
            })?;
        }
        Command::Items { session, limit } => {
            if let Outcome::Items(items) = store.execute_blocking(Op::GetItems {
                session: session.clone(),
                limit: *limit,
            })? {
                for item in items {
                    writeln!(out, "{item}")?;
                }
            }
        }
        Command::Pop { session } => {
            if let Outcome::Popped(Some(item)) = store.execute_blocking(Op::PopItem {
                session: session.clone(),
            })? {
                writeln!(out, "{item}")?;
            }
        }
        Command::Clear { session } => {
            store.execute_blocking(Op::ClearSession {
                session: session.clone(),
            })?;
        }
        Command::Sessions => {
            for s in store.list_sessions_blocking()? {
                let line = json!({"session_id": s.session_id, "item_count": s.item_count,
                                  "created_at": s.created_at, "updated_at": s.updated_at});
                writeln!(out, "{line}")?;
            }
        }
        Command::Export { sessions } => {
            let ids = if sessions.is_empty() {
                store
                    .list_sessions_blocking()?
                    .into_iter()
                    .map(|s| s.session_id)
                    .collect()
            } else {
                sessions.clone()
            };
            for id in ids {
                if let Outcome::Dump(d) = store.execute_blocking(Op::Export { session: id })? {
                    writeln!(out, "{}", dump_to_json(&d))?;
                }
            }
        }
        Command::Import => {
            let mut dumps = Vec::new();
            for (n, line) in io::stdin().lock().lines().enumerate() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                let where_ = format!("stdin line {}", n + 1);
                dumps.push(dump_from_json(&parse_json(&line, &where_)?, &where_)?);
            }
            for d in dumps {
                store.execute_blocking(Op::Import(d))?;
            }
        }
        Command::Stress(_) => unreachable!("handled above"),
    }
    out.flush()?;
    store.close();
    Ok(ExitCode::SUCCESS)
}

fn parse_json(text: &str, what: &str) -> CliResult<Value> {
    serde_json::from_str(text).map_err(|e| {
        Error::InvalidArgument(format!(
            "{what} is not valid JSON ({e}); nothing was written"
        ))
        .into()
    })
}

/// One item per non-blank line; the whole input is parsed before anything is written.
fn read_items(input: impl BufRead) -> CliResult<Vec<Item>> {
    let mut items = Vec::new();
    for (n, line) in input.lines().enumerate() {
        let line = line?;
        if !line.trim().is_empty() {
            items.push(parse_json(&line, &format!("stdin line {}", n + 1))?);
        }
    }
    Ok(items)
}

fn dump_to_json(d: &SessionDump) -> Value {
    let messages: Vec<Value> = d
        .messages
        .iter()
        .map(|m| json!({"message_data": m.message_data, "created_at": m.created_at}))
        .collect();
    json!({"session_id": d.session_id, "created_at": d.created_at,
           "updated_at": d.updated_at, "messages": messages})
}

fn dump_from_json(v: &Value, what: &str) -> CliResult<SessionDump> {
    let bad = |field: &str| -> Box<dyn std::error::Error> {
        Error::InvalidArgument(format!(
            "{what}: field {field:?} is missing or has the wrong type (expected the format \
             written by `export`); nothing was written"
        ))
        .into()
    };
    let text = |v: &Value, field: &str| -> CliResult<Option<String>> {
        match v.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(bad(field)),
        }
    };
    let session_id = text(v, "session_id")?.ok_or_else(|| bad("session_id"))?;
    let messages = v
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("messages"))?
        .iter()
        .map(|m| {
            Ok(RawMessage {
                message_data: text(m, "message_data")?.ok_or_else(|| bad("message_data"))?,
                created_at: text(m, "created_at")?.unwrap_or_default(),
            })
        })
        .collect::<CliResult<Vec<_>>>()?;
    Ok(SessionDump {
        session_id,
        created_at: text(v, "created_at")?,
        updated_at: text(v, "updated_at")?,
        messages,
    })
}
