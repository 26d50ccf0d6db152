//! The guard's behaviour suite against the in-memory store.

use queue_worker::idempotency::InMemoryStore;

async fn store() -> InMemoryStore {
    InMemoryStore::default()
}

harness::guard_behaviour_suite!(store);
