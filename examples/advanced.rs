//! Advanced sessions (the SDK's `AdvancedSQLiteSession`): turns, a branch, usage per turn.
//!
//! Run: `cargo run --example advanced`

use agent_sessions::{Result, Store, Usage};
use serde_json::json;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::builder(dir.path().join("agent_sessions.db"))
        .create_structure_tables(true)
        .open_async()
        .await?;
    let a = store.advanced_session_async("user-42").await?;

    a.add_items(vec![
        json!({"role": "user", "content": "Capital of France?"}),
        json!({"role": "assistant", "content": "Paris."}),
        json!({"role": "user", "content": "And of Italy?"}),
        json!({"role": "assistant", "content": "Rome."}),
    ])
    .await?;
    a.record_usage(Usage {
        requests: 1,
        input_tokens: 20,
        output_tokens: 3,
        total_tokens: 23,
        ..Default::default()
    })
    .await?;

    // Ask turn 2 differently on a branch: it starts with turn 1 and becomes current.
    let alt = a.create_branch_from_turn(2, Some("germany")).await?;
    a.add_items(vec![json!({"role": "user", "content": "And of Germany?"})])
        .await?;
    println!("on {alt}: {}", serde_json::Value::from(a.get_items(None).await?));

    a.switch_to_branch("main").await?;
    for turn in a.get_conversation_turns(None).await? {
        println!("turn {}: {}", turn.turn, turn.content);
    }
    for branch in a.list_branches().await? {
        println!("branch {} ({} messages)", branch.branch_id, branch.message_count);
    }
    let usage = a.get_session_usage(None).await?.expect("usage recorded");
    println!("tokens used: {}", usage.total_tokens);
    store.close();
    store.wait_closed().await;
    Ok(())
}
