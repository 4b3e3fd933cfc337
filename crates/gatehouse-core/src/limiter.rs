//! Bounds what unauthenticated clients can make the gateway write to its audit log.
//!
//! Every failure before authentication is worth an audit record, but an attacker who can open
//! connections could otherwise fill the disk with them (and a full disk refuses everyone).
//! Per source address, the first `per_source` failures of each window are recorded one by
//! one; the rest are counted and written as one `auth.failure.summary` record when the window
//! closes. A global allowance bounds the individual records of all sources together, and the
//! number of sources tracked is bounded too (the overflow shares one entry). Pure: the caller
//! supplies the time.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Limits for pre-authentication records.
#[derive(Debug, Clone, Copy)]
pub struct PreAuthLimits {
    pub window: Duration,
    /// Individual records per source per window.
    pub per_source: u32,
    /// Individual records of all sources together per window.
    pub global: u32,
    /// Sources tracked at once; failures from more share one "other sources" entry.
    pub max_sources: usize,
}

impl Default for PreAuthLimits {
    fn default() -> Self {
        PreAuthLimits {
            window: Duration::from_secs(60),
            per_source: 20,
            global: 1000,
            max_sources: 10_000,
        }
    }
}

/// What to do with one failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    Record,
    /// Counted into the source's summary.
    Counted,
}

/// The failures of one source in one closed window that were counted, not recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// `None` for the shared entry of sources beyond `max_sources`.
    pub source: Option<IpAddr>,
    pub counted: u64,
    pub recorded: u32,
    pub window_start: Instant,
    /// Counted failures by reason (at most a few distinct reasons are kept).
    pub reasons: BTreeMap<String, u64>,
}

const MAX_REASONS: usize = 8;

#[derive(Debug)]
struct Window {
    start: Instant,
    recorded: u32,
    counted: u64,
    reasons: BTreeMap<String, u64>,
}

impl Window {
    fn new(now: Instant) -> Self {
        Window {
            start: now,
            recorded: 0,
            counted: 0,
            reasons: BTreeMap::new(),
        }
    }
}

#[derive(Debug)]
pub struct PreAuthLimiter {
    limits: PreAuthLimits,
    sources: HashMap<Option<IpAddr>, Window>,
    global: Window,
}

impl PreAuthLimiter {
    pub fn new(limits: PreAuthLimits) -> Self {
        PreAuthLimiter {
            limits,
            sources: HashMap::new(),
            global: Window::new(Instant::now()),
        }
    }

    /// Decides for one failure from `source`; closed windows are returned as summaries to write.
    pub fn admit(&mut self, source: IpAddr, reason: &str, now: Instant) -> (Admit, Vec<Summary>) {
        let summaries = self.sweep(now);
        if now.duration_since(self.global.start) >= self.limits.window {
            self.global = Window::new(now);
        }
        let key = if self.sources.contains_key(&Some(source))
            || self.sources.len() < self.limits.max_sources
        {
            Some(source)
        } else {
            None
        };
        let window = self.sources.entry(key).or_insert_with(|| Window::new(now));
        let admit = if key.is_some()
            && window.recorded < self.limits.per_source
            && self.global.recorded < self.limits.global
        {
            window.recorded += 1;
            self.global.recorded += 1;
            Admit::Record
        } else {
            window.counted += 1;
            if let Some(n) = window.reasons.get_mut(reason) {
                *n += 1;
            } else if window.reasons.len() < MAX_REASONS {
                window.reasons.insert(reason.to_owned(), 1);
            } else {
                *window
                    .reasons
                    .entry("other reasons".to_owned())
                    .or_insert(0) += 1;
            }
            Admit::Counted
        };
        (admit, summaries)
    }

    /// Closes the windows that are over; returns the summaries of those that counted failures.
    pub fn sweep(&mut self, now: Instant) -> Vec<Summary> {
        let window = self.limits.window;
        let mut out = Vec::new();
        self.sources.retain(|source, w| {
            if now.duration_since(w.start) < window {
                return true;
            }
            if w.counted > 0 {
                out.push(Summary {
                    source: *source,
                    counted: w.counted,
                    recorded: w.recorded,
                    window_start: w.start,
                    reasons: std::mem::take(&mut w.reasons),
                });
            }
            false
        });
        out
    }

    /// Every window's summary, now (at shutdown).
    pub fn flush(&mut self) -> Vec<Summary> {
        let far = Instant::now() + self.limits.window + Duration::from_secs(1);
        self.sweep(far)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn a_flooding_source_is_counted_not_recorded() {
        let mut l = PreAuthLimiter::new(PreAuthLimits {
            per_source: 3,
            ..PreAuthLimits::default()
        });
        let t0 = Instant::now();
        let admits: Vec<Admit> = (0..10).map(|_| l.admit(ip(1), "bad key", t0).0).collect();
        assert_eq!(admits.iter().filter(|a| **a == Admit::Record).count(), 3);
        // Another source still gets its own records.
        assert_eq!(l.admit(ip(2), "bad key", t0).0, Admit::Record);
        let (_, summaries) = l.admit(ip(3), "x", t0 + Duration::from_secs(61));
        assert_eq!(summaries.len(), 1);
        assert_eq!(summaries[0].source, Some(ip(1)));
        assert_eq!((summaries[0].counted, summaries[0].recorded), (7, 3));
        assert_eq!(summaries[0].reasons.get("bad key"), Some(&7));
        // A new window starts afresh.
        assert_eq!(
            l.admit(ip(1), "bad key", t0 + Duration::from_secs(61)).0,
            Admit::Record
        );
    }

    #[test]
    fn many_sources_share_the_global_allowance_and_the_overflow_entry() {
        let mut l = PreAuthLimiter::new(PreAuthLimits {
            per_source: 100,
            global: 5,
            max_sources: 3,
            ..PreAuthLimits::default()
        });
        let t0 = Instant::now();
        let recorded = (0..50u8)
            .filter(|i| l.admit(ip(*i), "r", t0).0 == Admit::Record)
            .count();
        assert_eq!(
            recorded, 3,
            "only tracked sources, within the global allowance"
        );
        let summaries = l.flush();
        let overflow: u64 = summaries
            .iter()
            .filter(|s| s.source.is_none())
            .map(|s| s.counted)
            .sum();
        assert_eq!(overflow, 47);
        for _ in 0..10 {
            l.admit(ip(200), "many reasons", t0);
        }
    }

    #[test]
    fn reasons_are_bounded() {
        let mut l = PreAuthLimiter::new(PreAuthLimits {
            per_source: 0,
            ..PreAuthLimits::default()
        });
        let t0 = Instant::now();
        for i in 0..100 {
            l.admit(ip(1), &format!("reason {i}"), t0);
        }
        let s = l.flush();
        assert_eq!(s[0].counted, 100);
        assert!(s[0].reasons.len() <= MAX_REASONS + 1);
        assert_eq!(s[0].reasons.values().sum::<u64>(), 100);
    }
}
