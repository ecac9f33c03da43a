//! Gathered rounds under a cost model, with no GPU: what the controller's choices of L give
//! for per-request TPOT, against a fixed L. A closed system of N requests (each replaced by a
//! new one after 110 tokens), each with its own per-position acceptance drawn from a Beta of
//! mean 0.7 and spread 0.15 (as `vpd bench --acceptance synthetic:0.7,0.15`), Bernoulli
//! acceptances. A round is the draft steps (alone on the GPU) and one verify forward over every request and 50 riding prefill tokens; with `--beside`, the
//! controller is told of plain steps beside the drafts and L = 0 requests get two tokens a
//! round while the phase lasts the longer of the drafts (κ 1.5) and their plain forward.
//! The costs are the H200's fit at 50 req/s, 128 running (docs/runs/2026-12-05-h200-
//! defaults-def-40.json; copy 4197 GB/s and bf16 GEMM 777 TFLOP/s in that call): a model,
//! not a measurement; it leaves out arrivals, prefill bursts
//! and run-to-run noise, so its TPOT is lower than measured.
//!
//! With `--rate R`, an open system instead: Poisson arrivals at R requests a second, prompts of
//! a log-normal length (median 67, mean about 110 tokens, as the filtered ShareGPT prompts of
//! the GPU runs: 67178 prompt tokens over 600 requests), 80% of outputs at the 128-token cap
//! and the rest uniform in 4..128 (112 on average, as measured), and up to `--ride T` prompt
//! tokens (default 256) riding each verify forward, first come first served. A request starts
//! decoding the round after its prompt's last token rode; TTFT is its arrival to that forward's
//! end, TPOT its decode time over its output tokens less one (vLLM's definition). This is the
//! arrival and prefill-burst part of the tail that the closed system leaves out. Each request's
//! drafter prefill is left out (it runs on the 1B model beside the 8B forwards).
//!
//!     cargo run --release -p vpd-sched --example round_sim -- [--beside] [--fixed L] [N]
//!     cargo run --release -p vpd-sched --example round_sim -- [--fixed L] --rate R [--ride T]
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vpd_sched::{Controller, ControllerConfig, CostPrior, Decision, LaneLoad};

const PRIOR: CostPrior = CostPrior {
    draft_base_s: 1.2e-3,
    draft_per_seq_s: 0.0098e-3,
    verify_base_s: 5.62e-3,
    verify_per_token_s: 0.0055e-3,
    verify_per_token_above_ridge_s: 0.0141e-3,
    ridge_tokens: 64.0,
    verify_per_seq_s: 0.0275e-3,
};
const RIDE_TOKENS: f64 = 50.0;
const BUSY: f64 = 0.76;
const OUTPUT_TOKENS: usize = 110;

fn draft_s(n: usize) -> f64 {
    if n == 0 { 0.0 } else { PRIOR.draft_base_s + PRIOR.draft_per_seq_s * n as f64 }
}

/// The draft steps of a round, gathered: step s runs every request with L ≥ s.
fn draft_phase_s(ls: &[u8]) -> f64 {
    let top = ls.iter().copied().max().unwrap_or(0) as usize;
    (1..=top).map(|s| draft_s(ls.iter().filter(|&&l| l as usize >= s).count())).sum()
}

fn verify_s(t: f64, s: f64) -> f64 {
    PRIOR.verify_base_s + PRIOR.verify_per_token_s * t + PRIOR.verify_per_token_above_ridge_s * (t - PRIOR.ridge_tokens).max(0.0) + PRIOR.verify_per_seq_s * s
}

/// A standard normal by Box–Muller.
fn std_normal(rng: &mut ChaCha8Rng) -> f64 {
    let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Each request's L this round: the fixed one, or the controller's decision (0 if it has none).
fn lengths(c: &mut Controller, load: &LaneLoad, ids: impl Iterator<Item = u64>, fixed: Option<u8>) -> Vec<u8> {
    let dec: Vec<Decision> = if fixed.is_some() { Vec::new() } else { c.decide(load).to_vec() };
    ids.map(|id| fixed.unwrap_or_else(|| dec.iter().find(|d| d.id == id).map_or(0, |d| d.l))).collect()
}

/// Drafts accepted of `l`, each independently with probability `alpha` until the first miss;
/// the controller is told.
fn accept(c: &mut Controller, rng: &mut ChaCha8Rng, id: u64, alpha: f64, l: u8) -> u8 {
    let acc = (0..l).take_while(|_| rng.random::<f64>() < alpha).count() as u8;
    c.observe_acceptance(id, l, acc).expect("tracked");
    acc
}

/// Gamma(k, 1) by Marsaglia and Tsang (2000), for k ≥ 1.
fn gamma(rng: &mut ChaCha8Rng, k: f64) -> f64 {
    let d = k - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = std_normal(rng);
        let v = (1.0 + c * x).powi(3);
        if v > 0.0 && rng.random::<f64>().ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

/// Beta with mean 0.7 and standard deviation 0.15.
fn alpha(rng: &mut ChaCha8Rng) -> f64 {
    let (m, sd) = (0.7, 0.15);
    let n = m * (1.0 - m) / (sd * sd) - 1.0;
    let (a, b) = (gamma(rng, m * n), gamma(rng, (1.0 - m) * n));
    a / (a + b)
}

fn main() {
    let (mut beside, mut fixed, mut n) = (false, None::<u8>, 39usize);
    let (mut rate, mut ride) = (None::<f64>, 256usize);
    let mut args = std::env::args().skip(1);
    let usage = || -> ! {
        eprintln!("usage: round_sim [--beside] [--fixed L (0..=4)] [requests]\n       round_sim [--fixed L] --rate REQ_PER_S [--ride TOKENS]");
        std::process::exit(2)
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--beside" => beside = true,
            "--fixed" => fixed = args.next().and_then(|l| l.parse().ok()).filter(|&l| l <= 4),
            "--rate" => rate = Some(args.next().and_then(|r| r.parse().ok()).filter(|&r: &f64| r > 0.0).unwrap_or_else(|| usage())),
            "--ride" => ride = args.next().and_then(|r| r.parse().ok()).filter(|&r| r > 0).unwrap_or_else(|| usage()),
            other => match other.parse() {
                Ok(k) if k > 0 => n = k,
                _ => usage(),
            },
        }
    }
    if let Some(rate) = rate {
        open_system(rate, ride, fixed);
        return;
    }
    let cfg = ControllerConfig { l_max: 4, plain_beside: beside, ..Default::default() };
    let mut c = Controller::new(cfg, PRIOR).expect("valid controller");
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    // (id, α, tokens, start)
    let mut reqs: Vec<(u64, f64, usize, f64)> = Vec::new();
    let mut next = 0u64;
    for _ in 0..n {
        c.add_request(next).expect("new id");
        reqs.push((next, alpha(&mut rng), 0, 0.0));
        next += 1;
    }
    let (mut now, mut rounds, mut hist, mut tpots) = (0.0, 0u64, [0u64; 5], Vec::new());
    while tpots.len() < 3000 {
        let load = LaneLoad { verify_queue_tokens: 0, prefill_chunk_tokens: RIDE_TOKENS as u32, verify_busy: BUSY };
        let ls = lengths(&mut c, &load, reqs.iter().map(|r| r.0), fixed);
        let draft = draft_phase_s(&ls);
        let n0 = ls.iter().filter(|&&l| l == 0).count();
        let two = beside && n0 > 0 && n0 < n;
        // Gathered, the drafts run alone on the GPU (the riding prefill waits for the verify
        // forward): κ = 1, whatever the controller assumes; beside a plain forward, κ = 1.5.
        let phase = if two { (1.5 * draft).max(verify_s(n0 as f64, n0 as f64)) } else { draft };
        let tokens: f64 = ls.iter().map(|&l| f64::from(l) + 1.0).sum::<f64>() + RIDE_TOKENS;
        now += phase + verify_s(tokens, n as f64);
        rounds += 1;
        for (r, &l) in reqs.iter_mut().zip(&ls) {
            hist[l as usize] += 1;
            let acc = accept(&mut c, &mut rng, r.0, r.1, l);
            r.2 += usize::from(acc) + 1 + usize::from(two && l == 0);
        }
        for r in &mut reqs {
            if r.2 >= OUTPUT_TOKENS {
                if rounds > 200 {
                    tpots.push((now - r.3) / r.2 as f64 * 1e3);
                }
                c.remove_request(r.0);
                c.add_request(next).expect("new id");
                *r = (next, alpha(&mut rng), 0, now);
                next += 1;
            }
        }
    }
    tpots.sort_by(f64::total_cmp);
    let q = |p: f64| tpots[((tpots.len() - 1) as f64 * p) as usize];
    let policy = match (fixed, beside) {
        (Some(l), _) => format!("fixed L = {l}"),
        (None, true) => "adaptive, plain beside drafts".into(),
        (None, false) => "adaptive".into(),
    };
    println!("{policy}, {n} requests: TPOT p50 {:.2} p99 {:.2} ms, round {:.2} ms, L histogram {hist:?}", q(0.5), q(0.99), now / rounds as f64 * 1e3);
}

/// A request of the open system: arrival, prompt tokens not yet prefilled, output length,
/// acceptance, first-token time and tokens so far once decoding.
struct OpenReq {
    id: u64,
    arrive: f64,
    prompt_left: usize,
    out: usize,
    alpha: f64,
    first: f64,
    tokens: usize,
}

/// Poisson arrivals, riding prefill and gathered rounds (module header): TTFT and TPOT
/// percentiles for the controller or a fixed L.
fn open_system(rate: f64, ride: usize, fixed: Option<u8>) {
    const REQUESTS: u64 = 6000;
    const WARM_UP: u64 = 500;
    let cfg = ControllerConfig { l_max: 4, ..Default::default() };
    let mut c = Controller::new(cfg, PRIOR).expect("valid controller");
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut arrivals = 0.0f64;
    let mut next = 0u64;
    let mut new_req = |rng: &mut ChaCha8Rng| {
        arrivals += -(1.0 - rng.random::<f64>()).ln() / rate;
        // Log-normal prompt length: median e^4.2 ≈ 67, σ 1.
        let prompt = ((4.2 + std_normal(rng)).exp() as usize).clamp(4, 1024);
        let out = if rng.random::<f64>() < 0.8 { 128 } else { rng.random_range(4..128) };
        next += 1;
        OpenReq { id: next - 1, arrive: arrivals, prompt_left: prompt, out, alpha: alpha(rng), first: 0.0, tokens: 0 }
    };
    let mut pending = new_req(&mut rng);
    let (mut waiting, mut decoding): (Vec<OpenReq>, Vec<OpenReq>) = (Vec::new(), Vec::new());
    let (mut now, mut rounds, mut busy_rounds, mut in_flight) = (0.0f64, 0u64, 0.0f64, 0.0f64);
    let (mut ttfts, mut tpots, mut done) = (Vec::new(), Vec::new(), 0u64);
    while done < REQUESTS {
        while pending.arrive <= now {
            waiting.push(std::mem::replace(&mut pending, new_req(&mut rng)));
        }
        if waiting.is_empty() && decoding.is_empty() {
            now = pending.arrive;
            continue;
        }
        let backlog: usize = waiting.iter().map(|r| r.prompt_left).sum();
        let rode = backlog.min(ride);
        let load = LaneLoad { verify_queue_tokens: 0, prefill_chunk_tokens: rode as u32, verify_busy: BUSY };
        let ls = if decoding.is_empty() { Vec::new() } else { lengths(&mut c, &load, decoding.iter().map(|r| r.id), fixed) };
        let tokens = ls.iter().map(|&l| f64::from(l) + 1.0).sum::<f64>() + rode as f64;
        now += draft_phase_s(&ls) + verify_s(tokens, decoding.len() as f64);
        rounds += 1;
        busy_rounds += decoding.len() as f64;
        in_flight += (decoding.len() + waiting.len()) as f64;
        for (r, &l) in decoding.iter_mut().zip(&ls) {
            r.tokens += usize::from(accept(&mut c, &mut rng, r.id, r.alpha, l)) + 1;
        }
        decoding.retain(|r| {
            if r.tokens < r.out {
                return true;
            }
            c.remove_request(r.id);
            done += 1;
            if r.id >= WARM_UP && r.id < REQUESTS {
                tpots.push((now - r.first) / (r.out - 1) as f64 * 1e3);
            }
            false
        });
        // The ride, oldest prompt first; a finished prompt's forward gives its first token.
        let mut left = rode;
        for r in waiting.iter_mut() {
            let take = r.prompt_left.min(left);
            r.prompt_left -= take;
            left -= take;
            if left == 0 {
                break;
            }
        }
        let (started, still): (Vec<OpenReq>, Vec<OpenReq>) = waiting.drain(..).partition(|r| r.prompt_left == 0);
        waiting = still;
        for mut r in started {
            r.first = now;
            r.tokens = 1;
            if r.id >= WARM_UP && r.id < REQUESTS {
                ttfts.push((now - r.arrive) * 1e3);
            }
            c.add_request(r.id).expect("new id");
            decoding.push(r);
        }
    }
    ttfts.sort_by(f64::total_cmp);
    tpots.sort_by(f64::total_cmp);
    let q = |v: &[f64], p: f64| v[((v.len() - 1) as f64 * p) as usize];
    let policy = fixed.map_or("adaptive".to_string(), |l| format!("fixed L = {l}"));
    println!(
        "{policy}, {rate} req/s, ride {ride}: TTFT p50 {:.1} p99 {:.1} ms, TPOT p50 {:.2} p99 {:.2} ms, round {:.2} ms, decoding {:.1}, in flight {:.1}",
        q(&ttfts, 0.5),
        q(&ttfts, 0.99),
        q(&tpots, 0.5),
        q(&tpots, 0.99),
        now / rounds as f64 * 1e3,
        busy_rounds / rounds as f64,
        in_flight / rounds as f64
    );
}
