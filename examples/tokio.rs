//! Async use on tokio: open without blocking the runtime, share one store between tasks (each
//! task its own session), close gracefully.
//!
//! Run: `cargo run --example tokio`

use agent_sessions::{Result, Store};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<()> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::open_async(dir.path().join("agent_sessions.db")).await?;

    let tasks: Vec<_> = (0..8)
        .map(|user| {
            let session = store.session(format!("user-{user}"));
            tokio::spawn(async move {
                for turn in 0..10 {
                    session
                        .add_items(vec![
                            json!({"role": "user", "content": format!("question {turn}")}),
                            json!({"role": "assistant", "content": format!("answer {turn}")}),
                        ])
                        .await?;
                }
                session.get_items(Some(2)).await
            })
        })
        .collect();
    for task in tasks {
        let last_two = task.await.expect("task")?;
        assert_eq!(last_two[1]["content"], "answer 9");
    }

    for info in store.list_sessions().await? {
        println!("{}: {} items", info.session_id, info.item_count);
    }
    let stats = store.pool_stats();
    println!(
        "{} writes in {} group commits",
        stats.write_requests, stats.write_batches
    );
    store.close(); // returns at once
    store.wait_closed().await; // every connection closed, every pool thread joined
    Ok(())
}
