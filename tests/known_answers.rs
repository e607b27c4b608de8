//! Formats shared with Python, checked with no Python: the bytes the SDK's `SQLiteSession`
//! stores for tricky items (`json.dumps(item)`), committed as data made with the SDK
//! (`tests/data/known_answers.json`, written by `tests/python/make_known_answers.py`). The
//! encryption known answers of the same file are checked by `src/api/encrypted.rs`'s unit
//! tests (they reach the key derivation and Fernet with a fixed IV).

use agent_sessions::Store;
use serde_json::Value;

fn known_answers() -> Value {
    serde_json::from_str(include_str!("data/known_answers.json")).unwrap()
}

/// `message_data` as this store writes it into an SDK file is Python's `json.dumps(item)`,
/// byte for byte, and reads back as the item.
#[test]
fn stored_message_data_is_pythons_json_dumps() {
    let data = known_answers();
    let cases = data["json_dumps"].as_array().unwrap();
    assert!(cases.len() >= 8);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kat.db");
    let store = Store::open(&path).unwrap();
    let session = store.session("kat").blocking();
    for case in cases {
        assert_eq!(
            agent_sessions::json::to_python_json(&case["item"]),
            case["text"].as_str().unwrap(),
            "to_python_json of {}",
            case["item"]
        );
        session.add_items(vec![case["item"].clone()]).unwrap();
    }
    let db = rusqlite::Connection::open(&path).unwrap();
    let stored: Vec<String> = db
        .prepare("SELECT message_data FROM agent_messages WHERE session_id = 'kat' ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let expected: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    assert_eq!(stored, expected);
    let items: Vec<Value> = cases.iter().map(|c| c["item"].clone()).collect();
    assert_eq!(session.get_items(None).unwrap(), items);
}
