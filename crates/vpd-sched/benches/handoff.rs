//! Lane hand-off latency through a `LaneQueue` between two threads (target p99 < 2 µs).
//!
//! Criterion times a round trip (push on A → pop on B → push back → pop on A) for the mean;
//! a separate pass stamps one-way hand-offs with `Instant` and prints p50/p99/p99.9, since
//! criterion reports no tail percentiles. Both threads spin: a lane thread polls its queue.
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use vpd_sched::LaneQueue;

fn spin_pop<T>(q: &LaneQueue<T>) -> T {
    loop {
        if let Some(v) = q.try_pop() {
            return v;
        }
        std::hint::spin_loop();
    }
}

fn spin_push<T>(q: &LaneQueue<T>, mut v: T) {
    while let Err(back) = q.try_push(v) {
        v = back;
        std::hint::spin_loop();
    }
}

fn one_way_percentiles(samples: usize) -> (Duration, Duration, Duration) {
    let there = Arc::new(LaneQueue::<Instant>::new(64).unwrap());
    let back = Arc::new(LaneQueue::<()>::new(64).unwrap());
    let (t2, b2) = (Arc::clone(&there), Arc::clone(&back));
    let h = thread::spawn(move || {
        let mut lat = Vec::with_capacity(samples);
        for _ in 0..samples {
            let sent = spin_pop(&t2);
            lat.push(sent.elapsed());
            spin_push(&b2, ());
        }
        lat
    });
    for _ in 0..samples {
        spin_push(&there, Instant::now());
        spin_pop(&back);
    }
    let mut lat = h.join().unwrap();
    lat.sort_unstable();
    let q = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize];
    (q(0.5), q(0.99), q(0.999))
}

fn handoff(c: &mut Criterion) {
    // `cargo test --all-targets` runs benches once as a smoke test: keep that quick.
    let measuring = std::env::args().any(|a| a == "--bench");
    let (p50, p99, p999) = one_way_percentiles(if measuring { 200_000 } else { 200 });
    if !measuring {
        println!("(test mode, unoptimised, 200 samples: not a measurement)");
    }
    println!("cpu_lane_handoff_one_way: p50 {p50:?}  p99 {p99:?}  p99.9 {p999:?}  (target p99 < 2 µs)");

    let a = Arc::new(LaneQueue::<u64>::new(64).unwrap());
    let b = Arc::new(LaneQueue::<u64>::new(64).unwrap());
    let (a2, b2) = (Arc::clone(&a), Arc::clone(&b));
    let echo = thread::spawn(move || loop {
        let v = spin_pop(&a2);
        if v == u64::MAX {
            break;
        }
        spin_push(&b2, v);
    });
    c.bench_function("cpu_lane_handoff_round_trip", |bench| {
        bench.iter(|| {
            spin_push(&a, 1);
            spin_pop(&b)
        })
    });
    spin_push(&a, u64::MAX);
    echo.join().unwrap();

    let q = LaneQueue::<u64>::new(64).unwrap();
    c.bench_function("cpu_lane_queue_push_pop_same_thread", |bench| {
        bench.iter(|| {
            q.try_push(std::hint::black_box(7)).unwrap();
            q.try_pop()
        })
    });
}

criterion_group!(benches, handoff);
criterion_main!(benches);
