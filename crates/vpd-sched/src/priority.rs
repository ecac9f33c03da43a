//! Strict lane priority with anti-starvation bounds.
//!
//! Decode > Verify > Prefill, as DESIGN.md orders the lanes, except where a lower lane has
//! waited too long. Strict priority alone lets a busy decode lane starve prefill forever, and
//! then TTFT is unbounded. The rules, checked in this order:
//!
//! 1. Prefill is forced when it has ready work and either it was passed over `prefill_every`
//!    times in a row, or its oldest item has waited `prefill_max_wait` and it was not picked
//!    the step before (so age alone can take at most every other step).
//! 2. Verify is forced when it has ready work and was passed over `verify_every` times in a row.
//! 3. Otherwise the highest lane with ready work.
//!
//! Bounds this gives (tested below): prefill with work ready is picked at least once in every
//! `prefill_every + 1` selections; verify at least once in every `verify_every + 2`. A prompt
//! of C chunks behind K queued chunks therefore finishes prefill within
//! `(K + C) · (prefill_every + 1)` selections, whatever the decode load. This is the
//! host-side policy; it is pure logic over a snapshot, so one lane thread (or a test) calls
//! [`PrioritySelector::select`] once per device slot it hands out.

use std::time::Duration;

use crate::request::Lane;

/// Anti-starvation settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StarvationBounds {
    /// Force a prefill step after this many consecutive selections that passed it over.
    pub prefill_every: u32,
    /// Force a prefill step when its oldest ready item waited this long.
    pub prefill_max_wait: Duration,
    /// Force a verify step after this many consecutive selections that passed it over.
    pub verify_every: u32,
}

impl Default for StarvationBounds {
    fn default() -> Self {
        Self {
            prefill_every: 8,
            prefill_max_wait: Duration::from_millis(50),
            verify_every: 4,
        }
    }
}

/// Invalid [`StarvationBounds`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoundsError {
    #[error("prefill_every must be at least 1 (0 would starve decode)")]
    PrefillEveryZero,
    #[error("verify_every must be at least 1 (0 would starve decode)")]
    VerifyEveryZero,
}

/// Which lanes have work ready now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LaneReady {
    pub decode: bool,
    pub verify: bool,
    /// `Some(age of the oldest ready prefill item)`, or `None` when prefill has nothing.
    pub prefill: Option<Duration>,
}

/// The selection state: how long each lower lane has been passed over.
#[derive(Debug, Clone)]
pub struct PrioritySelector {
    bounds: StarvationBounds,
    prefill_skipped: u32,
    verify_skipped: u32,
    forced: u64,
}

impl PrioritySelector {
    /// # Errors
    /// [`BoundsError`] when a count bound is zero.
    pub fn new(bounds: StarvationBounds) -> Result<Self, BoundsError> {
        if bounds.prefill_every == 0 {
            return Err(BoundsError::PrefillEveryZero);
        }
        if bounds.verify_every == 0 {
            return Err(BoundsError::VerifyEveryZero);
        }
        Ok(Self {
            bounds,
            prefill_skipped: 0,
            verify_skipped: 0,
            forced: 0,
        })
    }

    /// Picks the lane for the next step, or `None` when no lane has work.
    pub fn select(&mut self, ready: &LaneReady) -> Option<Lane> {
        let b = &self.bounds;
        let prefill_forced = ready.prefill.is_some_and(|age| {
            self.prefill_skipped >= b.prefill_every || (age >= b.prefill_max_wait && self.prefill_skipped >= 1)
        });
        let verify_forced = ready.verify && self.verify_skipped >= b.verify_every;
        let lane = if prefill_forced {
            Lane::Prefill
        } else if verify_forced {
            Lane::Verify
        } else if ready.decode {
            Lane::Decode
        } else if ready.verify {
            Lane::Verify
        } else if ready.prefill.is_some() {
            Lane::Prefill
        } else {
            return None;
        };
        if prefill_forced || verify_forced {
            self.forced += 1;
        }
        // A lane's skip count grows only while it has work: idle time is not starvation.
        self.prefill_skipped = match (lane, ready.prefill) {
            (Lane::Prefill, _) | (_, None) => 0,
            _ => self.prefill_skipped + 1,
        };
        self.verify_skipped = match lane {
            Lane::Verify => 0,
            _ if ready.verify => self.verify_skipped + 1,
            _ => 0,
        };
        Some(lane)
    }

    /// Selections so far that an anti-starvation rule decided.
    pub fn forced_count(&self) -> u64 {
        self.forced
    }

    pub fn bounds(&self) -> &StarvationBounds {
        &self.bounds
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL_BUSY: LaneReady = LaneReady {
        decode: true,
        verify: true,
        prefill: Some(Duration::ZERO),
    };

    fn sel(b: StarvationBounds) -> PrioritySelector {
        PrioritySelector::new(b).unwrap()
    }

    #[test]
    fn strict_priority_when_nobody_starves() {
        let mut s = sel(StarvationBounds::default());
        assert_eq!(s.select(&LaneReady::default()), None);
        assert_eq!(
            s.select(&LaneReady {
                decode: true,
                ..Default::default()
            }),
            Some(Lane::Decode)
        );
        assert_eq!(
            s.select(&LaneReady {
                verify: true,
                ..Default::default()
            }),
            Some(Lane::Verify)
        );
        let p = LaneReady {
            prefill: Some(Duration::ZERO),
            ..Default::default()
        };
        assert_eq!(s.select(&p), Some(Lane::Prefill));
        assert_eq!(s.select(&ALL_BUSY), Some(Lane::Decode));
        assert_eq!(s.forced_count(), 0);
    }

    #[test]
    fn zero_bounds_are_rejected() {
        let b = StarvationBounds {
            prefill_every: 0,
            ..Default::default()
        };
        assert_eq!(PrioritySelector::new(b).unwrap_err(), BoundsError::PrefillEveryZero);
        let b = StarvationBounds {
            verify_every: 0,
            ..Default::default()
        };
        assert_eq!(PrioritySelector::new(b).unwrap_err(), BoundsError::VerifyEveryZero);
    }

    #[test]
    fn prefill_progresses_under_saturating_decode_and_verify() {
        let b = StarvationBounds {
            prefill_every: 5,
            prefill_max_wait: Duration::MAX,
            verify_every: 3,
        };
        let mut s = sel(b);
        let (mut gap_p, mut gap_v, mut decode) = (0u32, 0u32, 0u32);
        for _ in 0..10_000 {
            match s.select(&ALL_BUSY).unwrap() {
                Lane::Prefill => gap_p = 0,
                Lane::Verify => {
                    gap_v = 0;
                    gap_p += 1;
                }
                Lane::Decode => {
                    decode += 1;
                    gap_p += 1;
                    gap_v += 1;
                }
            }
            assert!(gap_p <= b.prefill_every, "prefill passed over {gap_p} times");
            assert!(gap_v <= b.verify_every + 1, "verify passed over {gap_v} times");
        }
        assert!(decode > 5_000, "decode keeps most of the steps: {decode}");
    }

    /// TTFT bound: K prompts of C chunks each, with decode and verify always busy, all finish
    /// prefill within (K · C) · (prefill_every + 1) selections.
    #[test]
    fn ttft_is_bounded_by_queue_length_times_the_bound() {
        let b = StarvationBounds {
            prefill_every: 8,
            prefill_max_wait: Duration::MAX,
            verify_every: 4,
        };
        let mut s = sel(b);
        let (k, c) = (5u64, 3u64);
        let mut chunks_left = k * c;
        let mut steps = 0u64;
        while chunks_left > 0 {
            steps += 1;
            if s.select(&ALL_BUSY) == Some(Lane::Prefill) {
                chunks_left -= 1;
            }
        }
        assert!(steps <= k * c * (b.prefill_every as u64 + 1), "{steps} steps");
    }

    #[test]
    fn old_prefill_work_jumps_the_count_bound_but_at_most_every_other_step() {
        let b = StarvationBounds {
            prefill_every: 1000,
            prefill_max_wait: Duration::from_millis(10),
            verify_every: 1000,
        };
        let mut s = sel(b);
        let young = LaneReady {
            prefill: Some(Duration::from_millis(1)),
            ..ALL_BUSY
        };
        let old = LaneReady {
            prefill: Some(Duration::from_millis(20)),
            ..ALL_BUSY
        };
        assert_eq!(s.select(&young), Some(Lane::Decode));
        assert_eq!(s.select(&old), Some(Lane::Prefill));
        let picks: Vec<_> = (0..10).map(|_| s.select(&old).unwrap()).collect();
        assert_eq!(picks.iter().filter(|&&l| l == Lane::Prefill).count(), 5, "{picks:?}");
        assert!(picks
            .windows(2)
            .all(|w| !(w[0] == Lane::Prefill && w[1] == Lane::Prefill)));
    }

    proptest! {
        /// Over arbitrary readiness patterns: the chosen lane has work, a lane is chosen
        /// whenever any has work, and the count bounds hold.
        #[test]
        fn invariants_hold_for_any_readiness(pattern in proptest::collection::vec((any::<bool>(), any::<bool>(), proptest::option::of(0u64..100)), 1..400),
                                             pe in 1u32..6, ve in 1u32..6) {
            let b = StarvationBounds { prefill_every: pe, prefill_max_wait: Duration::from_millis(50), verify_every: ve };
            let mut s = sel(b);
            let (mut run_p, mut run_v) = (0u32, 0u32);
            for (d, v, p) in pattern {
                let r = LaneReady { decode: d, verify: v, prefill: p.map(Duration::from_millis) };
                let got = s.select(&r);
                prop_assert_eq!(got.is_some(), d || v || p.is_some());
                match got {
                    Some(Lane::Decode) => prop_assert!(d),
                    Some(Lane::Verify) => prop_assert!(v),
                    Some(Lane::Prefill) => prop_assert!(p.is_some()),
                    None => {}
                }
                run_p = if p.is_some() && got != Some(Lane::Prefill) { run_p + 1 } else { 0 };
                run_v = if v && got != Some(Lane::Verify) { run_v + 1 } else { 0 };
                prop_assert!(run_p <= pe);
                prop_assert!(run_v <= ve + 1);
            }
        }
    }
}
