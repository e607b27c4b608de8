//! Encryption at rest ([`EncryptedSession`]): the SDK's envelope, key derivation, TTL and read
//! rules, on every session type, and interop with the real SDK's `EncryptedSession`
//! (`openai-agents==0.24.0` with `cryptography`) in both directions, over basic and Advanced
//! sessions.
//!
//! The Python side is `tests/python/encryption_interop.py`, run with `AGENT_SESSIONS_PYTHON`, or the venv `target/pyenv` the
//! tests make on first use (`agent_sessions_test_env::python`). Where neither can be had they do
//! not run (stderr says why and what to run), and under CI that fails them.
//!
//! Values are compared through their `serde_json` text (order-sensitive, tells `1` from `1.0`).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, UNIX_EPOCH};

use agent_sessions::testing::ModelSession;
use agent_sessions::{
    EncryptedSession, EncryptionKey, EncryptionOptions, Error, PopRule, Session, SessionSettings,
    Store,
};
use rusqlite::Connection;
use serde_json::{json, Value};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/python/encryption_interop.py"
);
const SDK_VERSION: &str = "0.24.0";
/// The fixed "now" of the clock-dependent scenarios.
const T0: u64 = 1_700_000_000;
const KEY: &str = "master key one";
/// A Fernet-format key (url-safe base64 of 32 bytes).
const FERNET_KEY: &str = "EtfZ2drpgun-WAqcF1JZsygxqtpyx6LuMhrk6rJYf_s=";

fn fixture() -> Vec<Value> {
    serde_json::from_str(
        r#"[{"role": "user", "content": "héllo wörld — 中文 😀 naïve ☃"},
            {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "annotations": [],
               "text": "quote \" backslash \\ slash / nl \n tab \t cr \r bs \b ff \f nul \u0000 us \u001f del \u007f nbsp \u00a0 \u2028"}]},
            {"zeta": 1, "alpha": {"y": [1, {"b": 2, "a": []}], "x": {}}, "Ä": {"中": "😀"}},
            {"floats": [0.1, 1e16, 1e-7, 2.5, -0.0, 0.0, 1.0, 1e22, 0.0001, 1e-5, 5e-324, 1e100, 100.0]},
            {"ints": [0, -1, 9007199254740993, 9223372036854775807, -9223372036854775808, 18446744073709551615]},
            true, "bare string ✓", 42, -7.25, [1, [2, [3, []]]], {}, [], ""]"#,
    )
    .expect("fixture")
}

/// The fixture's items the SDK's `EncryptedSession` can write (it takes dicts only).
fn dicts() -> Vec<Value> {
    fixture().into_iter().filter(Value::is_object).collect()
}

fn text(v: &Value) -> String {
    serde_json::to_string(v).expect("serialisable")
}

fn assert_items(what: &str, got: &[Value], want: &[Value]) {
    let t = |v: &[Value]| v.iter().map(text).collect::<Vec<_>>();
    assert_eq!(t(got), t(want), "{what}");
}

fn block<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

fn key(k: &str) -> EncryptionKey {
    EncryptionKey::new(k).expect("key")
}

/// Options with a clock fixed at `t`.
fn at(t: u64) -> EncryptionOptions {
    EncryptionOptions::new().clock(move || UNIX_EPOCH + Duration::from_secs(t))
}

/// Options with a clock the test moves.
fn movable(start: u64) -> (EncryptionOptions, Arc<AtomicU64>) {
    let now = Arc::new(AtomicU64::new(start));
    let n = now.clone();
    let options = EncryptionOptions::new()
        .clock(move || UNIX_EPOCH + Duration::from_secs(n.load(Ordering::SeqCst)));
    (options, now)
}

fn is_envelope(v: &Value) -> bool {
    v.get("__enc__") == Some(&json!(1))
        && v.get("v") == Some(&json!(1))
        && v.get("kid") == Some(&json!("hkdf-v1"))
        && v.get("payload").is_some_and(Value::is_string)
}

/// The stored `message_data` texts of `session`, oldest first.
fn stored(db: &Path, messages: &str, session: &str) -> Vec<String> {
    let c = Connection::open(db).expect("open db");
    let mut st = c
        .prepare(&format!(
            "SELECT message_data FROM {messages} WHERE session_id = ? ORDER BY id"
        ))
        .unwrap();
    let rows = st
        .query_map([session], |r| r.get::<_, String>(0))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    rows
}

/// Replace one character in the middle of the payload of the `nth` stored row (0 = oldest).
fn tamper(db: &Path, messages: &str, session: &str, nth: usize) {
    let c = Connection::open(db).expect("open db");
    let (id, data): (i64, String) = c
        .query_row(
            &format!(
                "SELECT id, message_data FROM {messages} WHERE session_id = ? ORDER BY id \
                 LIMIT 1 OFFSET ?"
            ),
            rusqlite::params![session, nth as i64],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let mut v: Value = serde_json::from_str(&data).unwrap();
    let token = v["payload"].as_str().unwrap().to_owned();
    let mid = token.len() / 2;
    let old = token.as_bytes()[mid];
    let new = if old == b'A' { 'B' } else { 'A' };
    let tampered = format!("{}{new}{}", &token[..mid], &token[mid + 1..]);
    v["payload"] = json!(tampered);
    let data = agent_sessions::json::to_python_json(&v);
    c.execute(
        &format!("UPDATE {messages} SET message_data = ? WHERE id = ?"),
        rusqlite::params![data, id],
    )
    .unwrap();
}

fn insert_corrupt(db: &Path, session: &str) {
    let c = Connection::open(db).expect("open db");
    c.execute(
        "INSERT INTO agent_messages (session_id, message_data) VALUES (?, '{not json')",
        [session],
    )
    .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Without Python: the rules on every session type

#[test]
fn items_round_trip_on_every_session_type_and_are_stored_as_envelopes() {
    let items = fixture();
    let k = key(KEY);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    let store = Store::builder(&db)
        .create_structure_tables(true)
        .open()
        .unwrap();
    let basic = EncryptedSession::new(store.session("basic"), &k);
    let advanced = EncryptedSession::new(store.advanced_session("adv").unwrap(), &k);
    let model = EncryptedSession::new(ModelSession::new("model"), &k);
    let boxed: EncryptedSession<Box<dyn Session>> =
        EncryptedSession::new(Box::new(store.session("boxed")), &k);
    let twice = EncryptedSession::new(
        EncryptedSession::new(store.session("twice"), &key("inner key")),
        &k,
    );
    let sessions: Vec<&dyn Session> = vec![&basic, &advanced, &model, &boxed, &twice];
    for s in sessions {
        let id = s.session_id().to_owned();
        block(s.add_items(items[..3].to_vec())).unwrap();
        block(s.add_items(items[3..].to_vec())).unwrap();
        assert_items(&id, &block(s.get_items(None)).unwrap(), &items);
        assert_items(
            &id,
            &block(s.get_items(Some(2))).unwrap(),
            &items[items.len() - 2..],
        );
        assert_eq!(
            block(s.pop_item()).unwrap().as_ref(),
            items.last(),
            "{id}: pop"
        );
        assert_eq!(block(s.get_items(None)).unwrap().len(), items.len() - 1);
    }
    // Stored rows are the SDK's envelope, in its key order and Python's spacing.
    for session in ["basic", "adv", "boxed", "twice"] {
        let rows = stored(&db, "agent_messages", session);
        assert_eq!(rows.len(), items.len() - 1, "{session}");
        for row in rows {
            let v: Value = serde_json::from_str(&row).unwrap();
            assert!(is_envelope(&v), "{session}: {row}");
            let token = v["payload"].as_str().unwrap();
            assert!(token.starts_with("gAAAAA"), "a Fernet token: {token}");
            assert_eq!(
                row,
                format!(r#"{{"__enc__": 1, "v": 1, "kid": "hkdf-v1", "payload": "{token}"}}"#)
            );
        }
    }
    let model_rows = model.inner().snapshot().rows("model").len();
    assert_eq!(model_rows, items.len() - 1);
    block(basic.clear_session()).unwrap();
    assert!(stored(&db, "agent_messages", "basic").is_empty());
}

#[test]
fn wrong_key_tampered_expired_future_and_plaintext_items_are_hidden_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.db");
    let store = Store::open(&db).unwrap();
    let raw = store.session("s");
    let s = |t: u64| EncryptedSession::with_options(store.session("s"), &key(KEY), at(t));
    block(s(T0 - 601).add_items(vec![json!("expired")])).unwrap();
    block(s(T0 - 600).add_items(vec![json!("oldest readable")])).unwrap();
    block(raw.add_items(vec![json!({"role": "user", "content": "plaintext"})])).unwrap();
    let other = EncryptedSession::with_options(store.session("s"), &key("other"), at(T0));
    block(other.add_items(vec![json!("other key")])).unwrap();
    block(s(T0).add_items(vec![json!("to tamper"), json!("now")])).unwrap();
    block(s(T0 + 60).add_items(vec![json!("60 s ahead")])).unwrap();
    block(s(T0 + 61).add_items(vec![json!("61 s ahead")])).unwrap();
    tamper(&db, "agent_messages", "s", 4);
    let want = [json!("oldest readable"), json!("now"), json!("60 s ahead")];
    assert_items("at T0", &block(s(T0).get_items(None)).unwrap(), &want);
    assert_items(
        "the other key",
        &block(other.get_items(None)).unwrap(),
        &[json!("other key")],
    );
    assert_eq!(stored(&db, "agent_messages", "s").len(), 8, "all kept");
    // A minute later the oldest has expired and the last is no longer too far ahead.
    assert_items(
        "at T0 + 60",
        &block(s(T0 + 60).get_items(None)).unwrap(),
        &[json!("now"), json!("60 s ahead"), json!("61 s ahead")],
    );
    // Without a TTL neither the age nor the skew counts.
    let forever = EncryptedSession::with_options(store.session("s"), &key(KEY), at(T0).ttl(None));
    assert_eq!(block(forever.get_items(None)).unwrap().len(), 5);
    assert_eq!(
        stored(&db, "agent_messages", "s").len(),
        8,
        "reads change nothing"
    );
}

#[test]
fn envelopes_are_recognised_as_python_does_and_odd_ones_never_panic() {
    let model = ModelSession::new("s");
    let s = EncryptedSession::new(model.clone(), &key(KEY));
    block(s.add_items(vec![json!("a")])).unwrap();
    let good = block(model.get_items(None)).unwrap()[0].clone();
    let token = good["payload"].clone();
    let odd = vec![
        // Python's `== 1` also holds for 1.0 and True; `v` and `kid` are not checked.
        json!({"__enc__": 1.0, "v": 9, "kid": "x", "payload": token}),
        json!({"__enc__": true, "v": null, "kid": null, "payload": token}),
        // Not envelopes.
        json!({"__enc__": 2, "v": 1, "kid": "hkdf-v1", "payload": token}),
        json!({"__enc__": 1, "kid": "hkdf-v1", "payload": token}),
        json!({"__enc__": "1", "v": 1, "kid": "hkdf-v1", "payload": token}),
        // Envelopes Python raises on; hidden here.
        json!({"__enc__": 1, "v": 1, "kid": "hkdf-v1", "payload": 42}),
        json!({"__enc__": 1, "v": 1, "kid": "hkdf-v1", "payload": "not a token"}),
        json!({"__enc__": 1, "v": 1, "kid": "hkdf-v1", "payload": ""}),
        json!({"__enc__": 1, "v": 1, "kid": "hkdf-v1", "payload": "gAAAAAAAAAAA"}),
        json!([1, 2, 3]),
    ];
    block(model.add_items(odd)).unwrap();
    assert_items(
        "readable",
        &block(s.get_items(None)).unwrap(),
        &[json!("a"), json!("a"), json!("a")],
    );
}

#[test]
fn a_positive_limit_counts_readable_items_only() {
    let model = ModelSession::new("s");
    let mine = EncryptedSession::new(model.clone(), &key(KEY));
    let theirs = EncryptedSession::new(model.clone(), &key("theirs"));
    // Oldest first: m0 t0 p0 m1 t1 t2 t3 p1 m2 m3 t4 t5 t6 t7 p2
    let mut want = Vec::new();
    for (i, who) in "mtpmtttpmmttttp".chars().enumerate() {
        let item = json!(format!("{who}{i}"));
        match who {
            'm' => {
                block(mine.add_items(vec![item.clone()])).unwrap();
                want.push(item);
            }
            't' => block(theirs.add_items(vec![item])).unwrap(),
            _ => block(model.add_items(vec![item])).unwrap(),
        }
    }
    assert_items("all", &block(mine.get_items(None)).unwrap(), &want);
    assert_items("negative", &block(mine.get_items(Some(-1))).unwrap(), &want);
    assert!(block(mine.get_items(Some(0))).unwrap().is_empty());
    for n in 1..=6 {
        let start = want.len().saturating_sub(n);
        assert_items(
            &format!("limit {n}"),
            &block(mine.get_items(Some(n as i64))).unwrap(),
            &want[start..],
        );
    }
    // The default limit comes from the wrapper's settings.
    let limited = EncryptedSession::with_options(
        model.clone(),
        &key(KEY),
        EncryptionOptions::new().settings(SessionSettings::with_limit(Some(2))),
    );
    assert_items(
        "default limit",
        &block(limited.get_items(None)).unwrap(),
        &want[2..],
    );
    // A read budget: windows of 2, 4 and 8 rows find m2 and m3 within 14 rows.
    let budget = |n| {
        EncryptedSession::with_options(
            model.clone(),
            &key(KEY),
            EncryptionOptions::new().max_scan_items(Some(n)),
        )
    };
    assert_items(
        "budget",
        &block(budget(14).get_items(Some(2))).unwrap(),
        &want[2..],
    );
    let e = block(budget(3).get_items(Some(4))).unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument(m) if m.contains("max_scan_items")),
        "{e}"
    );
    assert!(matches!(
        block(budget(100).get_items(Some(-1))),
        Err(Error::InvalidArgument(_))
    ));
    assert_items(
        "budget, all",
        &block(budget(16).get_items(None)).unwrap(),
        &want,
    );
    // As in the SDK, a full last window is an error even if it held the whole session.
    assert!(block(budget(15).get_items(None)).is_err());
}

#[test]
fn pop_skips_what_it_cannot_read_as_the_sdk_does_per_backend() {
    // Over SQLite: an envelope that does not authenticate stops the pop and stays stored.
    let store = Store::open_in_memory().unwrap();
    let (opts, now) = movable(T0);
    let mine = EncryptedSession::with_options(store.session("s"), &key(KEY), opts.clone());
    let theirs = EncryptedSession::with_options(store.session("s"), &key("theirs"), opts);
    block(mine.add_items(vec![json!("m0")])).unwrap();
    block(theirs.add_items(vec![json!("t0")])).unwrap();
    block(mine.add_items(vec![json!("m1")])).unwrap();
    now.store(T0 + 601, Ordering::SeqCst);
    block(mine.add_items(vec![json!("m2")])).unwrap();
    block(store.session("s").add_items(vec![json!("plain")])).unwrap();
    assert_eq!(block(mine.pop_item()).unwrap(), Some(json!("m2")));
    // m1 has expired: authenticated, so removed and skipped; then t0 stops the pop.
    let e = block(mine.pop_item()).unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument(m) if m.contains("authenticate")),
        "{e}"
    );
    assert!(!e.to_string().contains(KEY));
    assert_eq!(block(store.session("s").get_items(None)).unwrap().len(), 2);
    assert!(block(mine.pop_item()).is_err(), "still there");
    // For `theirs`, t0 is removed (expired) and then m0 stops the pop.
    assert!(block(theirs.pop_item()).is_err());
    assert_eq!(block(store.session("s").get_items(None)).unwrap().len(), 1);
    assert_eq!(block(mine.pop_item()).unwrap(), None, "m0 has expired");
    assert!(block(store.session("s").get_items(None))
        .unwrap()
        .is_empty());

    // Over any other session type (here Advanced and the model), it is removed and skipped.
    let adv_store = Store::builder(":memory:")
        .create_structure_tables(true)
        .open()
        .unwrap();
    let adv = adv_store.advanced_session("a").unwrap();
    let model = ModelSession::new("m");
    let handles: Vec<Box<dyn Fn() -> Box<dyn Session>>> = vec![
        Box::new(move || Box::new(adv.clone())),
        Box::new(move || Box::new(model.clone())),
    ];
    for make in &handles {
        let mine = EncryptedSession::with_options(make(), &key(KEY), at(T0));
        let theirs = EncryptedSession::with_options(make(), &key("theirs"), at(T0));
        let raw = make();
        let id = raw.session_id().to_owned();
        block(mine.add_items(vec![json!("m0")])).unwrap();
        block(theirs.add_items(vec![json!("t0")])).unwrap();
        block(mine.add_items(vec![json!("m1")])).unwrap();
        block(raw.add_items(vec![json!("plain")])).unwrap();
        block(mine.add_items(vec![json!("m2")])).unwrap();
        assert_eq!(block(mine.pop_item()).unwrap(), Some(json!("m2")), "{id}");
        assert_eq!(block(mine.pop_item()).unwrap(), Some(json!("m1")), "{id}");
        assert_eq!(
            block(mine.pop_item()).unwrap(),
            Some(json!("m0")),
            "{id}: t0 dropped"
        );
        assert_eq!(block(mine.pop_item()).unwrap(), None, "{id}");
        assert!(block(raw.get_items(None)).unwrap().is_empty(), "{id}");
    }
}

#[test]
fn the_pop_rule_can_be_chosen_where_the_type_is_hidden() {
    let store = Store::open_in_memory().unwrap();
    let theirs = EncryptedSession::new(store.session("s"), &key("theirs"));
    let boxed = |rule| {
        let inner: Box<dyn Session> = Box::new(store.session("s"));
        EncryptedSession::with_options(inner, &key(KEY), EncryptionOptions::new().pop_rule(rule))
    };
    block(theirs.add_items(vec![json!(1), json!(2)])).unwrap();
    // Behind a Box the type is not visible: the rule for other backends applies by default.
    assert!(block(boxed(PopRule::KeepUnauthenticated).pop_item()).is_err());
    assert_eq!(block(store.session("s").get_items(None)).unwrap().len(), 2);
    assert_eq!(
        block(boxed(PopRule::BySessionType).pop_item()).unwrap(),
        None
    );
    assert!(block(store.session("s").get_items(None))
        .unwrap()
        .is_empty());
    // And the other way round: a BasicSession whose pops skip what they cannot read.
    block(theirs.add_items(vec![json!(3)])).unwrap();
    let skip = EncryptedSession::with_options(
        store.session("s"),
        &key(KEY),
        EncryptionOptions::new().pop_rule(PopRule::SkipUnauthenticated),
    );
    assert_eq!(block(skip.pop_item()).unwrap(), None);
    assert!(block(store.session("s").get_items(None))
        .unwrap()
        .is_empty());
}

#[test]
fn items_too_deep_to_read_back_are_refused_and_nothing_is_written() {
    let model = ModelSession::new("s");
    let s = EncryptedSession::new(model.clone(), &key(KEY));
    let mut deep = json!(1);
    for _ in 0..128 {
        deep = json!([deep]);
    }
    let e = block(s.add_items(vec![json!("ok"), deep])).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    assert!(model.snapshot().rows("s").is_empty());
}

#[test]
fn null_items_are_refused_and_null_plaintexts_hidden_as_the_sdk_cannot_read_them() {
    let model = ModelSession::new("s");
    let s = EncryptedSession::new(model.clone(), &key(KEY));
    let e = block(s.add_items(vec![json!({"a": 1}), Value::Null])).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    assert!(model.snapshot().rows("s").is_empty(), "nothing written");
    // Scalars, lists and empty values are fine (the SDK reads them back).
    let others = vec![
        json!(0),
        json!(""),
        json!([]),
        json!({}),
        json!(false),
        json!("x"),
    ];
    block(s.add_items(others.clone())).unwrap();
    assert_items("read back", &block(s.get_items(None)).unwrap(), &others);
}

#[test]
fn a_falsy_plaintext_row_ends_a_pop_as_in_the_sdk() {
    let model = ModelSession::new("s");
    let s = EncryptedSession::new(model.clone(), &key(KEY));
    block(s.add_items(vec![json!({"n": 1})])).unwrap();
    block(model.add_items(vec![json!(0), json!("plaintext")])).unwrap();
    assert_eq!(
        block(s.pop_item()).unwrap(),
        None,
        "\"plaintext\" skipped, 0 ends it"
    );
    assert_eq!(block(s.pop_item()).unwrap(), Some(json!({"n": 1})));
}

#[test]
fn neither_debug_nor_errors_print_the_key() {
    let secret = "do-not-print-this-master-key";
    let k = key(secret);
    let store = Store::open_in_memory().unwrap();
    let s = EncryptedSession::new(store.session("s"), &k);
    let theirs = EncryptedSession::new(store.session("s"), &key("x"));
    block(theirs.add_items(vec![json!(1)])).unwrap();
    let e = block(s.pop_item()).unwrap_err();
    let printed = format!("{k:?} {s:?} {e} {e:?} {:?}", s.options());
    assert!(!printed.contains(secret), "{printed}");
    assert!(printed.contains("EncryptionKey(***)"), "{printed}");
    assert!(matches!(
        EncryptionKey::new(""),
        Err(Error::InvalidArgument(_))
    ));
    let generated = EncryptionKey::generate_master_key().unwrap();
    assert_eq!(generated.len(), 44);
    assert_ne!(generated, EncryptionKey::generate_master_key().unwrap());
}

#[test]
fn a_closed_inner_session_fails_with_closed() {
    let store = Store::open_in_memory().unwrap();
    let inner = store.session("s");
    let s = EncryptedSession::new(inner.clone(), &key(KEY));
    inner.close();
    assert_eq!(block(s.add_items(vec![json!(1)])), Err(Error::Closed));
    assert_eq!(block(s.get_items(None)), Err(Error::Closed));
    assert_eq!(block(s.pop_item()), Err(Error::Closed));
    assert_eq!(block(s.clear_session()), Err(Error::Closed));
}

// ---------------------------------------------------------------------------------------------
// The Python side

struct Python {
    exe: PathBuf,
}

static SPECS: AtomicUsize = AtomicUsize::new(0);
static VERSION_CHECKED: OnceLock<()> = OnceLock::new();

/// The Python interpreter to test against, or `None` (the test does not run) outside CI.
fn python(test: &str) -> Option<Python> {
    let Some(exe) = agent_sessions_test_env::python() else {
        agent_sessions_test_env::unavailable(
            test,
            "no Python with the SDK and cryptography (AGENT_SESSIONS_PYTHON is not set and \
             target/pyenv could not be made)",
            agent_sessions_test_env::MAKE_VENV,
        );
        return None;
    };
    let py = Python { exe };
    VERSION_CHECKED.get_or_init(|| {
        let v = py.command(&["version".into()]);
        assert_eq!(
            v,
            format!("\"{SDK_VERSION}\""),
            "{} has openai-agents {v}, the interop tests need {SDK_VERSION}",
            py.exe.display()
        );
    });
    Some(py)
}

impl Python {
    fn command(&self, args: &[std::ffi::OsString]) -> String {
        let mut cmd = Command::new(&self.exe);
        cmd.arg(SCRIPT).args(args);
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.exe.display()));
        let stdout = String::from_utf8(out.stdout).expect("the script prints ASCII JSON");
        assert!(
            out.status.success(),
            "{cmd:?} failed ({}):\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout.trim_end().to_owned()
    }

    /// Run a scenario (see the script); one result per operation.
    fn run(&self, db: &Path, spec: Value) -> Vec<Value> {
        let mut spec = spec;
        spec["db"] = json!(db.to_str().expect("utf-8 path"));
        let n = SPECS.fetch_add(1, Ordering::Relaxed);
        let file = db.with_file_name(format!("spec-{n}.json"));
        std::fs::write(&file, serde_json::to_string(&spec).unwrap()).unwrap();
        let out = self.command(&["run".into(), file.into_os_string()]);
        let results: Vec<Value> =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("script printed {out}: {e}"));
        assert_eq!(results.len(), spec["ops"].as_array().unwrap().len());
        results
    }
}

/// The value of an `{"ok": value}` result.
fn ok(result: &Value) -> Value {
    result
        .get("ok")
        .unwrap_or_else(|| panic!("Python failed: {result}"))
        .clone()
}

fn ok_items(result: &Value) -> Vec<Value> {
    ok(result).as_array().expect("a list").clone()
}

/// A result on either side as one comparable line: the items, `none`, or `error`.
fn outcome_py(result: &Value) -> String {
    match result.get("ok") {
        Some(Value::Null) => "none".into(),
        Some(v) => text(v),
        None => "error".into(),
    }
}

fn outcome_rs(r: &agent_sessions::Result<Option<Value>>) -> String {
    match r {
        Ok(None) => "none".into(),
        Ok(Some(v)) => text(v),
        Err(_) => "error".into(),
    }
}

/// The Rust session over `db` for a scenario: basic, or Advanced (tables made by Python).
fn rust_session(store: &Store, advanced: bool, id: &str) -> Box<dyn Session> {
    if advanced {
        Box::new(store.advanced_session(id).expect("advanced session"))
    } else {
        Box::new(store.session(id))
    }
}

/// `n` pops at T0 with [`KEY`] on the concrete session type (so the SDK's rule for that type
/// applies), the store closed afterwards.
fn rust_pops(db: &Path, advanced: bool, session: &str, n: usize) -> Vec<String> {
    let store = Store::open(db).unwrap();
    let out = if advanced {
        let inner = store.advanced_session(session).unwrap();
        let s = EncryptedSession::with_options(inner, &key(KEY), at(T0));
        (0..n).map(|_| outcome_rs(&block(s.pop_item()))).collect()
    } else {
        let s = EncryptedSession::with_options(store.session(session), &key(KEY), at(T0));
        (0..n).map(|_| outcome_rs(&block(s.pop_item()))).collect()
    };
    store.close();
    store.wait_closed_blocking();
    out
}

/// `message_structure` rows of `session` without ids and timestamps, oldest first.
fn structure(db: &Path, session: &str) -> Vec<String> {
    let c = Connection::open(db).expect("open db");
    let mut st = c
        .prepare(
            "SELECT branch_id, message_type, sequence_number, user_turn_number, \
             branch_turn_number, tool_name FROM message_structure WHERE session_id = ? \
             ORDER BY sequence_number",
        )
        .unwrap();
    let rows = st
        .query_map([session], |r| {
            Ok(format!(
                "{}|{}|{}|{:?}|{:?}|{:?}",
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Option<i64>>(3)?,
                r.get::<_, Option<i64>>(4)?,
                r.get::<_, Option<String>>(5)?
            ))
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    rows
}

fn python_writes_rust_reads(advanced: bool) {
    let Some(py) = python(if advanced {
        "python_writes_rust_reads_advanced"
    } else {
        "python_writes_rust_reads"
    }) else {
        return;
    };
    let items = dicts();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("py.db");
    let (first, rest) = items.split_at(4);
    let r = py.run(
        &db,
        json!({"session": "s", "key": KEY, "advanced": advanced, "ops": [
            {"op": "add", "items": first}, {"op": "add", "items": rest}, {"op": "raw"}]}),
    );
    for row in ok_items(&r[2]) {
        assert!(is_envelope(&row), "{row}");
    }
    for row in stored(&db, "agent_messages", "s") {
        let v: Value = serde_json::from_str(&row).unwrap();
        let token = v["payload"].as_str().unwrap();
        assert_eq!(
            row,
            format!(r#"{{"__enc__": 1, "v": 1, "kid": "hkdf-v1", "payload": "{token}"}}"#)
        );
    }
    let store = Store::open(&db).unwrap();
    let s = EncryptedSession::new(rust_session(&store, advanced, "s"), &key(KEY));
    assert_items("all", &block(s.get_items(None)).unwrap(), &items);
    assert_items(
        "limit 3",
        &block(s.get_items(Some(3))).unwrap(),
        &items[items.len() - 3..],
    );
    assert_eq!(block(s.pop_item()).unwrap().as_ref(), items.last());
    // Another key, or the same key on another session id, reads nothing.
    let wrong = EncryptedSession::new(rust_session(&store, advanced, "s"), &key("wrong"));
    assert!(block(wrong.get_items(None)).unwrap().is_empty());
    let r = py.run(
        &db,
        json!({"session": "s", "key": KEY, "advanced": advanced, "ops": [{"op": "get"}]}),
    );
    assert_items(
        "Python after the pop",
        &ok_items(&r[0]),
        &items[..items.len() - 1],
    );
}

fn rust_writes_python_reads(advanced: bool) {
    let Some(py) = python(if advanced {
        "rust_writes_python_reads_advanced"
    } else {
        "rust_writes_python_reads"
    }) else {
        return;
    };
    // Python reads back any item but null (which Rust refuses to write); for the structure
    // comparison, where Python writes too, dicts only.
    let items = if advanced { dicts() } else { fixture() };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("rs.db");
    {
        let store = Store::builder(&db)
            .create_structure_tables(advanced)
            .open()
            .unwrap();
        let s = EncryptedSession::new(rust_session(&store, advanced, "s"), &key(FERNET_KEY));
        block(s.add_items(items[..4].to_vec())).unwrap();
        block(s.add_items(items[4..].to_vec())).unwrap();
        store.close();
        store.wait_closed_blocking();
    }
    let r = py.run(
        &db,
        json!({"session": "s", "key": FERNET_KEY, "advanced": advanced, "ops": [
            {"op": "get"}, {"op": "get", "limit": 2}, {"op": "plaintexts"}, {"op": "pop"},
            {"op": "get"}]}),
    );
    assert_items("Python reads all", &ok_items(&r[0]), &items);
    assert_items(
        "Python, limit 2",
        &ok_items(&r[1]),
        &items[items.len() - 2..],
    );
    // The plaintext bytes are exactly Python's json.dumps(item, ensure_ascii=False, ...).
    let plaintexts = ok_items(&r[2]);
    assert_eq!(plaintexts.len(), items.len());
    for p in &plaintexts {
        assert_eq!(
            p["text"], p["redump"],
            "plaintext differs from Python's encoding"
        );
    }
    assert_eq!(Some(&ok(&r[3])), items.last());
    assert_items(
        "Python after its pop",
        &ok_items(&r[4]),
        &items[..items.len() - 1],
    );
    if advanced {
        // The structure rows Python makes for the same writes are the ones made here.
        let pydb = dir.path().join("py.db");
        py.run(
            &pydb,
            json!({"session": "s", "key": FERNET_KEY, "advanced": true, "ops": [
                {"op": "add", "items": &items[..4]}, {"op": "add", "items": &items[4..]},
                {"op": "pop"}]}),
        );
        let (ours, theirs) = (structure(&db, "s"), structure(&pydb, "s"));
        assert_eq!(ours.len(), items.len() - 1);
        assert_eq!(ours, theirs, "message_structure rows differ");
    }
}

#[test]
fn python_encrypted_items_are_read_here() {
    python_writes_rust_reads(false);
}

#[test]
fn python_encrypted_items_are_read_here_advanced() {
    python_writes_rust_reads(true);
}

#[test]
fn items_encrypted_here_are_read_by_python() {
    rust_writes_python_reads(false);
}

#[test]
fn items_encrypted_here_are_read_by_python_advanced() {
    rust_writes_python_reads(true);
}

#[test]
fn every_form_of_master_key_derives_the_same_key_on_both_sides() {
    let Some(py) = python("every_form_of_master_key_derives_the_same_key_on_both_sides") else {
        return;
    };
    let standard = FERNET_KEY.replace('-', "+").replace('_', "/");
    let spaced = format!(" {}\n{} ", &FERNET_KEY[..20], &FERNET_KEY[20..]);
    let keys = vec![
        FERNET_KEY.to_owned(),                         // 0: 32 bytes
        standard,                                      // 1: same bytes, standard alphabet
        spaced,                                        // 2: same bytes, whitespace skipped
        format!("{FERNET_KEY}trailing junk"),          // 3: same bytes, stops at the padding
        FERNET_KEY.trim_end_matches('=').to_owned(),   // 4: bad padding: UTF-8 bytes
        "correct horse battery staple".to_owned(),     // 5: a passphrase
        "clé secrète 🔑".to_owned(),                   // 6: non-ASCII
        "0123456789abcdef0123456789abcdef".to_owned(), // 7: decodes to 24 bytes: UTF-8
        "QUJD".repeat(11),                             // 8: decodes to 33 bytes: UTF-8
        "a".to_owned(),                                // 9: one character
    ];
    let same_bytes = [0usize, 1, 2, 3];
    let item = json!({"role": "user", "content": "which key?"});
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keys.db");
    py.run(
        &db,
        json!({"session": "py", "key": KEY, "ops": [
            {"op": "keys", "keys": keys, "item": item}]}),
    );
    let store = Store::open(&db).unwrap();
    for (i, k) in keys.iter().enumerate() {
        for (j, other) in keys.iter().enumerate() {
            let s = EncryptedSession::new(store.session(format!("py-{i}")), &key(other));
            let got = block(s.get_items(None)).unwrap();
            let same = i == j || (same_bytes.contains(&i) && same_bytes.contains(&j));
            let want = if same { vec![item.clone()] } else { vec![] };
            assert_items(
                &format!("session of key {i} read with key {j} ({k:?})"),
                &got,
                &want,
            );
        }
        let s = EncryptedSession::new(store.session(format!("rs-{i}")), &key(k));
        block(s.add_items(vec![item.clone()])).unwrap();
    }
    store.close();
    store.wait_closed_blocking();
    let r = py.run(
        &db,
        json!({"session": "rs", "key": KEY, "ops": [{"op": "keys_get", "keys": keys}]}),
    );
    for (i, got) in ok_items(&r[0]).iter().enumerate() {
        assert_items(
            &format!("Python reads key {i}"),
            got.as_array().unwrap(),
            std::slice::from_ref(&item),
        );
    }
}

#[test]
fn expiry_and_clock_skew_agree_with_python_by_a_fixed_clock() {
    let Some(py) = python("expiry_and_clock_skew_agree_with_python_by_a_fixed_clock") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ttl.db");
    py.run(
        &db,
        json!({"session": "py", "key": KEY, "now": T0, "ops": [
            {"op": "add", "items": [{"n": "written by Python at T0"}]}]}),
    );
    let store = Store::open(&db).unwrap();
    let rs = EncryptedSession::with_options(store.session("rs"), &key(KEY), at(T0));
    block(rs.add_items(vec![json!({"n": "written here at T0"})])).unwrap();
    let times = [T0 - 61, T0 - 60, T0, T0 + 600, T0 + 601];
    let visible = [false, true, true, true, false];
    for (session, what) in [
        ("py", "written by Python at T0"),
        ("rs", "written here at T0"),
    ] {
        let mut ops = Vec::new();
        for t in times {
            ops.push(json!({"op": "now", "t": t}));
            ops.push(json!({"op": "get"}));
        }
        let r = py.run(&db, json!({"session": session, "key": KEY, "ops": ops}));
        for (i, t) in times.iter().enumerate() {
            let want = if visible[i] {
                vec![json!({"n": what})]
            } else {
                vec![]
            };
            let s = EncryptedSession::with_options(store.session(session), &key(KEY), at(*t));
            let ours = block(s.get_items(None)).unwrap();
            assert_items(
                &format!("{session} at T0{:+}, here", *t as i64 - T0 as i64),
                &ours,
                &want,
            );
            assert_items(
                &format!("{session} at T0{:+}, Python", *t as i64 - T0 as i64),
                &ok_items(&r[2 * i + 1]),
                &want,
            );
        }
    }
    // A shorter TTL on both sides.
    let r = py.run(
        &db,
        json!({"session": "rs", "key": KEY, "ttl": 10, "now": T0 + 11, "ops": [{"op": "get"}]}),
    );
    let short = EncryptedSession::with_options(
        store.session("rs"),
        &key(KEY),
        at(T0 + 11).ttl(Some(Duration::from_secs(10))),
    );
    assert!(ok_items(&r[0]).is_empty());
    assert!(block(short.get_items(None)).unwrap().is_empty());
    assert_eq!(
        stored(&db, "agent_messages", "rs").len(),
        1,
        "expired items stay stored"
    );
}

/// A session holding every kind of item, written by Python at fixed times, oldest first:
/// e0 (expired at T0), e1, e2, p1 (plaintext), e3, w1 (another key), f1 (from T0 + 100),
/// e4 (tampered), e5, p2, and for basic sessions a row that is not JSON.
fn build_mix(py: &Python, db: &Path, advanced: bool) {
    let spec = |key: &str, now: u64, ops: Value| json!({"session": "mix", "key": key, "now": now, "advanced": advanced, "ops": ops});
    let add = |items: Value| json!({"op": "add", "items": items});
    let plain = |items: Value| json!({"op": "add_plain", "items": items});
    py.run(db, spec(KEY, T0 - 700, json!([add(json!([{"n": "e0"}]))])));
    py.run(
        db,
        spec(
            KEY,
            T0,
            json!([
                add(json!([{"n": "e1"}, {"n": "e2"}])),
                plain(json!([{"n": "p1"}])),
                add(json!([{"n": "e3"}]))
            ]),
        ),
    );
    py.run(db, spec(FERNET_KEY, T0, json!([add(json!([{"n": "w1"}]))])));
    py.run(db, spec(KEY, T0 + 100, json!([add(json!([{"n": "f1"}]))])));
    py.run(
        db,
        spec(
            KEY,
            T0,
            json!([
                add(json!([{"n": "e4"}, {"n": "e5"}])),
                plain(json!([{"role": "user", "content": "p2"}]))
            ]),
        ),
    );
    tamper(db, "agent_messages", "mix", 7);
    if !advanced {
        insert_corrupt(db, "mix");
    }
}

fn mixed_reads_agree(advanced: bool) {
    let Some(py) = python(if advanced {
        "limits_and_pops_over_a_mix_agree_with_python_advanced"
    } else {
        "limits_and_pops_over_a_mix_agree_with_python"
    }) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mix.db");
    build_mix(&py, &db, advanced);
    let copies: Vec<PathBuf> = (0..2)
        .map(|i| {
            let p = dir.path().join(format!("pop-{i}.db"));
            std::fs::copy(&db, &p).unwrap();
            p
        })
        .collect();
    let limits: Vec<Option<i64>> = vec![
        None,
        Some(0),
        Some(1),
        Some(2),
        Some(3),
        Some(4),
        Some(5),
        Some(8),
        Some(100),
        Some(-1),
    ];
    let store = Store::open(&db).unwrap();
    for (now, budget) in [(T0, None), (T0 + 100, None), (T0, Some(3)), (T0, Some(9))] {
        let ops: Vec<Value> = limits
            .iter()
            .map(|l| json!({"op": "get", "limit": l}))
            .collect();
        let r = py.run(
            &db,
            json!({"session": "mix", "key": KEY, "now": now, "advanced": advanced,
                   "max_scan_items": budget, "ops": ops}),
        );
        let s = EncryptedSession::with_options(
            rust_session(&store, advanced, "mix"),
            &key(KEY),
            at(now).max_scan_items(budget),
        );
        for (limit, theirs) in limits.iter().zip(&r) {
            let ours = block(s.get_items(*limit));
            let what = format!(
                "get_items({limit:?}) at T0{:+}, budget {budget:?}",
                now - T0
            );
            match (&ours, theirs.get("ok")) {
                (Ok(items), Some(want)) => {
                    assert_items(&what, items, want.as_array().unwrap());
                }
                (Err(_), None) => {}
                _ => panic!("{what}: here {ours:?}, Python {theirs}"),
            }
        }
    }
    // Popping until empty (or stuck), on two copies of the same file.
    let pops = 8;
    let r = py.run(
        &copies[0],
        json!({"session": "mix", "key": KEY, "now": T0, "advanced": advanced,
               "ops": (0..pops).map(|_| json!({"op": "pop"})).collect::<Vec<_>>()}),
    );
    let theirs: Vec<String> = r.iter().map(outcome_py).collect();
    let ours = rust_pops(&copies[1], advanced, "mix", pops);
    assert_eq!(ours, theirs, "pop outcomes (left: here, right: Python)");
    let want = if advanced {
        // The SDK's rule for backends other than SQLiteSession: unreadable items are dropped.
        vec![
            r#"{"n":"e5"}"#,
            r#"{"n":"e3"}"#,
            r#"{"n":"e2"}"#,
            r#"{"n":"e1"}"#,
            "none",
            "none",
            "none",
            "none",
        ]
    } else {
        // SQLiteSession: the tampered e4 stops every pop and stays stored.
        vec![
            r#"{"n":"e5"}"#,
            "error",
            "error",
            "error",
            "error",
            "error",
            "error",
            "error",
        ]
    };
    assert_eq!(ours, want);
    // And the rows left behind are the same.
    let left = |p: &Path| {
        let c = Connection::open(p).unwrap();
        let mut st = c
            .prepare("SELECT message_data FROM agent_messages ORDER BY id")
            .unwrap();
        let rows = st
            .query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        rows
    };
    store.close();
    store.wait_closed_blocking();
    assert_eq!(
        left(&copies[1]),
        left(&copies[0]),
        "rows left after the pops"
    );
    if advanced {
        assert_eq!(structure(&copies[1], "mix"), structure(&copies[0], "mix"));
    }
}

#[test]
fn limits_and_pops_over_a_mix_agree_with_python() {
    mixed_reads_agree(false);
}

#[test]
fn limits_and_pops_over_a_mix_agree_with_python_advanced() {
    mixed_reads_agree(true);
}

#[test]
fn a_pop_mix_without_unauthenticated_items_drains_alike() {
    let Some(py) = python("a_pop_mix_without_unauthenticated_items_drains_alike") else {
        return;
    };
    for advanced in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("drain.db");
        let spec = |now: u64, ops: Value| json!({"session": "d", "key": KEY, "now": now, "advanced": advanced, "ops": ops});
        py.run(
            &db,
            spec(T0, json!([{"op": "add", "items": [{"n": "e1"}]}])),
        );
        py.run(
            &db,
            spec(T0 - 700, json!([{"op": "add", "items": [{"n": "old"}]}])),
        );
        py.run(
            &db,
            spec(
                T0,
                json!([{"op": "add_plain", "items": [{"n": "p1"}]}, {"op": "add", "items": [{"n": "e2"}]},
                            {"op": "add_plain", "items": [{"n": "p2"}]}]),
            ),
        );
        if !advanced {
            insert_corrupt(&db, "d");
        }
        let copy = dir.path().join("copy.db");
        std::fs::copy(&db, &copy).unwrap();
        let r = py.run(
            &db,
            spec(T0, json!([{"op": "pop"}, {"op": "pop"}, {"op": "pop"}])),
        );
        let theirs: Vec<String> = r.iter().map(outcome_py).collect();
        let ours = rust_pops(&copy, advanced, "d", 3);
        assert_eq!(ours, theirs, "advanced: {advanced}");
        assert_eq!(
            ours,
            [r#"{"n":"e2"}"#, r#"{"n":"e1"}"#, "none"],
            "advanced: {advanced}"
        );
        assert!(stored(&copy, "agent_messages", "d").is_empty());
        assert!(stored(&db, "agent_messages", "d").is_empty());

        // The SDK's `if not enc: return None`: a falsy plaintext row (here `{}`) ends a pop.
        py.run(
            &db,
            spec(
                T0,
                json!([{"op": "add", "items": [{"n": "e3"}]},
                            {"op": "add_plain", "items": [{}]}]),
            ),
        );
        let copy = dir.path().join("copy-2.db");
        std::fs::copy(&db, &copy).unwrap();
        let r = py.run(
            &db,
            spec(T0, json!([{"op": "pop"}, {"op": "pop"}, {"op": "pop"}])),
        );
        let theirs: Vec<String> = r.iter().map(outcome_py).collect();
        let ours = rust_pops(&copy, advanced, "d", 3);
        assert_eq!(ours, theirs, "advanced: {advanced}");
        assert_eq!(
            ours,
            ["none", r#"{"n":"e3"}"#, "none"],
            "advanced: {advanced}"
        );
    }
}

/// A session whose first pop is preceded by another writer's add: the race between the
/// validating pop's check of the newest item and the pop itself, made deterministic.
struct AddBeforeFirstPop {
    inner: ModelSession,
    before: std::sync::Mutex<Option<Value>>,
}

impl Session for AddBeforeFirstPop {
    fn session_id(&self) -> &str {
        self.inner.session_id()
    }
    fn get_items(
        &self,
        limit: Option<i64>,
    ) -> agent_sessions::BoxFuture<'_, Result<Vec<Value>, Error>> {
        self.inner.get_items(limit)
    }
    fn add_items(&self, items: Vec<Value>) -> agent_sessions::BoxFuture<'_, Result<(), Error>> {
        self.inner.add_items(items)
    }
    fn pop_item(&self) -> agent_sessions::BoxFuture<'_, Result<Option<Value>, Error>> {
        let foreign = self.before.lock().unwrap().take();
        Box::pin(async move {
            if let Some(item) = foreign {
                self.inner.add_items(vec![item]).await?;
            }
            self.inner.pop_item().await
        })
    }
    fn clear_session(&self) -> agent_sessions::BoxFuture<'_, Result<(), Error>> {
        self.inner.clear_session()
    }
}

/// The validating pop (`KeepUnauthenticated`, the SDK's rule over `SQLiteSession`) when another
/// writer adds an envelope of another key between its check and its pop: the popped envelope
/// is put back, the caller gets the error, and nothing is lost.
#[test]
fn a_foreign_envelope_added_during_a_validating_pop_is_put_back() {
    let theirs_model = ModelSession::new("t");
    let theirs = EncryptedSession::new(theirs_model.clone(), &key("theirs"));
    block(theirs.add_items(vec![json!("theirs")])).unwrap();
    let foreign = block(theirs_model.get_items(None)).unwrap().remove(0);

    let model = ModelSession::new("s");
    let racing = AddBeforeFirstPop {
        inner: model.clone(),
        before: std::sync::Mutex::new(Some(foreign.clone())),
    };
    let options = EncryptionOptions::new().pop_rule(PopRule::KeepUnauthenticated);
    let mine = EncryptedSession::with_options(racing, &key(KEY), options);
    block(mine.add_items(vec![json!("mine")])).unwrap();

    let e = block(mine.pop_item()).unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument(m) if m.contains("left stored")),
        "{e:?}"
    );
    let stored = block(model.get_items(None)).unwrap();
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert_eq!(
        text(&stored[1]),
        text(&foreign),
        "the foreign envelope, put back on top"
    );
    assert_items(
        "mine, still readable",
        &block(mine.get_items(None)).unwrap(),
        &[json!("mine")],
    );
}
