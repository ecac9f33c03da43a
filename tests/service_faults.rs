//! The service keeps serving through an engine fault: the requests in flight when a forward
//! fails end with an explicit error event (never silently), their blocks are freed, the
//! fault is counted, and the next request is served normally.
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use verify_pd::backend::cpu::CpuBackend;
use verify_pd::backend::{Backend, Logits, StepPlan};
use verify_pd::engine::{Engine, GenerateRequest};
use verify_pd::error::{EngineError, Result};
use verify_pd::model::Model;
use verify_pd::runtime::events::Event;
use verify_pd::runtime::{Policy, RuntimeConfig, Service, ServiceConfig};
use vpd_formats::LlamaConfig;

/// The CPU backend, failing its `fail_at`-th forward.
struct Faulty {
    inner: CpuBackend,
    calls: Arc<AtomicUsize>,
    fail_at: usize,
}

impl Backend for Faulty {
    fn config(&self) -> &LlamaConfig {
        self.inner.config()
    }
    fn kv_geometry(&self) -> (usize, usize) {
        self.inner.kv_geometry()
    }
    fn forward_layers(&mut self, plan: &StepPlan, num_layers: usize) -> Result<Logits> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == self.fail_at {
            return Err(EngineError::Backend("injected fault".into()));
        }
        self.inner.forward_layers(plan, num_layers)
    }
    fn copy_blocks(&mut self, pairs: &[(u32, u32)]) -> Result<()> {
        self.inner.copy_blocks(pairs)
    }
    fn move_slots(&mut self, block_table: &[u32], moves: &[(usize, usize)]) -> Result<()> {
        self.inner.move_slots(block_table, moves)
    }
}

fn request(max: usize) -> GenerateRequest {
    GenerateRequest {
        prompt_ids: vec![256, 5, 6, 7],
        max_new_tokens: max,
        sampling: vpd_sampling::SamplingParams::greedy(),
        ignore_eos: true,
    }
}

fn drain(mut s: verify_pd::runtime::events::EventStream) -> Vec<Event> {
    let mut out = Vec::new();
    while let Some(e) = s.blocking_recv() {
        out.push(e);
    }
    out
}

#[test]
fn an_engine_fault_fails_the_requests_in_flight_with_an_error_and_serving_goes_on() {
    let model = Model::load(&common::fixture("tiny-llama3")).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let cfg = ServiceConfig {
        runtime: RuntimeConfig::new(Policy::NoSpec, 0),
        max_waiting: 8,
    };
    let service = Service::spawn(cfg, move || {
        let inner = CpuBackend::new(model.config.clone(), Arc::clone(&model.weights), 64, 16)?;
        Ok((Engine::new(Faulty { inner, calls: c, fail_at: 5 })?, None))
    })
    .unwrap();
    let a = service.submit(request(30)).unwrap();
    let b = service.submit(request(30)).unwrap();
    let (ea, eb) = (drain(a), drain(b));
    for events in [&ea, &eb] {
        match events.last() {
            Some(Event::Failed(m)) => assert!(m.contains("injected fault"), "{m}"),
            other => panic!("expected an explicit failure, got {other:?}"),
        }
    }
    // The next request is served normally on the same engine.
    let ok = drain(service.submit(request(6)).unwrap());
    assert!(
        matches!(ok.last(), Some(Event::Finished { output_tokens: 6, .. })),
        "{ok:?}"
    );
    // Metrics are published after the step that sent the last event: wait for them.
    let mut m = service.metrics();
    for _ in 0..200 {
        if m.finished_length == 1 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        m = service.metrics();
    }
    assert_eq!(m.engine_faults, 1);
    assert_eq!((m.kv_used_blocks, m.running), (0, 0));
    assert_eq!(m.aborted, 2);
}
