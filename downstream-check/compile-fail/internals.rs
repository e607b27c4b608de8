// Must NOT compile in a default build: the protocol internals are private.
use agent_sessions::pool;
use agent_sessions::sync;
fn main() {}
