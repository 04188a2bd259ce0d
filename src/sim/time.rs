//! Virtual time as integers: one time unit (the reference's abstract "time unit") is
//! 10^9 ticks, so times order exactly and never drift; floats appear only where a delay is
//! sampled or a time is printed.

use std::fmt;
use std::ops::{Add, Sub};

/// Ticks per time unit.
pub const TICKS_PER_UNIT: f64 = 1e9;

/// A point in virtual time, in ticks since the start of the simulation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SimTime(pub u64);

/// A span of virtual time, in ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SimDuration(pub u64);

impl SimTime {
    pub const ZERO: SimTime = SimTime(0);

    pub fn from_units(units: f64) -> SimTime {
        SimTime(SimDuration::from_units(units).0)
    }

    /// Time units as a float, for printing and logs.
    pub fn units(self) -> f64 {
        self.0 as f64 / TICKS_PER_UNIT
    }
}

impl SimDuration {
    pub const ZERO: SimDuration = SimDuration(0);

    /// Rounds to the nearest tick; negative or NaN durations become zero.
    pub fn from_units(units: f64) -> SimDuration {
        let ticks = (units * TICKS_PER_UNIT).round();
        SimDuration(if ticks.is_nan() || ticks <= 0.0 { 0 } else { ticks.min(u64::MAX as f64) as u64 })
    }

    pub fn units(self) -> f64 {
        self.0 as f64 / TICKS_PER_UNIT
    }
}

impl Add<SimDuration> for SimTime {
    type Output = SimTime;
    fn add(self, rhs: SimDuration) -> SimTime {
        SimTime(self.0.saturating_add(rhs.0))
    }
}

impl Add for SimDuration {
    type Output = SimDuration;
    fn add(self, rhs: SimDuration) -> SimDuration {
        SimDuration(self.0.saturating_add(rhs.0))
    }
}

impl Sub for SimTime {
    type Output = SimDuration;
    fn sub(self, rhs: SimTime) -> SimDuration {
        SimDuration(self.0.saturating_sub(rhs.0))
    }
}

impl fmt::Display for SimTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.3}", self.units())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_round_trip_and_clamp() {
        assert_eq!(SimTime::from_units(1.5).units(), 1.5);
        assert_eq!(SimDuration::from_units(-3.0), SimDuration(0));
        assert_eq!(SimDuration::from_units(f64::NAN), SimDuration(0));
        assert_eq!(SimTime::from_units(0.1) + SimDuration::from_units(0.2), SimTime(300_000_000));
    }
}
