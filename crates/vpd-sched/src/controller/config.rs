//! The controller's settings, their validation and its error type.
use super::MAX_TIERS;
use crate::cost::CostPriorError;
use crate::request::RequestId;

/// What the controller maximises over the requests of one gathered round (draft steps, then
/// one verify forward, time R).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Objective {
    /// Goodput Σ_r E_r / R, accepted tokens per second (TurboSpec). A request whose drafts
    /// are mostly rejected goes to L = 0, though it still waits for the round.
    Goodput,
    /// The root-mean-square predicted TPOT over the requests, R · sqrt(mean_r 1/E_r²),
    /// minimised. A request's time per token is the round's over its own tokens, so the
    /// requests with few tokens a round make the TPOT tail. Their own E counts squared: the
    /// mean alone is nearly indifferent to them (one request's 1/E against the round's
    /// length for everyone), and so is goodput. This keeps them drafting while the others'
    /// drafts make the round anyway, and shortens the round when that helps them. The
    /// default: on an H100 at 128 running requests it gave the lower TPOT tail at 20–80 req/s
    /// and the higher throughput at 80 (docs/perf.md, "Where the TPOT tail comes from"); the
    /// default until 2026-12-06.
    Tpot,
    /// The 16-norm of the predicted TPOT over the requests, R · (mean_r E_r^−16)^(1/16),
    /// minimised: close to the slowest request's R / E_min, the part of a round that makes the
    /// TPOT tail. Under load, where a round with drafts lasts longer than a plain one by more
    /// than the lowest-acceptance requests gain from their drafts, it stops speculating for
    /// everyone: their TPOT is then the plain round's. The default: on an H100 at 55 req/s it
    /// gave TPOT p50 / p99 8.8 / 12.3 ms against the RMS objective's 10.3 / 15.5 (docs/perf.md,
    /// "The tail objective").
    #[default]
    Tail,
}

impl Objective {
    /// The power p of the p-norm of 1/E that [`Objective::Tpot`] (2) and [`Objective::Tail`]
    /// (16) minimise, times the round; `None` for goodput.
    pub fn tpot_power(self) -> Option<i32> {
        match self {
            Self::Goodput => None,
            Self::Tpot => Some(2),
            Self::Tail => Some(16),
        }
    }
}

impl std::str::FromStr for Objective {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "goodput" => Ok(Self::Goodput),
            "tpot" => Ok(Self::Tpot),
            "tail" => Ok(Self::Tail),
            other => Err(format!("unknown controller objective `{other}`: expected goodput, tpot or tail")),
        }
    }
}

impl std::fmt::Display for Objective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Goodput => "goodput",
            Self::Tpot => "tpot",
            Self::Tail => "tail",
        })
    }
}

/// Controller settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ControllerConfig {
    /// The longest draft. Must be ≥ 1 when `speculation` is on.
    pub l_max: u8,
    /// Off: every decision is L = 0 (plain decoding).
    pub speculation: bool,
    /// The L values allowed, increasing, starting at 0, none above `l_max`. Empty: the
    /// default ladder 0, 1, 2, 3, 4, 6, 8, 12, 16, … cut at `l_max` (with `l_max` added).
    pub tiers: Vec<u8>,
    /// α assumed for a new request, in [0, 1].
    pub alpha_prior: f64,
    /// EWMA weight of one verify outcome, in (0, 1].
    pub ewma_weight: f64,
    /// Relative goodput gain a change must predict, ≥ 0.
    pub margin: f64,
    /// Steps a request's L is held after it changed.
    pub cooldown_steps: u32,
    /// Consecutive decisions that must propose the same new L for one request before it
    /// moves alone (a proposal that gains `margin` overall moves everyone at once). ≥ 1.
    pub confirm_steps: u32,
    /// Width of α's confidence band in standard errors, ≥ 0: a request moves only if the move
    /// still pays with α at the pessimistic end of the band.
    pub confidence_z: f64,
    /// Steps at L = 0 before a probe; `None` disables probes.
    pub probe_interval: Option<u32>,
    /// Draft slowdown per unit of verify-lane busy fraction, ≥ 0.
    pub interference: f64,
    /// What the choice of L maximises.
    pub objective: Objective,
    /// The runtime gives a request at L = 0 a plain step of its own *beside* the round's
    /// draft steps (a target forward over the L = 0 requests while the drafts run) and another
    /// in the verify forward: two tokens a round instead of one, whenever some request drafts.
    /// The round's draft phase then lasts the longer of the drafts (slowed by the forward
    /// beside them, κ = 1 + `interference`) and that plain forward.
    pub plain_beside: bool,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            l_max: 6,
            speculation: true,
            tiers: Vec::new(),
            alpha_prior: 0.6,
            ewma_weight: 0.1,
            margin: 0.03,
            cooldown_steps: 8,
            confirm_steps: 3,
            confidence_z: 1.5,
            probe_interval: Some(64),
            interference: 0.5,
            objective: Objective::Tail,
            plain_beside: false,
        }
    }
}

/// Configuration and input errors.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ControllerError {
    #[error("l_max is 0 with speculation on: set l_max >= 1 or turn speculation off")]
    SpeculationWithoutDraft,
    #[error("draft tiers {tiers:?}: {why}")]
    BadTiers { tiers: Vec<u8>, why: &'static str },
    #[error("{field} must be {rule}, got {value}")]
    BadParameter {
        field: &'static str,
        rule: &'static str,
        value: f64,
    },
    #[error(transparent)]
    BadCostPrior(#[from] CostPriorError),
    #[error("request {0} is already registered")]
    DuplicateRequest(RequestId),
    #[error("request {0} is not registered")]
    UnknownRequest(RequestId),
    #[error("request {id}: {accepted} accepted out of {drafted} drafted")]
    AcceptedExceedsDrafted { id: RequestId, drafted: u8, accepted: u8 },
}

impl ControllerConfig {
    /// The tiers this configuration allows.
    ///
    /// # Errors
    /// [`ControllerError`] naming the first invalid field.
    pub fn validated_tiers(&self) -> Result<Vec<u8>, ControllerError> {
        let param = |field, rule, value: f64, ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(ControllerError::BadParameter { field, rule, value })
            }
        };
        let a = self.alpha_prior;
        param("alpha_prior", "in [0, 1]", a, (0.0..=1.0).contains(&a))?;
        let w = self.ewma_weight;
        param("ewma_weight", "in (0, 1]", w, w > 0.0 && w <= 1.0)?;
        param(
            "margin",
            "finite and >= 0",
            self.margin,
            self.margin.is_finite() && self.margin >= 0.0,
        )?;
        let k = self.interference;
        param("interference", "finite and >= 0", k, k.is_finite() && k >= 0.0)?;
        let z = self.confidence_z;
        param("confidence_z", "finite and >= 0", z, z.is_finite() && z >= 0.0)?;
        if self.confirm_steps == 0 {
            return Err(ControllerError::BadParameter {
                field: "confirm_steps",
                rule: ">= 1",
                value: 0.0,
            });
        }
        if self.probe_interval == Some(0) {
            return Err(ControllerError::BadParameter {
                field: "probe_interval",
                rule: ">= 1",
                value: 0.0,
            });
        }
        if !self.speculation {
            return Ok(vec![0]);
        }
        if self.l_max == 0 {
            return Err(ControllerError::SpeculationWithoutDraft);
        }
        let tiers = if self.tiers.is_empty() {
            let mut t: Vec<u8> = [0u8, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128]
                .into_iter()
                .filter(|&x| x < self.l_max)
                .collect();
            t.push(self.l_max);
            t
        } else {
            self.tiers.clone()
        };
        let bad = |why| {
            Err(ControllerError::BadTiers {
                tiers: tiers.clone(),
                why,
            })
        };
        if tiers.first() != Some(&0) {
            return bad("must start at 0");
        }
        if tiers.len() < 2 {
            return bad("need a tier above 0 with speculation on");
        }
        if tiers.len() > MAX_TIERS {
            return bad("at most 16 tiers");
        }
        if tiers.windows(2).any(|w| w[0] >= w[1]) {
            return bad("must be strictly increasing");
        }
        if tiers.last().is_some_and(|&t| t > self.l_max) {
            return bad("a tier exceeds l_max");
        }
        Ok(tiers)
    }
}
