//! Cancel keys: the client gets the server's own process id (so `pg_backend_pid()` and
//! notifications agree with it, and `pg_terminate_backend` works) with a secret of the
//! gateway's; a CancelRequest carrying that pair is mapped to the server's own key. The
//! registry keeps where to send it, never a credential (a cancel needs none).

use gatehouse_core::UpstreamTls;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

#[derive(Clone)]
pub struct CancelTarget {
    pub session: String,
    pub connection: String,
    pub host: String,
    pub port: u16,
    pub tls: UpstreamTls,
    pub tls_config: Option<Arc<rustls::ClientConfig>>,
    pub upstream_key: (i32, i32),
    /// Wakes the session: a cancel ends a hold for approval.
    pub interrupt: Arc<tokio::sync::Notify>,
}

#[derive(Default, Clone)]
pub struct CancelRegistry {
    keys: Arc<Mutex<HashMap<(i32, i32), CancelTarget>>>,
}

impl CancelRegistry {
    /// Registers a session and returns the key to give its client: the server's pid (or a
    /// random one when the server sent none) and a random secret.
    pub fn register(&self, target: CancelTarget) -> CancelGuard {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        let pid = match target.upstream_key.0 {
            0 => rand::random::<i32>() & i32::MAX,
            pid => pid,
        };
        let key = loop {
            let key = (pid, rand::random::<i32>());
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
            .unwrap_or_else(PoisonError::into_inner)
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
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}
