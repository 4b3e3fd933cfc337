//! Handshake slots: a global bound and a per-source share of it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The slots of one listener.
#[derive(Clone)]
pub struct Slots {
    inner: Arc<Inner>,
}

struct Inner {
    global: Arc<Semaphore>,
    per_source: usize,
    taken: Mutex<HashMap<IpAddr, usize>>,
}

/// A connection's claim on a slot, released when dropped (once it has authenticated).
pub struct Slot {
    inner: Arc<Inner>,
    source: IpAddr,
    _permit: OwnedSemaphorePermit,
}

/// A global slot reserved before a connection is accepted.
pub struct Reserved(OwnedSemaphorePermit);

impl Slots {
    pub fn new(max: usize, per_source: usize) -> Self {
        Slots {
            inner: Arc::new(Inner {
                global: Arc::new(Semaphore::new(max.max(1))),
                per_source: per_source.max(1),
                taken: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Waits for a free global slot and reserves it.
    pub async fn reserve(&self) -> Option<Reserved> {
        self.inner
            .global
            .clone()
            .acquire_owned()
            .await
            .ok()
            .map(Reserved)
    }

    /// Turns a reservation into `source`'s slot; `None` (and the reservation released) when
    /// the source already holds its share.
    pub fn take(&self, reserved: Reserved, source: IpAddr) -> Option<Slot> {
        let mut taken = self
            .inner
            .taken
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = taken.entry(source).or_insert(0);
        if *count >= self.inner.per_source {
            return None;
        }
        *count += 1;
        Some(Slot {
            inner: self.inner.clone(),
            source,
            _permit: reserved.0,
        })
    }

    /// Slots in use now (for tests and metrics).
    pub fn in_use(&self) -> usize {
        self.inner
            .taken
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .sum()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut taken = self
            .inner
            .taken
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = taken.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                taken.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_source_cannot_take_every_slot() {
        let slots = Slots::new(10, 3);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(slots.take(slots.reserve().await.unwrap(), a).unwrap());
        }
        assert!(
            slots.take(slots.reserve().await.unwrap(), a).is_none(),
            "a's share is used"
        );
        let other = slots.take(slots.reserve().await.unwrap(), b);
        assert!(other.is_some(), "b still gets one");
        assert_eq!(slots.in_use(), 4);
        held.pop();
        assert!(
            slots.take(slots.reserve().await.unwrap(), a).is_some(),
            "freed again"
        );
    }

    #[tokio::test]
    async fn the_global_bound_holds() {
        let slots = Slots::new(2, 2);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let _x = slots.take(slots.reserve().await.unwrap(), a).unwrap();
        let _y = slots.take(slots.reserve().await.unwrap(), b).unwrap();
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(50), slots.reserve()).await;
        assert!(waiting.is_err(), "no third slot while two are held");
    }
}
