//! Bad and extreme input (SPEC §10): nothing panics, nothing half-written, errors say what was
//! wrong. Items too deep to read back are refused; huge ids and multi-megabyte items round-trip;
//! a damaged database file is a clear error.

use agent_sessions::testing::Model;
use agent_sessions::{Error, Op, Store};
use agent_sessions_model::MAX_DEPTH;
use serde_json::{json, Value};

fn nest(depth: usize) -> Value {
    let mut v = json!("leaf");
    for i in 0..depth {
        v = if i % 2 == 0 {
            json!([v])
        } else {
            json!({"k": v})
        };
    }
    v
}

fn file_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("bad.db")).unwrap();
    (dir, store)
}

#[test]
fn items_too_deep_to_read_back_are_refused_and_nothing_is_written() {
    let (_d, store) = file_store();
    let s = store.session("deep").blocking();
    s.add_items(vec![nest(MAX_DEPTH)]).unwrap();
    assert_eq!(s.get_items(None).unwrap(), vec![nest(MAX_DEPTH)]);
    let err = s
        .add_items(vec![json!("fine"), nest(MAX_DEPTH + 1)])
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains("item 2")),
        "{err:?}"
    );
    assert_eq!(
        s.get_items(None).unwrap().len(),
        1,
        "the refused batch wrote something"
    );
    // Much deeper: measured without recursion, refused. (Not deeper still: serde_json's own
    // `Drop` of such a value recurses, in the caller's code.)
    let err = s.add_items(vec![nest(1_000)]).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)));
    // The model refuses the same op with the same error.
    let op = Op::AddItems {
        session: "deep".into(),
        items: vec![nest(MAX_DEPTH + 1)],
    };
    assert_eq!(
        Model::new().apply(&op).map_err(Error::from),
        store.execute_blocking(op)
    );
}

#[test]
fn huge_session_ids_and_multi_megabyte_items_round_trip() {
    let (_d, store) = file_store();
    let id = "é".repeat(500_000); // 1 MB of UTF-8
    let big = json!({"role": "user", "content": "x😀".repeat(1_000_000)}); // ~5 MB
    let s = store.session(id.clone()).blocking();
    s.add_items(vec![big.clone(), json!(1)]).unwrap();
    assert_eq!(s.get_items(Some(2)).unwrap(), vec![big.clone(), json!(1)]);
    assert_eq!(s.pop_item().unwrap(), Some(json!(1)));
    assert_eq!(s.pop_item().unwrap(), Some(big));
    let listed = store.list_sessions_blocking().unwrap();
    assert_eq!(listed[0].session_id, id);
}

#[test]
fn lone_surrogates_written_by_another_program_are_read_not_lost() {
    let (_d, store) = file_store();
    store
        .execute_blocking(Op::PlantRaw {
            session: "s".into(),
            data: r#"{"text": "a\ud800b"}"#.into(),
        })
        .unwrap();
    let s = store.session("s").blocking();
    assert_eq!(
        s.get_items(None).unwrap(),
        vec![json!({"text": "a\u{fffd}b"})]
    );
    assert_eq!(s.pop_item().unwrap(), Some(json!({"text": "a\u{fffd}b"})));
}

#[test]
fn a_damaged_database_file_is_a_clear_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("damaged.db");
    {
        let store = Store::open(&path).unwrap();
        let s = store.session("s").blocking();
        for i in 0..200 {
            s.add_items(vec![json!({"i": i, "pad": "p".repeat(500)})])
                .unwrap();
        }
        store.close();
        store.wait_closed_blocking();
    }
    // The writer closed last, so the WAL was checkpointed into the file and removed.
    assert!(
        !path.with_extension("db-wal").exists(),
        "a WAL file outlived the store"
    );
    // Overwrite every page after the first (schema and header stay valid) with 0xFF: no valid
    // b-tree page starts with that byte, so the damage is certain to be noticed.
    let mut bytes = std::fs::read(&path).unwrap();
    for b in bytes.iter_mut().skip(4096) {
        *b = 0xFF;
    }
    std::fs::write(&path, bytes).unwrap();
    match Store::open(&path) {
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains("malformed")
                    || msg.contains("corrupt")
                    || msg.contains("not an SQLite"),
                "{msg}"
            );
        }
        Ok(store) => {
            // Opened (the schema page survived): reads report the damage, they do not panic.
            let r = store.session("s").blocking().get_items(None);
            let err = r.expect_err("read a scribbled file without noticing");
            assert!(err.to_string().contains("malformed"), "{err}");
        }
    }
}
