//! The open sessions, so that an operator can end one and a revoked credential ends its own.

use crate::end::EndCause;
use crate::gate::SessionInfo;
use crate::identity::Identity;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use tokio::sync::watch;

struct Entry {
    info: SessionInfo,
    identity: Identity,
    stop: watch::Sender<Option<EndCause>>,
}

/// Open sessions by id.
#[derive(Default)]
pub(crate) struct Registry {
    open: Mutex<HashMap<String, Entry>>,
}

impl Registry {
    /// Registers a session; the receiver learns when it is asked to end.
    pub fn register(
        &self,
        info: SessionInfo,
        identity: &Identity,
    ) -> watch::Receiver<Option<EndCause>> {
        let (stop, rx) = watch::channel(None);
        let id = info.id.clone();
        self.lock().insert(
            id,
            Entry {
                info,
                identity: identity.clone(),
                stop,
            },
        );
        rx
    }

    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    pub fn list(&self) -> Vec<SessionInfo> {
        let mut list: Vec<SessionInfo> = self.lock().values().map(|e| e.info.clone()).collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }

    /// Asks one session to end; false if it is not open.
    pub fn stop(&self, id: &str, cause: EndCause) -> bool {
        match self.lock().get(id) {
            Some(entry) => {
                entry.stop.send_replace(Some(cause));
                true
            }
            None => false,
        }
    }

    /// Asks every session whose identity matches to end; returns their ids.
    pub fn stop_where(&self, matches: impl Fn(&Identity) -> bool, cause: EndCause) -> Vec<String> {
        let open = self.lock();
        let mut ids = Vec::new();
        for (id, entry) in open.iter() {
            if matches(&entry.identity) {
                entry.stop.send_replace(Some(cause.clone()));
                ids.push(id.clone());
            }
        }
        ids
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
