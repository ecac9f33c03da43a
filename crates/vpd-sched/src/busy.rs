//! How busy a lane has been lately: the fraction of the last few seconds it spent working,
//! as two exponentially decayed sums (busy time and elapsed time, same time constant), so old
//! history fades instead of averaging over the whole run. The controller reads it as the
//! load that slows concurrent draft steps ([`crate::LaneLoad::verify_busy`]).

/// A decayed busy fraction. Times are seconds on any monotonic clock the caller keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BusyMeter {
    tau: f64,
    busy: f64,
    elapsed: f64,
    last: f64,
}

impl BusyMeter {
    /// A meter that forgets with time constant `tau_s` seconds (non-finite or ≤ 0: 1 s),
    /// starting idle at time `now_s`.
    pub fn new(tau_s: f64, now_s: f64) -> Self {
        let tau = if tau_s.is_finite() && tau_s > 0.0 { tau_s } else { 1.0 };
        Self { tau, busy: 0.0, elapsed: 0.0, last: now_s }
    }

    /// The lane worked for `busy_s` seconds of the interval since the last call, which ends
    /// at `now_s` (at most that whole interval counts; a clock going backwards adds nothing).
    pub fn record(&mut self, now_s: f64, busy_s: f64) {
        let interval = now_s - self.last;
        self.advance(now_s);
        if busy_s.is_finite() && busy_s > 0.0 && interval > 0.0 {
            self.busy += busy_s.min(interval);
        }
    }

    /// The busy fraction in [0, 1] as of `now_s` (0 before any time has passed).
    pub fn fraction(&mut self, now_s: f64) -> f64 {
        self.advance(now_s);
        if self.elapsed <= 0.0 {
            0.0
        } else {
            (self.busy / self.elapsed).clamp(0.0, 1.0)
        }
    }

    fn advance(&mut self, now_s: f64) {
        let dt = now_s - self.last;
        if !(dt.is_finite() && dt > 0.0) {
            return;
        }
        let keep = (-dt / self.tau).exp();
        self.busy *= keep;
        // The decayed elapsed time is ∫ e^{-(now-t)/τ} dt over the history: τ·(1 − keep) for
        // the new interval, the old sum decayed.
        self.elapsed = self.elapsed * keep + self.tau * (1.0 - keep);
        self.last = now_s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn always_busy_reads_one_and_never_busy_reads_zero() {
        let (mut on, mut off) = (BusyMeter::new(1.0, 0.0), BusyMeter::new(1.0, 0.0));
        for i in 1..=100 {
            let t = f64::from(i) * 0.01;
            on.record(t, 0.01);
            off.record(t, 0.0);
        }
        assert!((on.fraction(1.0) - 1.0).abs() < 0.02, "{}", on.fraction(1.0));
        assert_eq!(off.fraction(1.0), 0.0);
    }

    #[test]
    fn a_busy_past_fades_after_a_few_time_constants() {
        let mut m = BusyMeter::new(0.5, 0.0);
        for i in 1..=200 {
            m.record(f64::from(i) * 0.01, 0.01); // busy for 2 s
        }
        assert!(m.fraction(2.0) > 0.95);
        // Then idle for 2 s (4 τ): a lifetime average would still say 0.5.
        m.record(4.0, 0.0);
        let f = m.fraction(4.0);
        assert!(f < 0.05, "{f}");
    }

    #[test]
    fn half_duty_reads_about_half_and_bad_inputs_are_ignored() {
        let mut m = BusyMeter::new(1.0, 0.0);
        for i in 1..=400 {
            let t = f64::from(i) * 0.01;
            m.record(t, if i % 2 == 0 { 0.01 } else { 0.0 });
        }
        m.record(4.0, f64::NAN);
        m.record(3.0, 1.0); // time going backwards adds nothing it cannot place
        let f = m.fraction(4.0);
        assert!((f - 0.5).abs() < 0.05, "{f}");
        assert_eq!(BusyMeter::new(f64::NAN, 0.0).fraction(0.0), 0.0);
    }
}
