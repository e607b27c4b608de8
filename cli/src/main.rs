//! The `agent-sessions` command line: every command is one or more operations of the shared
//! vocabulary (`Op`) run on a store; machine output is JSON lines on stdout, errors go to stderr
//! with a non-zero exit status. Input is validated completely before anything is written.
//!
//! Mode: Advanced (structure rows, branches, usage — the Python SDK's `AdvancedSQLiteSession`)
//! when the file's structure tables belong to the configured table pair, or with `--advanced`
//! (which creates and claims them); basic otherwise, or with `--basic`. A basic-mode write into
//! a file with Advanced structure is announced on stderr first, since Advanced sessions never
//! show such rows and delete them as orphans.

use std::io::{self, BufRead, BufWriter, Write};
use std::process::ExitCode;

use agent_sessions::{
    BlockingAdvancedSession, ConversationTurn, Database, EncryptedSession, EncryptionKey,
    EncryptionOptions, Error, Item, Op, Outcome, Session, SessionDump, Store, StructureStatus,
    Usage,
};
use agent_sessions_model::RawMessage;
use clap::{ArgGroup, CommandFactory, FromArgMatches, Parser, Subcommand};
use serde::Serialize;
use serde_json::{json, Value};

mod check;
mod stress;

#[derive(Parser)]
#[command(
    name = "agent-sessions",
    version,
    about = "Conversation-history store for AI agents (SQLite, compatible with the OpenAI Agents SDK)"
)]
struct Cli {
    /// Database: an SQLite file, or a PostgreSQL server URL (`postgres://user@host/db`,
    /// `postgresql://…`, also `?host=/run/postgresql` for a unix socket).
    #[arg(
        long,
        global = true,
        env = "AGENT_SESSIONS_DB",
        default_value = "agent_sessions.db"
    )]
    db: Database,
    /// Sessions table name (plain or double-quoted identifier).
    #[arg(long, global = true, default_value = "agent_sessions")]
    sessions_table: String,
    /// Messages table name (plain or double-quoted identifier).
    #[arg(long, global = true, default_value = "agent_messages")]
    messages_table: String,
    /// Basic mode (messages only), even when the file has Advanced structure tables.
    #[arg(long, global = true, conflicts_with = "advanced")]
    basic: bool,
    /// Advanced mode: create the structure tables and claim them for the table pair if needed
    /// (`init --advanced` does only that).
    #[arg(long, global = true)]
    advanced: bool,
    /// Encrypt items as the SDK's EncryptedSession does, with the master key held in this
    /// environment variable (never pass a key itself on a command line: shell histories and
    /// `ps` keep it). Applies to add, items, pop and clear.
    #[arg(long, global = true, value_name = "VAR")]
    encryption_key_env: Option<String>,
    /// With encryption: seconds after which an item expires (hidden from reads, still
    /// stored); 0 for never. The SDK's default is 600.
    #[arg(long, global = true, default_value_t = 600)]
    ttl: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the tables (idempotent); with --advanced also the structure tables.
    Init,
    /// Append items: JSON arguments, else one JSON item per line on stdin. All or nothing.
    Add {
        session: String,
        items: Vec<String>,
        /// Advanced: switch to this branch first.
        #[arg(long)]
        branch: Option<String>,
    },
    /// Print items as JSON lines, oldest first.
    Items {
        session: String,
        /// Newest N items (0: none; negative: all).
        #[arg(long, allow_negative_numbers = true)]
        limit: Option<i64>,
        /// Advanced: the items of this branch (default: main).
        #[arg(long)]
        branch: Option<String>,
    },
    /// Remove the newest item and print it (nothing if the session is empty).
    Pop {
        session: String,
        /// Advanced: switch to this branch first.
        #[arg(long)]
        branch: Option<String>,
    },
    /// Delete a session and its items (Advanced: also its structure and usage).
    Clear { session: String },
    /// Replace a session's whole history, atomically, with one JSON item per line on stdin
    /// (validated completely first). Advanced: also clears structure and usage, then adds on
    /// main.
    Replace { session: String },
    /// Delete sessions not updated for longer than --idle (by the sessions table's
    /// updated_at). Lists them only, unless --yes is given. One JSON line per session.
    Prune {
        /// How long a session must have been idle: a number with a unit, s, m, h or d
        /// (e.g. 30d, 12h).
        #[arg(long, value_parser = parse_idle)]
        idle: std::time::Duration,
        /// Really delete (otherwise a dry run that deletes nothing).
        #[arg(long)]
        yes: bool,
    },
    /// Advanced: one JSON line per branch with rows: branch_id, message_count, user_turns,
    /// is_current, created_at.
    Branches { session: String },
    /// Advanced: create a branch from a user turn (the turns before it are copied) and print
    /// {"branch_id": ...}.
    #[command(group(ArgGroup::new("from").required(true).args(["from_turn", "from_content"])))]
    Branch {
        session: String,
        /// The branch turn number to branch from.
        #[arg(long, allow_negative_numbers = true)]
        from_turn: Option<i64>,
        /// Branch from the first user turn containing this text.
        #[arg(long)]
        from_content: Option<String>,
        /// The new branch's id (never used before in the session); generated when absent.
        #[arg(long)]
        name: Option<String>,
        /// The branch to branch from (default: main).
        #[arg(long)]
        branch: Option<String>,
    },
    /// Advanced: delete a branch (its structure, usage and unshared messages).
    DeleteBranch {
        session: String,
        id: String,
        /// Allow deleting the current branch.
        #[arg(long)]
        force: bool,
    },
    /// Advanced: user turns as JSON lines: turn, content (cut at 100 chars), full_content,
    /// timestamp, can_branch.
    Turns {
        session: String,
        #[arg(long)]
        branch: Option<String>,
    },
    /// Advanced: user turns containing TERM (ASCII case-insensitive), as `turns` prints them.
    Search {
        session: String,
        term: String,
        #[arg(long)]
        branch: Option<String>,
    },
    /// Advanced: tool calls per tool and turn: tool_name, usage_count, user_turn_number.
    Tools {
        session: String,
        #[arg(long)]
        branch: Option<String>,
    },
    /// Advanced: usage totals (of --branch, else of every branch), or one turn's usage with
    /// --turn (of --branch, else main); nothing when there is none.
    Usage {
        session: String,
        #[arg(long)]
        branch: Option<String>,
        #[arg(long, allow_negative_numbers = true)]
        turn: Option<i64>,
    },
    /// Advanced: record a run's usage on the newest turn of the branch (replacing an earlier
    /// record of that turn); prints {"recorded": true|false}.
    RecordUsage {
        session: String,
        /// Switch to this branch first.
        #[arg(long)]
        branch: Option<String>,
        #[arg(long)]
        requests: i64,
        #[arg(long)]
        input_tokens: i64,
        #[arg(long)]
        output_tokens: i64,
        #[arg(long)]
        total_tokens: i64,
        /// A JSON object, e.g. '{"cached_tokens": 10}'.
        #[arg(long)]
        input_details: Option<String>,
        /// A JSON object, e.g. '{"reasoning_tokens": 7}'.
        #[arg(long)]
        output_details: Option<String>,
    },
    /// One JSON line per session: id, item count, created/updated.
    Sessions,
    /// Dump sessions (all when none named) as JSON lines, rows exactly as stored.
    Export { sessions: Vec<String> },
    /// Load the JSON lines written by `export` from stdin.
    Import,
    /// Run the concurrent session stress workload and report throughput and resource use.
    Stress(stress::Args),
    /// Integrity check: SQLite's own and the store's invariants; exit 1 on a problem.
    Check,
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
    Store::builder(cli.db.clone())
        .sessions_table(&cli.sessions_table)
        .messages_table(&cli.messages_table)
        .create_structure_tables(cli.advanced)
        .open()
}

/// How this invocation treats the file.
struct Mode {
    /// Run session commands as Advanced sessions.
    advanced: bool,
    /// The file's structure tables belong to the configured pair.
    owned: bool,
}

impl Mode {
    fn of(cli: &Cli, store: &Store) -> agent_sessions::Result<Mode> {
        let owned = cli.advanced || store.structure_status()? == StructureStatus::Owned;
        Ok(Mode {
            advanced: owned && !cli.basic,
            owned,
        })
    }

    /// Refuse an Advanced-only command in basic mode, saying what to do.
    fn require_advanced(&self, cli: &Cli, what: &str) -> CliResult<()> {
        if self.advanced {
            return Ok(());
        }
        let why = if cli.basic {
            format!("`{what}` needs Advanced mode; drop --basic")
        } else {
            format!(
                "`{what}` needs Advanced mode, but {} has no structure tables owned by {}/{}; run \
                 `agent-sessions init --advanced` (or pass --advanced) to create and claim them",
                cli.db, cli.sessions_table, cli.messages_table
            )
        };
        Err(Error::InvalidArgument(why).into())
    }

    /// Announce a basic-mode write into a file whose structure tables are ours.
    fn warn_basic_write(&self, cli: &Cli, what: &str) {
        if self.owned {
            eprintln!(
                "agent-sessions: warning: {} has Advanced structure tables, but `{what}` writes \
                 in basic mode: its rows change only the messages table, stay invisible to \
                 Advanced sessions and are deleted by their orphan cleanup (pop, delete-branch){}",
                cli.db,
                if cli.basic {
                    "; drop --basic to write in Advanced mode"
                } else {
                    ""
                }
            );
        }
    }
}

/// An Advanced handle on `session`, switched to `branch` first when one is given.
fn advanced(
    store: &Store,
    session: &str,
    branch: Option<&str>,
) -> agent_sessions::Result<BlockingAdvancedSession> {
    let a = store.advanced_session(session)?.blocking();
    if let Some(b) = branch {
        a.switch_to_branch(b)?;
    }
    Ok(a)
}

fn turn_json(t: &ConversationTurn) -> Value {
    json!({"turn": t.turn, "content": t.content, "full_content": t.full_content,
           "timestamp": t.timestamp, "can_branch": t.can_branch})
}

fn parse_details(text: &Option<String>, what: &str) -> CliResult<Option<Value>> {
    let Some(text) = text else { return Ok(None) };
    let v = parse_json(text, what)?;
    if !v.is_object() {
        return Err(Error::InvalidArgument(format!(
            "{what} must be a JSON object such as {{\"cached_tokens\": 10}}; nothing was written"
        ))
        .into());
    }
    Ok(Some(v))
}

fn run(cli: Cli, db_given: bool) -> CliResult<ExitCode> {
    match &cli.command {
        Command::Stress(args) => {
            return stress::run(
                &cli.db,
                db_given,
                args,
                cli.advanced,
                &cli.sessions_table,
                &cli.messages_table,
            )
        }
        Command::Check => return check::run(&cli.db, &cli.sessions_table, &cli.messages_table),
        _ => {}
    }
    let store = open(&cli)?;
    let mode = Mode::of(&cli, &store)?;
    let out = io::stdout();
    let mut out = BufWriter::new(out.lock());
    if let Some(var) = &cli.encryption_key_env {
        encrypted(&cli, &store, &mode, var, &mut out)?;
        out.flush()?;
        store.close();
        return Ok(ExitCode::SUCCESS);
    }
    // Branch arguments only mean something to Advanced sessions.
    if let Command::Add {
        branch: Some(_), ..
    }
    | Command::Items {
        branch: Some(_), ..
    }
    | Command::Pop {
        branch: Some(_), ..
    } = &cli.command
    {
        mode.require_advanced(&cli, "--branch")?;
    }
    match &cli.command {
        Command::Init => {}
        Command::Add {
            session,
            items,
            branch,
        } => {
            let items = add_input(items)?;
            if mode.advanced {
                advanced(&store, session, branch.as_deref())?.add_items(items)?;
            } else {
                mode.warn_basic_write(&cli, "add");
                store.execute_blocking(Op::AddItems {
                    session: session.clone(),
                    items,
                })?;
            }
        }
        Command::Items {
            session,
            limit,
            branch,
        } => {
            let items = if mode.advanced {
                advanced(&store, session, None)?.get_branch_items(branch.as_deref(), *limit)?
            } else {
                match store.execute_blocking(Op::GetItems {
                    session: session.clone(),
                    limit: *limit,
                })? {
                    Outcome::Items(items) => items,
                    _ => Vec::new(),
                }
            };
            for item in items {
                writeln!(out, "{item}")?;
            }
        }
        Command::Pop { session, branch } => {
            let popped = if mode.advanced {
                advanced(&store, session, branch.as_deref())?.pop_item()?
            } else {
                mode.warn_basic_write(&cli, "pop");
                match store.execute_blocking(Op::PopItem {
                    session: session.clone(),
                })? {
                    Outcome::Popped(item) => item,
                    _ => None,
                }
            };
            if let Some(item) = popped {
                writeln!(out, "{item}")?;
            }
        }
        Command::Clear { session } => {
            if mode.advanced {
                advanced(&store, session, None)?.clear_session()?;
            } else {
                mode.warn_basic_write(&cli, "clear");
                store.execute_blocking(Op::ClearSession {
                    session: session.clone(),
                })?;
            }
        }
        Command::Replace { session } => {
            let items = read_items(io::stdin().lock())?;
            if mode.advanced {
                advanced(&store, session, None)?.replace_items(items)?;
            } else {
                mode.warn_basic_write(&cli, "replace");
                store.execute_blocking(Op::ReplaceItems {
                    session: session.clone(),
                    items,
                })?;
            }
        }
        Command::Prune { idle, yes } => {
            let pruned = store.prune_idle_blocking(*idle, !yes)?;
            for s in &pruned {
                line(&mut out, s)?;
            }
            let verb = if *yes {
                "deleted"
            } else {
                "would delete (dry run; --yes deletes)"
            };
            eprintln!("agent-sessions: prune: {verb} {} session(s)", pruned.len());
        }
        Command::Branches { session } => {
            mode.require_advanced(&cli, "branches")?;
            for b in advanced(&store, session, None)?.list_branches()? {
                line(&mut out, &b)?;
            }
        }
        Command::Branch {
            session,
            from_turn,
            from_content,
            name,
            branch,
        } => {
            mode.require_advanced(&cli, "branch")?;
            let a = advanced(&store, session, branch.as_deref())?;
            let id = match (from_turn, from_content) {
                (Some(turn), _) => a.create_branch_from_turn(*turn, name.as_deref())?,
                (None, Some(term)) => a.create_branch_from_content(term, name.as_deref())?,
                (None, None) => unreachable!("clap requires --from-turn or --from-content"),
            };
            writeln!(out, "{}", json!({"branch_id": id}))?;
        }
        Command::DeleteBranch { session, id, force } => {
            mode.require_advanced(&cli, "delete-branch")?;
            advanced(&store, session, None)?.delete_branch(id, *force)?;
        }
        Command::Turns { session, branch } => {
            mode.require_advanced(&cli, "turns")?;
            for t in advanced(&store, session, None)?.get_conversation_turns(branch.as_deref())? {
                writeln!(out, "{}", turn_json(&t))?;
            }
        }
        Command::Search {
            session,
            term,
            branch,
        } => {
            mode.require_advanced(&cli, "search")?;
            let a = advanced(&store, session, None)?;
            for t in a.find_turns_by_content(term, branch.as_deref())? {
                writeln!(out, "{}", turn_json(&t))?;
            }
        }
        Command::Tools { session, branch } => {
            mode.require_advanced(&cli, "tools")?;
            for t in advanced(&store, session, None)?.get_tool_usage(branch.as_deref())? {
                line(&mut out, &t)?;
            }
        }
        Command::Usage {
            session,
            branch,
            turn,
        } => {
            mode.require_advanced(&cli, "usage")?;
            let a = advanced(&store, session, None)?;
            match turn {
                None => {
                    if let Some(totals) = a.get_session_usage(branch.as_deref())? {
                        line(&mut out, &totals)?;
                    }
                }
                Some(n) => {
                    // One turn's usage without its number, as the SDK's get_turn_usage(n).
                    if let Some(t) = a.get_turn_usage(Some(*n), branch.as_deref())?.first() {
                        line(&mut out, &t.usage)?;
                    }
                }
            }
        }
        Command::RecordUsage {
            session,
            branch,
            requests,
            input_tokens,
            output_tokens,
            total_tokens,
            input_details,
            output_details,
        } => {
            mode.require_advanced(&cli, "record-usage")?;
            let usage = Usage {
                requests: *requests,
                input_tokens: *input_tokens,
                output_tokens: *output_tokens,
                total_tokens: *total_tokens,
                input_tokens_details: parse_details(input_details, "--input-details")?,
                output_tokens_details: parse_details(output_details, "--output-details")?,
            };
            let recorded = advanced(&store, session, branch.as_deref())?.record_usage(usage)?;
            if !recorded {
                eprintln!(
                    "agent-sessions: nothing recorded: the branch of session '{session}' has no \
                     turn yet"
                );
            }
            writeln!(out, "{}", json!({ "recorded": recorded }))?;
        }
        Command::Sessions => {
            for s in store.list_sessions_blocking()? {
                line(&mut out, &s)?;
            }
        }
        Command::Export { sessions } => {
            if mode.owned {
                eprintln!(
                    "agent-sessions: note: export writes the messages tables only; Advanced \
                     structure (turns, branches) and usage rows are not exported"
                );
            }
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
                    line(&mut out, &d)?;
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
            mode.warn_basic_write(&cli, "import");
            for d in dumps {
                store.execute_blocking(Op::Import(d))?;
            }
        }
        Command::Stress(_) | Command::Check => unreachable!("handled above"),
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
/// add / items / pop / clear through the SDK's EncryptedSession format.
fn encrypted(
    cli: &Cli,
    store: &Store,
    mode: &Mode,
    var: &str,
    out: &mut impl Write,
) -> CliResult<()> {
    let master = std::env::var(var).map_err(|_| {
        format!("--encryption-key-env {var}: the environment variable {var} is not set")
    })?;
    let key = EncryptionKey::new(&master)?;
    drop(master);
    let ttl = (cli.ttl > 0).then(|| std::time::Duration::from_secs(cli.ttl));
    let session_id = match &cli.command {
        Command::Add { session, .. }
        | Command::Items { session, .. }
        | Command::Pop { session, .. }
        | Command::Clear { session } => session,
        _ => return Err("--encryption-key-env applies to add, items, pop and clear only".into()),
    };
    let inner: Box<dyn Session> = if mode.advanced {
        Box::new(store.advanced_session(session_id.clone())?)
    } else {
        Box::new(store.session(session_id.clone()))
    };
    let session = EncryptedSession::with_options(inner, &key, EncryptionOptions::new().ttl(ttl));
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    runtime.block_on(async {
        match &cli.command {
            Command::Add { items, .. } => {
                let items = add_input(items)?;
                session.add_items(items).await?;
            }
            Command::Items { limit, .. } => {
                for item in session.get_items(*limit).await? {
                    line(out, &item)?;
                }
            }
            Command::Pop { .. } => {
                if let Some(item) = session.pop_item().await? {
                    line(out, &item)?;
                }
            }
            _ => session.clear_session().await?,
        }
        Ok(())
    })
}

/// The items of `add`: its JSON arguments, else one JSON item per stdin line; all validated
/// before anything is written.
fn add_input(args: &[String]) -> CliResult<Vec<Item>> {
    if args.is_empty() {
        return read_items(io::stdin().lock());
    }
    args.iter()
        .enumerate()
        .map(|(i, s)| parse_json(s, &format!("argument {}", i + 1)))
        .collect()
}

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

/// One JSON line: the value's serde form (the SDK's field names), compact.
fn line(out: &mut impl Write, value: &impl Serialize) -> CliResult<()> {
    serde_json::to_writer(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

/// Import is parsed by hand rather than by serde so that an error names the field at fault
/// and a `null` message timestamp is read as none, as before.
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

/// `30d`, `12h`, `90m`, `45s`: a whole number and a unit.
fn parse_idle(text: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{text:?} is not a duration such as 30d, 12h, 90m or 45s");
    let unit = text.chars().last().ok_or_else(bad)?;
    let seconds = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(bad()),
    };
    let n: u64 = text[..text.len() - 1].parse().map_err(|_| bad())?;
    n.checked_mul(seconds)
        .map(std::time::Duration::from_secs)
        .ok_or_else(bad)
}
