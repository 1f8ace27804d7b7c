//! Time as an input: production code reads a [`Clock`], tests pass a fake one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of the current time. Passed in, never read globally, so rotation
/// and expiry are testable without sleeping.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;

    /// The current time as whole seconds since the Unix epoch (0 before it).
    fn unix_seconds(&self) -> i64 {
        unix_seconds(self.now())
    }
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Whole seconds since the Unix epoch; times before it map to 0 and times
/// past `i64::MAX` seconds saturate.
pub fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The inverse of [`unix_seconds`]; negative values map to the epoch.
pub fn from_unix_seconds(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}
