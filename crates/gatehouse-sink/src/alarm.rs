//! When a sink counts as lagging. Pure code: the caller passes the clock.
//!
//! A sink is lagging when more than `lag_records` records are undelivered, or when its oldest
//! undelivered record is older than `after`. It has recovered when both are back at or below
//! half of their thresholds. The gap between the two keeps a sink hovering at a threshold
//! from reporting over and over: each crossing is reported once.

use std::time::Duration;

use crate::config::AlarmConfig;

/// A change the caller reports (as a `sink.lagging` or `sink.recovered` audit event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Lagging,
    Recovered,
}

/// Tracks one sink's alarm state.
#[derive(Debug, Clone)]
pub struct Alarm {
    config: AlarmConfig,
    lagging: bool,
}

impl Alarm {
    /// `lagging`: the state saved with the cursor (a restart does not report a crossing again).
    pub fn new(config: AlarmConfig, lagging: bool) -> Self {
        Alarm { config, lagging }
    }

    pub fn is_lagging(&self) -> bool {
        self.lagging
    }

    /// Looks at the current lag; returns a transition when the state changes.
    pub fn observe(&mut self, lag_records: u64, oldest_age: Duration) -> Option<Transition> {
        let records = self.config.lag_records;
        let after = self.config.after;
        let over =
            (records > 0 && lag_records > records) || (!after.is_zero() && oldest_age > after);
        let under = (records == 0 || lag_records <= records / 2)
            && (after.is_zero() || oldest_age <= after / 2);
        match (self.lagging, over, under) {
            (false, true, _) => {
                self.lagging = true;
                Some(Transition::Lagging)
            }
            (true, _, true) => {
                self.lagging = false;
                Some(Transition::Recovered)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn alarm() -> Alarm {
        Alarm::new(
            AlarmConfig {
                lag_records: 100,
                after: 60 * SEC,
            },
            false,
        )
    }

    #[test]
    fn one_event_per_crossing() {
        let mut a = alarm();
        let seen: Vec<_> = [0, 50, 100, 101, 500, 99, 60, 51, 50, 0, 101, 20]
            .into_iter()
            .map(|lag| a.observe(lag, SEC))
            .collect();
        use Transition::*;
        assert_eq!(
            seen,
            [
                None,
                None,
                None,
                Some(Lagging),
                None,
                None,
                None,
                None,
                Some(Recovered),
                None,
                Some(Lagging),
                Some(Recovered)
            ]
        );
    }

    #[test]
    fn age_threshold() {
        let mut a = alarm();
        assert_eq!(a.observe(1, 60 * SEC), None);
        assert_eq!(a.observe(1, 61 * SEC), Some(Transition::Lagging));
        assert_eq!(a.observe(0, 31 * SEC), None);
        assert_eq!(a.observe(0, 30 * SEC), Some(Transition::Recovered));
    }

    #[test]
    fn zero_disables_a_threshold_and_state_survives_restart() {
        let mut a = Alarm::new(
            AlarmConfig {
                lag_records: 0,
                after: Duration::ZERO,
            },
            false,
        );
        assert_eq!(a.observe(u64::MAX, 1000 * SEC), None);
        let mut restarted = Alarm::new(AlarmConfig::default(), true);
        assert!(restarted.is_lagging());
        assert_eq!(restarted.observe(20_000, SEC), None);
        assert_eq!(restarted.observe(0, SEC), Some(Transition::Recovered));
    }
}
