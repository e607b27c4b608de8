//! A downstream program: a current-thread tokio runtime opens a store without blocking it,
//! writes and reads two sessions, closes one (the other keeps working), pops from a plain thread
//! with the blocking twin, and shuts down gracefully. Exits non-zero if anything is off.

use agent_sessions::{Error, Store};
use serde_json::json;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("downstream-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let store = Store::open_async(dir.join("agent_sessions.db")).await?;

    let alice = store.session("alice");
    let bob = store.session("bob");
    alice.add_items(vec![json!({"role": "user", "content": "hi"})]).await?;
    bob.add_items(vec![json!({"role": "user", "content": "hello"}), json!({"role": "assistant", "content": "hey"})]).await?;
    assert_eq!(alice.get_items(None).await?.len(), 1);
    assert_eq!(bob.get_items(Some(1)).await?, vec![json!({"role": "assistant", "content": "hey"})]);

    alice.close();
    assert_eq!(alice.get_items(None).await, Err(Error::Closed));
    bob.add_items(vec![json!({"role": "user", "content": "still here"})]).await?;

    let blocking = bob.blocking();
    let popped = std::thread::spawn(move || blocking.pop_item()).join().expect("thread")?;
    assert_eq!(popped, Some(json!({"role": "user", "content": "still here"})));

    store.close();
    store.wait_closed().await;
    std::fs::remove_dir_all(&dir)?;
    println!("downstream-check: ok");
    Ok(())
}
