//! Blocking use from plain threads: the blocking twin of each session, one store shared by
//! every thread (one pool per file, however many threads and handles).
//!
//! Run: `cargo run --example threads`

use agent_sessions::{Result, Store};
use serde_json::json;

fn main() -> Result<()> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::open(dir.path().join("agent_sessions.db"))?;

    let workers: Vec<_> = (0..4)
        .map(|w| {
            let session = store.session("shared").blocking();
            std::thread::spawn(move || -> Result<()> {
                for i in 0..25 {
                    session.add_items(vec![json!({"worker": w, "i": i})])?;
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker thread")?;
    }

    let shared = store.session("shared").blocking();
    assert_eq!(shared.get_items(None)?.len(), 100);
    let newest = shared.pop_item()?.expect("an item");
    println!("popped {newest}; {} left", shared.get_items(None)?.len());
    store.close();
    store.wait_closed_blocking();
    Ok(())
}
