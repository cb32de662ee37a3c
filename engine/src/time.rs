//! Engine time: milliseconds on the engine clock, handed in by the host.
//!
//! Owns the `Time` newtype and its arithmetic. It never reads a clock: the simulator passes
//! virtual time, the production host passes wall time, and the engine cannot tell them apart.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// A point on the engine clock, in milliseconds since the clock's epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Time(pub u64);

impl Time {
    pub const ZERO: Time = Time(0);

    pub fn from_ms(ms: u64) -> Time {
        Time(ms)
    }

    pub fn as_ms(self) -> u64 {
        self.0
    }

    /// Saturates instead of overflowing: a timer a million years out is still a timer.
    pub fn plus(self, duration: Duration) -> Time {
        Time(self.0.saturating_add(duration_ms(duration)))
    }

    /// Time elapsed since `earlier`, zero if `earlier` is later.
    pub fn since(self, earlier: Time) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

/// Whole milliseconds of a duration, saturating at `u64::MAX`.
pub fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl fmt::Display for Time {
    /// Renders as `d+hh:mm:ss.mmm` so week-long waits stay readable in histories and traces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0 % 1000;
        let s = self.0 / 1000;
        let (d, h, m, s) = (s / 86_400, (s / 3600) % 24, (s / 60) % 60, s % 60);
        write!(f, "{d}+{h:02}:{m:02}:{s:02}.{ms:03}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_renders_days_hours_minutes() {
        let t = Time::ZERO.plus(Duration::from_secs(2 * 86_400 + 3 * 3600 + 4 * 60 + 5));
        assert_eq!(t.to_string(), "2+03:04:05.000");
    }

    #[test]
    fn time_plus_saturates() {
        assert_eq!(Time(u64::MAX - 1).plus(Duration::from_secs(10)), Time(u64::MAX));
    }
}
