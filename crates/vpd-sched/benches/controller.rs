//! Host scheduling cost: one controller decision over 256 concurrent requests (target < 50 µs),
//! plus the cost of feeding back their 256 acceptance outcomes.
use criterion::{criterion_group, criterion_main, Criterion};
use vpd_sched::{Controller, ControllerConfig, CostPrior, LaneLoad};

fn controller(c: &mut Criterion) {
    for n in [32u64, 256] {
        let mut ctl = Controller::new(ControllerConfig::default(), CostPrior::default()).unwrap();
        for id in 0..n {
            ctl.add_request(id).unwrap();
        }
        // Spread the estimates so requests land on different tiers.
        for id in 0..n {
            for k in 0..8u8 {
                ctl.observe_acceptance(id, 4, ((id as u8).wrapping_add(k)) % 5).unwrap();
            }
        }
        let load = LaneLoad {
            verify_queue_tokens: 64,
            prefill_chunk_tokens: 128,
            verify_busy: 0.5,
        };
        c.bench_function(&format!("cpu_controller_decide_{n}_requests"), |b| {
            b.iter(|| std::hint::black_box(ctl.decide(std::hint::black_box(&load)).len()))
        });
        c.bench_function(&format!("cpu_controller_step_{n}_requests"), |b| {
            let mut k = 0u8;
            b.iter(|| {
                k = k.wrapping_add(1);
                for id in 0..n {
                    ctl.observe_acceptance(id, 4, (k.wrapping_add(id as u8)) % 5).unwrap();
                }
                ctl.observe_verify_step(n as usize * 3, n as usize, 7e-3);
                std::hint::black_box(ctl.decide(&load).len())
            })
        });
    }
}

criterion_group!(benches, controller);
criterion_main!(benches);
