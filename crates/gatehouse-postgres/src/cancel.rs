//! Cancel keys: the client only ever sees the gateway's key; a CancelRequest carrying it is
//! mapped to the upstream server's own key.

use gatehouse_core::PostgresTarget;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct CancelTarget {
    pub session: String,
    pub connection: String,
    pub target: PostgresTarget,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub upstream_key: (i32, i32),
}

#[derive(Default, Clone)]
pub struct CancelRegistry {
    keys: Arc<Mutex<HashMap<(i32, i32), CancelTarget>>>,
}

impl CancelRegistry {
    /// Registers a session and returns the key to give its client.
    pub fn register(&self, target: CancelTarget) -> CancelGuard {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let key = loop {
            // Positive pid like a real backend's; 32 random bits of secret.
            let key = (rand::random::<i32>() & i32::MAX, rand::random::<i32>());
            if !keys.contains_key(&key) {
                break key;
            }
        };
        keys.insert(key, target);
        CancelGuard {
            registry: self.clone(),
            key,
        }
    }

    pub fn lookup(&self, key: (i32, i32)) -> Option<CancelTarget> {
        self.keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned()
    }
}

/// Removes the key when the session ends.
pub struct CancelGuard {
    registry: CancelRegistry,
    pub key: (i32, i32),
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        self.registry
            .keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}
