//! `vpd serve`: the OpenAI-compatible server over the runtime (see [`crate::server`]).
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::engines::{BackendKind, ModelSource, SmPartition};
use super::generate::BLOCK_SIZE;
use crate::backend::cpu::CpuBackend;
use crate::engine::Engine;
use crate::error::{EngineError, Result};
use crate::model::Model;
use crate::runtime::{Policy, RuntimeConfig, Service, ServiceConfig};
use crate::server::{serve, AppState, ModelLimits};
use crate::spec::factory::cpu_drafter;
use crate::spec::DraftSpec;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Target model: a GGUF file or a Hugging Face checkpoint directory.
    #[arg(long, default_value = "assets/SmolLM2-135M-Instruct.Q4_1.gguf")]
    pub model: PathBuf,
    /// Where the target and the drafter run: the CPU, or GPU 0 (needs an NVIDIA driver).
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: BackendKind,
    /// Drafter: layer-skip:K, model:PATH or ngram:N (none: no speculation).
    #[arg(long)]
    pub draft: Option<String>,
    /// nospec, single-lane, three-lane or three-lane-adaptive (default: three-lane-adaptive
    /// with a drafter, nospec without).
    #[arg(long)]
    pub policy: Option<String>,
    /// L for the fixed-L policies, Lmax for three-lane-adaptive.
    #[arg(long, default_value_t = 4)]
    pub num_draft: usize,
    /// three-lane-adaptive: what the choice of L maximises, goodput, tpot or tail (as `vpd bench`).
    #[arg(long, default_value = "tail", value_name = "goodput|tpot|tail")]
    pub controller_objective: vpd_sched::Objective,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port (0 picks a free one; the address is printed).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// The name clients use in `model` (default: the model file's stem).
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Longest prompt plus output, in tokens (capped at the model's own limit).
    #[arg(long, default_value_t = 2048)]
    pub max_model_len: usize,
    /// Requests holding KV cache at once.
    #[arg(long, default_value_t = 16)]
    pub max_running: usize,
    /// Requests that may wait for admission; one more gets 429.
    #[arg(long, default_value_t = 64)]
    pub max_waiting: usize,
    /// KV-cache size in tokens, shared by the running requests.
    #[arg(long, default_value_t = 16384)]
    pub kv_tokens: usize,
    /// Prompt tokens per prefill step, over all prefilling requests.
    #[arg(long, default_value_t = 256)]
    pub prefill_budget: usize,
    /// With --backend cuda: replay decode steps (target and drafter) from CUDA graphs captured
    /// per shape. On by default there; `--cuda-graphs false` turns them off.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub cuda_graphs: Option<bool>,
    /// Three-lane policies: run the target's prefill chunks on the prefill lane's own thread
    /// and executor. Off by default (they ride in the verify forwards), on with --backend cuda
    /// and --prefill-sms.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub prefill_thread: Option<bool>,
    /// Three-lane policies without the prefill thread: prompt tokens riding in each decode or
    /// verify forward (default: the prefill budget; 0: prefill in forwards of its own).
    #[arg(long)]
    pub prefill_ride: Option<usize>,
    /// With --backend cuda: confine the prefill lane's chunks to a green-context partition of
    /// this many SMs while decode and verify have work (see `vpd bench --help`).
    #[arg(long)]
    pub prefill_sms: Option<u32>,
    /// Three-lane policies: requests at L = 0 take a plain step of their own while the
    /// round's drafts run (see `vpd bench --help`).
    #[arg(long)]
    pub plain_beside_drafts: bool,
    /// Seconds to let admitted requests finish after SIGTERM before aborting them.
    #[arg(long, default_value_t = 30.0)]
    pub drain_timeout: f64,
}

fn bad(field: &'static str, detail: impl ToString) -> EngineError {
    EngineError::InvalidRequest {
        field,
        detail: detail.to_string(),
    }
}

pub fn run(a: ServeArgs) -> Result<()> {
    let policy = match (&a.policy, &a.draft) {
        (Some(p), _) => p.parse::<Policy>()?,
        (None, Some(_)) => Policy::ThreeLaneAdaptive,
        (None, None) => Policy::NoSpec,
    };
    let draft = match (&a.draft, policy.speculates()) {
        (Some(d), true) => Some(d.parse::<DraftSpec>()?),
        (None, true) => return Err(bad("draft", format!("policy {policy} needs --draft"))),
        (Some(_), false) => return Err(bad("draft", "is only used by a speculating policy, not nospec")),
        (None, false) => None,
    };
    let mut runtime = RuntimeConfig::new(policy, if policy.speculates() { a.num_draft } else { 0 });
    runtime.prefill_budget = a.prefill_budget;
    runtime.max_running = a.max_running;
    runtime.prefill_thread = super::engines::prefill_thread(a.backend, a.prefill_thread, a.prefill_sms);
    runtime.prefill_ride = super::engines::prefill_ride(a.prefill_ride, runtime.prefill_thread, a.prefill_budget);
    runtime.controller.objective = a.controller_objective;
    runtime.plain_beside_drafts = a.plain_beside_drafts;
    runtime.validate()?;
    if !(a.drain_timeout.is_finite() && a.drain_timeout >= 0.0) {
        return Err(bad("drain_timeout", format!("must be finite and >= 0, got {}", a.drain_timeout)));
    }
    if a.max_model_len < 2 {
        return Err(bad("max_model_len", "must be at least 2 tokens"));
    }
    let ModelSource::Loaded(model) = ModelSource::open(&a.model)? else {
        return Err(bad("model", "the server needs a checkpoint with a tokenizer, not random weights"));
    };
    let tokenizer = model.tokenizer.clone().ok_or_else(|| EngineError::Model {
        path: a.model.display().to_string(),
        detail: "has no tokenizer; the server needs one".into(),
    })?;
    let context = a.max_model_len.min(model.config.max_position_embeddings);
    let blocks = a.kv_tokens.div_ceil(BLOCK_SIZE);
    if blocks * BLOCK_SIZE < context {
        return Err(bad(
            "kv_tokens",
            format!("{} cannot hold even one request of max_model_len {context}", a.kv_tokens),
        ));
    }
    let name = a.served_model_name.clone().unwrap_or_else(|| {
        a.model
            .file_stem()
            .map_or_else(|| a.model.display().to_string(), |s| s.to_string_lossy().into_owned())
    });
    let limits = ModelLimits {
        name: name.clone(),
        vocab: model.config.vocab_size,
        context,
    };
    let cfg = ServiceConfig {
        runtime,
        max_waiting: a.max_waiting,
    };
    // The drafter's cache: room for every running request's context and its drafts.
    let draft_blocks = blocks * 2 + a.max_running;
    let graphs = super::engines::decode_graphs(a.backend, a.cuda_graphs)?;
    let partition = SmPartition::from_flags(None, a.prefill_sms)?;
    let service = match a.backend {
        BackendKind::Cpu if partition != SmPartition::None => {
            return Err(bad("prefill_sms", "SM partitions need --backend cuda"));
        }
        BackendKind::Cpu => {
            let m: Arc<Model> = Arc::from(model);
            Service::spawn(cfg, move || {
                let engine = Engine::new(CpuBackend::new(m.config.clone(), Arc::clone(&m.weights), blocks, BLOCK_SIZE)?)?;
                let drafter = draft.as_ref().map(|d| cpu_drafter(d, &m, draft_blocks, BLOCK_SIZE)).transpose()?;
                Ok((engine, drafter))
            })?
        }
        BackendKind::Cuda => spawn_cuda(cfg, ModelSource::Loaded(model), draft, blocks, draft_blocks, partition, graphs)?,
    };
    let state = Arc::new(AppState::new(Arc::new(service), Arc::new(tokenizer), limits));
    let backend = match a.backend {
        BackendKind::Cpu => "cpu",
        BackendKind::Cuda => "cuda",
    };
    let addr = SocketAddr::new(a.host, a.port);
    serve(state, addr, Duration::from_secs_f64(a.drain_timeout), |bound| {
        // The one line scripts wait for; stdout, flushed.
        println!("vpd serve: listening on http://{bound} (model `{name}`, {backend}, policy {policy}, max_model_len {context})");
    })?;
    eprintln!("vpd serve: stopped");
    Ok(())
}

/// The service with target and drafter on GPU 0, built on the serving thread as
/// `vpd bench --backend cuda` builds them.
#[cfg(all(feature = "cuda", vpd_kernels))]
fn spawn_cuda(
    cfg: ServiceConfig,
    target: ModelSource,
    draft: Option<DraftSpec>,
    blocks: usize,
    draft_blocks: usize,
    partition: SmPartition,
    graphs: bool,
) -> Result<Service> {
    Service::spawn(cfg, move || {
        let choice = draft.map(super::engines::DraftChoice::Spec);
        super::engines::cuda_parts(&target, choice.as_ref(), blocks, draft_blocks, BLOCK_SIZE, partition, graphs)
    })
}

#[cfg(not(all(feature = "cuda", vpd_kernels)))]
fn spawn_cuda(
    _: ServiceConfig,
    _: ModelSource,
    _: Option<DraftSpec>,
    _: usize,
    _: usize,
    _: SmPartition,
    _: bool,
) -> Result<Service> {
    Err(bad("backend", "this binary was built without the `cuda` feature"))
}
