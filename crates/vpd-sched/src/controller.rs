//! Acceptance-aware draft-length controller (SmartSpec/TurboSpec goodput, Liu et al. 2024,
//! arXiv 2406.14066; ALGORITHMS.md, "Choosing L under load").
//!
//! Each step it picks every active request's draft length `L_r` from a few tiers in
//! `0..=l_max` (0 = no speculation) to maximise predicted goodput:
//!
//! ```text
//!   G = Σ_r E(α_r, L_r) / ( κ · Σ_s d(n_s) + v(Σ_r (L_r + 1) + B) − v(B) + v(0) )
//!   E(α, L) = 1 + α + … + α^L = (1 − α^(L+1)) / (1 − α)      expected tokens per verify
//! ```
//!
//! - `α_r`: per request, the ratio of two EWMAs (accepted positions / tried positions), which is
//!   the running maximum-likelihood estimate of a per-position acceptance rate.
//! - `d(n_s)`: draft step s runs over the `n_s` requests with `L_r ≥ s`; `v(T)`: one verify
//!   forward over T tokens, flat below the compute ridge and linear above ([`crate::cost`]).
//! - `B`: tokens that share the verify forward (queued verify groups and the prefill chunk
//!   that runs in verify's partition): this is how lane queue depth enters. B's own time is
//!   charged to B, so these requests pay the weight read v(0) plus their increment on top of
//!   B. Under load B pushes T past the ridge and every drafted token starts to cost the
//!   compute-bound slope, where below the ridge it was nearly free. (Charging all of v(Σ + B)
//!   would do the opposite: a long step looks like a reason to draft more to amortise it.)
//! - `κ = 1 + interference · verify_busy`: decode and verify share HBM bandwidth, so drafts run
//!   slower while verify is busy (ALGORITHMS.md measured 1.5–2.2× on an H200). `d` holds solo
//!   times: a draft step measured under load is divided by that moment's κ
//!   ([`Controller::observe_loaded_draft_step`]), so κ is not counted twice.
//!
//! Search: the time term couples all requests (a draft step costs the same for 1 or 64
//! requests), so plain coordinate ascent stalls: from "all at L = 4" no single request can
//! profitably drop to 0. For each cap tier c we evaluate the uniform assignment and a priced
//! one (each request maximises `E(α_r, L) − G_c · (∂v/∂T + κ·∂d/∂n) · L` for L ≤ c, the
//! Dinkelbach step of the ratio objective), keep the best, then polish with one pass of
//! single-request moves. Cost: O(tiers² · n) per decision.
//!
//! Stability: a proposal replaces the whole current assignment at once only if it predicts
//! more than `margin` relative gain (a load step). Otherwise a single request moves only after
//! `confirm_steps` consecutive decisions proposed the same new L for it and the move alone
//! still gains (a debounce: noise in α̂ flips proposals briefly, a real change persists; a
//! goodput margin per request would instead freeze nearly-free moves such as an α ≈ 0
//! request going from L = 1 to 0). Every move, alone or with the proposal, must also pay
//! with α at the pessimistic end of a `confidence_z`-standard-error band around α̂ (low end
//! for a move up, high end for a move down) when it reverses the request's last change: a
//! deadband in α, as wide as the evidence is thin, exactly where noise would flap. A request whose L changed is held for `cooldown_steps`.
//! A request held at L = 0 learns nothing about α, so every `probe_interval` steps (staggered
//! by id) it drafts the smallest tier once; whenever a request goes from L = 0 to L > 0 the
//! decision says `refresh_drafter`, because the drafter's state missed the tokens of the L = 0
//! steps.

use std::collections::HashMap;

mod config;

pub use config::{ControllerConfig, ControllerError, Objective};

use crate::cost::{CostModel, CostPrior};
use crate::request::RequestId;

/// A flapping request's hold grows up to this multiple of `cooldown_steps`.
pub const MAX_HOLD_FACTOR: u32 = 16;

/// At most this many tiers (keeps the per-tier counts on the stack).
pub const MAX_TIERS: usize = 16;

/// Global load, sampled by the runtime before each decision.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LaneLoad {
    /// Tokens of verify groups queued ahead that the next verify forward will micro-batch
    /// with these drafts (verify queue depth × their Σ(L+1)).
    pub verify_queue_tokens: u32,
    /// Prefill tokens that run inside the verify forward (chunks that ride in it): at most
    /// the backlog. A chunk that runs as a forward of its own is not counted here; its device
    /// time shows in `verify_busy`.
    pub prefill_chunk_tokens: u32,
    /// Fraction of recent time the verify lane was busy, in [0, 1] (a decayed meter such as
    /// [`crate::BusyMeter`], not a lifetime average); non-finite counts as 0.
    pub verify_busy: f64,
}

/// The controller's answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub id: RequestId,
    /// Draft length for this step; 0 = plain decoding.
    pub l: u8,
    /// The request resumes drafting after L = 0 steps: bring the drafter's state (its KV) up
    /// to date with the tokens it missed before drafting.
    pub refresh_drafter: bool,
    /// This draft is a probe to re-measure α, not a goodput choice.
    pub probe: bool,
}

/// Counters for reports and tests.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ControllerStats {
    /// Calls to [`Controller::decide`].
    pub steps: u64,
    /// Non-probe changes of some request's L (new requests' first L not counted).
    pub l_changes: u64,
    pub probes: u64,
    pub refreshes: u64,
    /// Inputs ignored: non-finite load fields, unusable cost samples.
    pub rejected_inputs: u64,
    /// Predicted goodput of the last decision, tokens per second.
    pub predicted_goodput: f64,
}

#[derive(Debug, Clone)]
struct Slot {
    id: RequestId,
    acc: f64,
    att: f64,
    tier: u8,
    fresh: bool,
    cooldown: u32,
    /// The current hold after a change: `cooldown_steps`, doubled for each change that comes
    /// soon after the previous one (flapping), back to `cooldown_steps` after a quiet spell.
    hold: u32,
    last_change: u64,
    /// Direction of the last change (true = L went up).
    last_up: Option<bool>,
    zero_steps: u32,
    /// Consecutive decisions whose proposal for this request was `pending_tier`.
    pending: u32,
    pending_tier: u8,
    last_l: Option<u8>,
    stagger: u32,
}

impl Slot {
    fn alpha(&self) -> f64 {
        if self.att > 0.0 {
            (self.acc / self.att).clamp(0.0, 1.0)
        } else {
            0.0
        }
    }

    /// The pessimistic end of α's confidence band for a move up (low end) or down (high end).
    /// The EWMA of per-verify counts with weight w averages about (2 − w)/w verifies, so the
    /// estimate rests on `att · (2 − w) / w` positions; the band is z binomial standard errors.
    fn alpha_band(&self, w: f64, z: f64, up: bool) -> f64 {
        let a = self.alpha();
        let n_eff = (self.att * (2.0 - w) / w).max(1.0);
        let half = z * (a * (1.0 - a)).max(1.0 / n_eff).sqrt() / n_eff.sqrt();
        if up {
            (a - half).max(0.0)
        } else {
            (a + half).min(1.0)
        }
    }
}

/// E(α, L) = 1 + α + … + α^L, by running powers (exact at α = 1).
fn e_at(alpha: f64, l: u8) -> f64 {
    let (mut pow, mut sum) = (1.0, 0.0);
    for _ in 0..=l {
        sum += pow;
        pow *= alpha;
    }
    sum
}

/// x^(1/p): by p's square roots where p is a power of two (the objectives' 2 and 16; the
/// search scores every candidate move; with `powf` a decision over 256 requests took 16% longer).
fn root(x: f64, p: i32) -> f64 {
    if p > 0 && (p as u32).is_power_of_two() {
        (0..p.trailing_zeros()).fold(x, |r, _| r.sqrt())
    } else {
        x.powf(1.0 / f64::from(p))
    }
}

/// E as tabled for the search: under [`ControllerConfig::plain_beside`] L = 0 counts two
/// tokens a round (one beside the drafts, one in the verify forward; [`Eval::outputs`]
/// corrects the round where nobody drafts).
fn e_tabled(e: f64, l: u8, beside: bool) -> f64 {
    if beside && l == 0 {
        2.0
    } else {
        e
    }
}

/// Aggregates of an assignment: tokens out, Σ E^−p (p of [`Objective::tpot_power`]; 0 for
/// goodput), verify tokens, requests per tier.
#[derive(Debug, Clone, Copy)]
struct Agg {
    tokens: f64,
    inv: f64,
    vtok: f64,
    cnt: [u32; MAX_TIERS],
}

impl Agg {
    /// One request's expected tokens taken as `new` instead of `old` (same tier).
    fn reweigh(&mut self, old: f64, new: f64, p: i32) {
        self.tokens += new - old;
        self.inv += new.powi(-p) - old.powi(-p);
    }
}

struct Eval<'a> {
    cost: &'a CostModel,
    tiers: &'a [u8],
    bg: f64,
    /// Sequences in the verify forward: every tracked request, whatever its L (an L = 0
    /// step rides in it too), so their per-sequence cost is the same for every assignment.
    seqs: f64,
    /// v(0, S) − v(B, S): takes B's own verify time out of the charge.
    bg_credit: f64,
    kappa: f64,
    /// p of [`Objective::tpot_power`], 0 for goodput.
    power: i32,
    /// [`ControllerConfig::plain_beside`]: the draft slowdown beside the plain forward, or
    /// `None` when L = 0 requests ride in the verify forward only.
    beside_kappa: Option<f64>,
}

impl<'a> Eval<'a> {
    fn new(cost: &'a CostModel, tiers: &'a [u8], bg: f64, seqs: f64, kappa: f64, objective: Objective) -> Self {
        Self {
            cost,
            tiers,
            bg,
            seqs,
            bg_credit: cost.verify_s(0.0, seqs) - cost.verify_s(bg, seqs),
            kappa,
            power: objective.tpot_power().unwrap_or(0),
            beside_kappa: None,
        }
    }

    /// Whether the L = 0 requests of `a` get a plain step beside the drafts: some request
    /// drafts, so there are draft steps to run beside.
    fn beside(&self, a: &Agg) -> bool {
        let n0 = a.cnt[0];
        self.beside_kappa.is_some() && n0 > 0 && a.cnt.iter().sum::<u32>() > n0
    }

    /// Tokens a round and Σ E^−p of `a`. Tier 0 is tabled at two tokens under
    /// `plain_beside` (the usual case: someone drafts); when nobody does, those requests get
    /// their verify-forward token only.
    fn outputs(&self, a: &Agg) -> (f64, f64) {
        if self.beside_kappa.is_some() && !self.beside(a) {
            let n0 = f64::from(a.cnt[0]);
            (a.tokens - n0, a.inv + (1.0 - 2f64.powi(-self.power)) * n0)
        } else {
            (a.tokens, a.inv)
        }
    }
}

impl Eval<'_> {
    fn time(&self, a: &Agg) -> f64 {
        let mut ge = 0usize;
        let mut draft = 0.0;
        for j in (1..self.tiers.len()).rev() {
            ge += a.cnt[j] as usize;
            if ge > 0 {
                draft += f64::from(self.tiers[j] - self.tiers[j - 1]) * self.cost.draft_step_s(ge);
            }
        }
        let phase = match self.beside_kappa {
            // The plain forward over the L = 0 requests (one token each) runs beside the
            // drafts, which it slows: the phase lasts the longer of the two.
            Some(k) if self.beside(a) => {
                let n0 = f64::from(a.cnt[0]);
                (k * draft).max(self.cost.verify_s(n0, n0))
            }
            _ => self.kappa * draft,
        };
        phase + self.cost.verify_s(a.vtok + self.bg, self.seqs) + self.bg_credit
    }

    fn goodput(&self, a: &Agg) -> f64 {
        let t = self.time(a);
        if t > 0.0 {
            self.outputs(a).0 / t
        } else {
            0.0
        }
    }

    /// What the search maximises: goodput, or for [`Objective::Tpot`] and [`Objective::Tail`]
    /// the reciprocal of the p-norm of the predicted TPOT, 1 / (R · (mean_r E_r^−p)^(1/p)).
    fn score(&self, a: &Agg) -> f64 {
        if self.power == 0 {
            return self.goodput(a);
        }
        let n: u32 = a.cnt.iter().sum();
        let norm = self.time(a) * root(self.outputs(a).1 / f64::from(n.max(1)), self.power);
        if norm > 0.0 {
            1.0 / norm
        } else {
            0.0
        }
    }

    /// The aggregates of `assign`, with `ep` holding E^−p for each entry of `e`.
    fn agg(&self, assign: &[u8], e: &[f64], ep: &[f64]) -> Agg {
        let m = self.tiers.len();
        let mut a = Agg {
            tokens: 0.0,
            inv: 0.0,
            vtok: 0.0,
            cnt: [0; MAX_TIERS],
        };
        for (r, &j) in assign.iter().enumerate() {
            a.tokens += e[r * m + j as usize];
            a.inv += ep[r * m + j as usize];
            a.vtok += f64::from(self.tiers[j as usize]) + 1.0;
            a.cnt[j as usize] += 1;
        }
        a
    }

    /// E^−p of each entry of `e`, as `Controller::decide` tables it.
    #[cfg(test)]
    fn powered(&self, e: &[f64]) -> Vec<f64> {
        e.iter().map(|x| x.powi(-self.power)).collect()
    }

    /// `a` with request r moved from tier `from` to `to`.
    fn moved(&self, a: &Agg, e: &[f64], r: usize, from: u8, to: u8) -> Agg {
        let m = self.tiers.len();
        let mut b = *a;
        b.reweigh(e[r * m + from as usize], e[r * m + to as usize], self.power);
        b.vtok += f64::from(self.tiers[to as usize]) - f64::from(self.tiers[from as usize]);
        b.cnt[from as usize] -= 1;
        b.cnt[to as usize] += 1;
        b
    }
}

/// The per-step draft-length controller. See the module docs for the model.
#[derive(Debug, Clone)]
pub struct Controller {
    cfg: ControllerConfig,
    tiers: Vec<u8>,
    cost: CostModel,
    slots: Vec<Slot>,
    index: HashMap<RequestId, usize>,
    stats: ControllerStats,
    // Scratch, reused every step so a decision allocates nothing once warm.
    e: Vec<f64>,
    /// E^−p of each entry of `e` (p of the objective): the pricing and the aggregates read it
    /// tiers² · n times a decision.
    ep: Vec<f64>,
    fixed: Vec<Option<u8>>,
    probing: Vec<bool>,
    cand: Vec<u8>,
    best: Vec<u8>,
    cur: Vec<u8>,
    out: Vec<Decision>,
}

impl Controller {
    /// # Errors
    /// [`ControllerError`] for an invalid configuration or cost prior.
    pub fn new(cfg: ControllerConfig, prior: CostPrior) -> Result<Self, ControllerError> {
        let tiers = cfg.validated_tiers()?;
        let cost = CostModel::new(prior)?;
        Ok(Self {
            cfg,
            tiers,
            cost,
            slots: Vec::new(),
            index: HashMap::new(),
            stats: ControllerStats::default(),
            e: Vec::new(),
            ep: Vec::new(),
            fixed: Vec::new(),
            probing: Vec::new(),
            cand: Vec::new(),
            best: Vec::new(),
            cur: Vec::new(),
            out: Vec::new(),
        })
    }

    /// Starts tracking a request (after its prefill, when it first drafts).
    ///
    /// # Errors
    /// [`ControllerError::DuplicateRequest`] if `id` is tracked already.
    pub fn add_request(&mut self, id: RequestId) -> Result<(), ControllerError> {
        if self.index.contains_key(&id) {
            return Err(ControllerError::DuplicateRequest(id));
        }
        let interval = self.cfg.probe_interval.unwrap_or(1).max(1);
        // Fibonacci hashing spreads probes of requests admitted together over the interval.
        let stagger = ((id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % u64::from(interval)) as u32;
        self.index.insert(id, self.slots.len());
        self.slots.push(Slot {
            id,
            acc: self.cfg.alpha_prior,
            att: 1.0,
            tier: 0,
            fresh: true,
            cooldown: 0,
            hold: self.cfg.cooldown_steps,
            last_change: 0,
            last_up: None,
            zero_steps: 0,
            pending: 0,
            pending_tier: 0,
            last_l: None,
            stagger,
        });
        Ok(())
    }

    /// Stops tracking a request (finished, aborted or preempted). Returns whether it was tracked.
    pub fn remove_request(&mut self, id: RequestId) -> bool {
        let Some(i) = self.index.remove(&id) else { return false };
        self.slots.swap_remove(i);
        if let Some(moved) = self.slots.get(i) {
            self.index.insert(moved.id, i);
        }
        true
    }

    /// Records a verify outcome: `accepted` of `drafted` positions were accepted.
    ///
    /// # Errors
    /// [`ControllerError::UnknownRequest`], or [`ControllerError::AcceptedExceedsDrafted`].
    pub fn observe_acceptance(&mut self, id: RequestId, drafted: u8, accepted: u8) -> Result<(), ControllerError> {
        let &i = self.index.get(&id).ok_or(ControllerError::UnknownRequest(id))?;
        if accepted > drafted {
            return Err(ControllerError::AcceptedExceedsDrafted { id, drafted, accepted });
        }
        if drafted == 0 {
            return Ok(());
        }
        // Positions tried: the accepted ones plus the first rejected one, if any.
        let tried = f64::from(accepted) + f64::from(u8::from(accepted < drafted));
        let w = self.cfg.ewma_weight;
        let s = &mut self.slots[i];
        s.acc = (1.0 - w) * s.acc + w * f64::from(accepted);
        s.att = (1.0 - w) * s.att + w * tried;
        Ok(())
    }

    /// Records a measured draft step; returns whether it was used (see [`CostModel`]).
    pub fn observe_draft_step(&mut self, batch: usize, seconds: f64) -> bool {
        let ok = self.cost.observe_draft(batch, seconds);
        self.stats.rejected_inputs += u64::from(!ok);
        ok
    }

    /// Records a draft step measured while the verify lane was `verify_busy` busy (the same
    /// [`LaneLoad::verify_busy`] the decisions read). The time is divided by that moment's
    /// κ = 1 + interference · busy before it enters the cost model, which therefore holds
    /// solo step times; decisions multiply by the κ of their own moment. Feeding loaded times
    /// to [`Controller::observe_draft_step`] would count the interference twice.
    pub fn observe_loaded_draft_step(&mut self, batch: usize, seconds: f64, verify_busy: f64) -> bool {
        let busy = if verify_busy.is_finite() { verify_busy.clamp(0.0, 1.0) } else { 0.0 };
        self.observe_draft_step(batch, seconds / (1.0 + self.cfg.interference * busy))
    }

    /// Records a measured verify forward over `tokens` tokens of `seqs` sequences; returns
    /// whether it was used.
    pub fn observe_verify_step(&mut self, tokens: usize, seqs: usize, seconds: f64) -> bool {
        let ok = self.cost.observe_verify(tokens, seqs, seconds);
        self.stats.rejected_inputs += u64::from(!ok);
        ok
    }

    /// Picks L for every tracked request, in no particular order. Allocation-free once warm.
    pub fn decide(&mut self, load: &LaneLoad) -> &[Decision] {
        self.stats.steps += 1;
        let n = self.slots.len();
        let m = self.tiers.len();
        self.out.clear();
        if n == 0 {
            return &self.out;
        }
        let busy = if load.verify_busy.is_finite() {
            load.verify_busy.clamp(0.0, 1.0)
        } else {
            self.stats.rejected_inputs += 1;
            0.0
        };
        let bg = f64::from(load.verify_queue_tokens) + f64::from(load.prefill_chunk_tokens);
        let kappa = 1.0 + self.cfg.interference * busy;
        let mut eval = Eval::new(&self.cost, &self.tiers, bg, n as f64, kappa, self.cfg.objective);
        if self.cfg.plain_beside {
            eval.beside_kappa = Some(1.0 + self.cfg.interference);
        }
        let beside = self.cfg.plain_beside;
        let tiers = &self.tiers;
        // E at a tier for α taken at the pessimistic end of its band, as the e-table has it.
        let e_of = |alpha: f64, tier: u8| e_tabled(e_at(alpha, tiers[tier as usize]), tiers[tier as usize], beside);

        // E(α_r, tier) for every request and tier, by running powers (exact at α = 1).
        self.e.clear();
        self.ep.clear();
        self.fixed.clear();
        self.probing.clear();
        let l_top = *self.tiers.last().unwrap_or(&0);
        for s in &mut self.slots {
            let a = s.alpha();
            let (mut pow, mut sum, mut j) = (1.0, 0.0, 0usize);
            for l in 0..=l_top {
                sum += pow;
                pow *= a;
                if self.tiers[j] == l {
                    let e = e_tabled(sum, l, beside);
                    self.e.push(e);
                    self.ep.push(e.powi(-eval.power));
                    j += 1;
                }
            }
            s.cooldown = s.cooldown.saturating_sub(1);
            let probe_due = m > 1
                && s.tier == 0
                && !s.fresh
                && self.cfg.probe_interval.is_some_and(|p| s.zero_steps >= p + s.stagger);
            // A probe is outside the goodput model: it is evaluated as L = 0, so its draft step
            // does not make drafting look free for everyone else.
            self.probing.push(probe_due);
            self.fixed.push(if probe_due {
                Some(0)
            } else if s.cooldown > 0 {
                Some(s.tier)
            } else {
                None
            });
        }

        // Proposal.
        propose(&eval, &self.e, &self.ep, &self.fixed, &mut self.cand, &mut self.best);

        // Hysteresis against the current assignment.
        self.cur.clear();
        for (r, s) in self.slots.iter().enumerate() {
            self.cur.push(match self.fixed[r] {
                Some(t) => t,
                None if s.fresh => self.best[r],
                None => s.tier,
            });
        }
        let a_prop = eval.agg(&self.best, &self.e, &self.ep);
        let mut a_cur = eval.agg(&self.cur, &self.e, &self.ep);
        let (g_prop, g_cur) = (eval.score(&a_prop), eval.score(&a_cur));
        let w = self.cfg.ewma_weight;
        let z = self.cfg.confidence_z;
        if g_prop > g_cur * (1.0 + self.cfg.margin) {
            // Adopt the proposal, except requests whose own move is not confident: with α at
            // the pessimistic end of its band, putting it back would not lose.
            let mut a = a_prop;
            for (r, s) in self.slots.iter_mut().enumerate() {
                s.pending = 0;
                let (from, to) = (self.cur[r], self.best[r]);
                if from == to || self.fixed[r].is_some() {
                    continue;
                }
                let ac = s.alpha_band(w, z, to > from);
                let ac = if s.last_up.is_some_and(|u| u != (to > from)) {
                    ac
                } else {
                    s.alpha()
                };
                let (ef, et) = (e_of(ac, from), e_of(ac, to));
                let nominal = self.e[r * m + to as usize];
                let mut at = a;
                at.reweigh(nominal, et, eval.power);
                let mut af = eval.moved(&a, &self.e, r, to, from);
                af.reweigh(self.e[r * m + from as usize], ef, eval.power);
                if eval.score(&at) > eval.score(&af) {
                    self.cur[r] = to;
                } else {
                    a = eval.moved(&a, &self.e, r, to, from);
                }
            }
            a_cur = a;
        } else {
            for (r, s) in self.slots.iter_mut().enumerate() {
                let (from, to) = (self.cur[r], self.best[r]);
                if from == to || self.fixed[r].is_some() {
                    s.pending = 0;
                    continue;
                }
                if s.pending > 0 && s.pending_tier == to {
                    s.pending += 1;
                } else {
                    s.pending_tier = to;
                    s.pending = 1;
                }
                if s.pending < self.cfg.confirm_steps {
                    continue;
                }
                // The band guards reversals, where noise shows as flapping; a move that continues
                // the last one (a descent through tiers, a first move) uses α̂ itself.
                let ac = if s.last_up.is_some_and(|u| u != (to > from)) {
                    s.alpha_band(w, z, to > from)
                } else {
                    s.alpha()
                };
                let (ef, et) = (e_of(ac, from), e_of(ac, to));
                let mut af = a_cur;
                af.reweigh(self.e[r * m + from as usize], ef, eval.power);
                let mut at = eval.moved(&a_cur, &self.e, r, from, to);
                at.reweigh(self.e[r * m + to as usize], et, eval.power);
                if eval.score(&at) > eval.score(&af) {
                    self.cur[r] = to;
                    a_cur = eval.moved(&a_cur, &self.e, r, from, to);
                    s.pending = 0;
                }
            }
        }
        self.stats.predicted_goodput = eval.goodput(&a_cur);

        for (r, s) in self.slots.iter_mut().enumerate() {
            let probe = self.probing[r];
            let t = if probe { 1 } else { self.cur[r] };
            if !probe {
                if !s.fresh && t != s.tier {
                    self.stats.l_changes += 1;
                    let base = self.cfg.cooldown_steps;
                    let up = t > s.tier;
                    let soon = self.stats.steps.saturating_sub(s.last_change) < 4 * u64::from(s.hold.max(1));
                    // Only a reversal is flapping: a descent through several tiers is not.
                    let flap = soon && s.last_up.is_some_and(|u| u != up);
                    s.hold = if flap {
                        (s.hold.max(1) * 2).min(MAX_HOLD_FACTOR * base.max(1))
                    } else if soon {
                        s.hold
                    } else {
                        base
                    };
                    s.last_up = Some(up);
                    s.last_change = self.stats.steps;
                    s.cooldown = s.hold + 1;
                }
                s.tier = t;
            }
            s.fresh = false;
            let l = self.tiers[t as usize];
            let refresh = s.last_l == Some(0) && l > 0;
            s.zero_steps = if l == 0 { s.zero_steps.saturating_add(1) } else { 0 };
            s.last_l = Some(l);
            self.stats.probes += u64::from(probe);
            self.stats.refreshes += u64::from(refresh);
            self.out.push(Decision {
                id: s.id,
                l,
                refresh_drafter: refresh,
                probe,
            });
        }
        &self.out
    }

    /// The current acceptance estimate of a request.
    pub fn alpha(&self, id: RequestId) -> Option<f64> {
        self.index.get(&id).map(|&i| self.slots[i].alpha())
    }

    /// The L most recently decided for a request (a probe's L included).
    pub fn last_l(&self, id: RequestId) -> Option<u8> {
        self.index.get(&id).and_then(|&i| self.slots[i].last_l)
    }

    /// Requests tracked.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn stats(&self) -> ControllerStats {
        self.stats
    }

    pub fn tiers(&self) -> &[u8] {
        &self.tiers
    }

    pub fn cost_model(&self) -> &CostModel {
        &self.cost
    }

    pub fn config(&self) -> &ControllerConfig {
        &self.cfg
    }
}

/// Writes the best assignment found into `best` (tier indices); `fixed` requests keep theirs.
fn propose(eval: &Eval<'_>, e: &[f64], ep: &[f64], fixed: &[Option<u8>], cand: &mut Vec<u8>, best: &mut Vec<u8>) {
    let n = fixed.len();
    let m = eval.tiers.len();
    cand.clear();
    cand.resize(n, 0);
    best.clear();
    best.resize(n, 0);
    let mut best_g = f64::NEG_INFINITY;
    let d_slope = eval.kappa * eval.cost.draft_per_seq_s();
    for c in 0..m as u8 {
        for (r, f) in fixed.iter().enumerate() {
            cand[r] = f.unwrap_or(c);
        }
        let a = eval.agg(cand, e, ep);
        let g_uniform = eval.score(&a);
        if g_uniform > best_g {
            best_g = g_uniform;
            best.copy_from_slice(cand);
        }
        if c == 0 {
            continue;
        }
        // Each request's share of the objective, linearised at this uniform assignment (the
        // Dinkelbach step): goodput Σ E / R gains E_r − G·R'·L_r; the p-th power of the p-norm
        // TPOT, R^p·Σ E^−p (over n), grows by R^(p−1)·(R·E_r^−p + p·Σ E^−p·R'·L_r).
        let slope = eval.cost.verify_slope_s(a.vtok + eval.bg) + d_slope;
        let (round, inv) = (eval.time(&a), a.inv);
        for (r, f) in fixed.iter().enumerate() {
            if f.is_some() {
                continue;
            }
            let (row, row_p) = (&e[r * m..r * m + m], &ep[r * m..r * m + m]);
            let mut pick = 0u8;
            let mut val = f64::NEG_INFINITY;
            for (j, ((&ej, &epj), &tj)) in row.iter().zip(row_p).zip(eval.tiers).enumerate().take(c as usize + 1) {
                let p = eval.power;
                let v = if p == 0 {
                    ej - g_uniform * slope * f64::from(tj)
                } else {
                    -(round * epj) - f64::from(p) * inv * slope * f64::from(tj)
                };
                if v > val {
                    val = v;
                    pick = j as u8;
                }
            }
            cand[r] = pick;
        }
        let g = eval.score(&eval.agg(cand, e, ep));
        if g > best_g {
            best_g = g;
            best.copy_from_slice(cand);
        }
    }
    // With plain steps beside the drafts the objective is not unimodal along the tiers: a few
    // requests at 0 pay (their plain forward fits in the drafts' time), more lengthen the
    // round. From each uniform tier, move requests to 0 one at a time, those that gain least
    // from drafting first, and keep the best prefix.
    if eval.beside_kappa.is_some() {
        let mut order: Vec<usize> = (0..n).filter(|&r| fixed[r].is_none()).collect();
        for c in 1..m as u8 {
            order.sort_by(|&x, &y| e[x * m + c as usize].total_cmp(&e[y * m + c as usize]));
            for (r, f) in fixed.iter().enumerate() {
                cand[r] = f.unwrap_or(c);
            }
            let mut a = eval.agg(cand, e, ep);
            let mut keep = None;
            for (k, &r) in order.iter().enumerate() {
                a = eval.moved(&a, e, r, c, 0);
                let g = eval.score(&a);
                if g > best_g {
                    best_g = g;
                    keep = Some(k);
                }
            }
            if let Some(k) = keep {
                best.copy_from_slice(cand);
                for &r in &order[..=k] {
                    best[r] = 0;
                }
            }
        }
    }
    // Polish: single-request moves to a neighbouring tier.
    let mut a = eval.agg(best, e, ep);
    for r in 0..n {
        if fixed[r].is_some() {
            continue;
        }
        let from = best[r];
        for to in [from.wrapping_sub(1), from + 1] {
            if (to as usize) < m {
                let b = eval.moved(&a, e, r, best[r], to);
                let g = eval.score(&b);
                if g > best_g * (1.0 + 1e-12) {
                    best_g = g;
                    best[r] = to;
                    a = b;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
