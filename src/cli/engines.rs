//! Which backend runs the target and the drafter (`--backend cpu|cuda`), and what the models
//! are: a file or checkpoint (`PATH`), or random weights at a real shape drawn on the GPU
//! (`random:llama3-8b`, `random:llama3.2-1b`; with `--acceptance synthetic:...` these give
//! real-shape performance runs without downloading weights).
use std::path::Path;
use std::sync::Arc;

use clap::ValueEnum;
use vpd_formats::tokenizer::Tokenizer;
use vpd_formats::LlamaConfig;

use crate::backend::cpu::CpuBackend;
use crate::engine::{Engine, GenerateRequest};
use crate::error::{EngineError, Result};
use crate::make_model::Preset;
use crate::model::Model;
use crate::runtime::{run_workload, RunOutput, RuntimeConfig};
use crate::spec::factory::cpu_drafter;
use crate::spec::{DraftSpec, Drafter};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    Cpu,
    Cuda,
}

/// A target model: loaded from a path, or random at a preset shape.
pub enum ModelSource {
    Loaded(Box<Model>),
    Random(Preset),
}

fn bad(field: &'static str, detail: impl ToString) -> EngineError {
    EngineError::InvalidRequest { field, detail: detail.to_string() }
}

fn preset(name: &str, field: &'static str) -> Result<Preset> {
    Preset::from_str(name, true).map_err(|_| {
        bad(field, format!("unknown preset `{name}`; use random:llama3-8b, random:llama3.2-1b or random:tiny-llama3"))
    })
}

impl ModelSource {
    /// `random:PRESET` or a path.
    ///
    /// # Errors
    /// An unknown preset, or a model that fails to load.
    pub fn open(spec: &Path) -> Result<Self> {
        match spec.to_str().and_then(|s| s.strip_prefix("random:")) {
            Some(name) => Ok(Self::Random(preset(name, "model")?)),
            None => Ok(Self::Loaded(Box::new(Model::load(spec)?))),
        }
    }

    pub fn config(&self) -> LlamaConfig {
        match self {
            Self::Loaded(m) => m.config.clone(),
            Self::Random(p) => p.config(),
        }
    }

    /// The model's tokenizer, or (random weights have none) the one at `fallback`.
    ///
    /// # Errors
    /// Neither has a tokenizer.
    pub fn tokenizer(&self, fallback: &Path) -> Result<Tokenizer> {
        if let Self::Loaded(m) = self {
            if let Some(t) = &m.tokenizer {
                return Ok(t.clone());
            }
        }
        crate::model::load_tokenizer(fallback)?.ok_or_else(|| EngineError::Model {
            path: fallback.display().to_string(),
            detail: "has no tokenizer (random-weight models borrow this one for prompt lengths)".into(),
        })
    }

    pub fn name(&self, spec: &Path) -> String {
        spec.file_name().map_or_else(|| spec.display().to_string(), |n| n.to_string_lossy().into_owned())
    }
}

/// A drafter choice: a CPU-style spec, or random weights at a preset shape (GPU only).
pub enum DraftChoice {
    Spec(DraftSpec),
    // Read only by the CUDA builder.
    #[cfg_attr(not(all(feature = "cuda", vpd_kernels)), allow(dead_code))]
    Random(Preset),
}

impl DraftChoice {
    /// # Errors
    /// A malformed drafter string.
    pub fn parse(s: &str) -> Result<Self> {
        match s.strip_prefix("random:") {
            Some(name) => Ok(Self::Random(preset(name, "draft")?)),
            None => Ok(Self::Spec(s.parse()?)),
        }
    }
}

/// Which lane gets a green-context SM partition on the GPU (`--decode-sms`, `--prefill-sms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SmPartition {
    /// Every lane on the whole GPU, each on a stream of its lane's priority.
    #[default]
    None,
    /// The drafter on this many SMs, the target (verify and prefill) on the rest.
    Decode(u32),
    /// Decode and verify on the whole GPU; prefill chunks confined to this many SMs while
    /// they have work (`lanes::Lanes::confined_prefill`).
    Prefill(u32),
}

impl SmPartition {
    /// From `--decode-sms` and `--prefill-sms`, at most one of them.
    ///
    /// # Errors
    /// Both given.
    pub fn from_flags(decode_sms: Option<u32>, prefill_sms: Option<u32>) -> Result<Self> {
        match (decode_sms, prefill_sms) {
            (Some(_), Some(_)) => Err(bad("prefill_sms", "give --decode-sms or --prefill-sms, not both")),
            (Some(n), None) => Ok(Self::Decode(n)),
            (None, Some(n)) => Ok(Self::Prefill(n)),
            (None, None) => Ok(Self::None),
        }
    }

    /// The flag's field name, when a partition is asked for.
    fn field(self) -> Option<&'static str> {
        match self {
            Self::None => None,
            Self::Decode(_) => Some("decode_sms"),
            Self::Prefill(_) => Some("prefill_sms"),
        }
    }
}

/// What one benchmark run is built from.
pub struct RunSetup<'a> {
    pub kind: BackendKind,
    pub target: &'a ModelSource,
    /// `None` for `nospec`.
    pub draft: Option<&'a DraftChoice>,
    /// Target KV-cache blocks.
    pub blocks: usize,
    pub block_size: usize,
    /// GPU only: which lane, if any, gets a green-context SM partition.
    pub partition: SmPartition,
    /// GPU only: replay decode steps from CUDA graphs (`CudaBackend::set_decode_graphs`).
    pub decode_graphs: bool,
}

/// Builds a fresh target engine (and drafter) for one run and runs `requests` through the
/// runtime on it.
///
/// # Errors
/// Backend construction (no driver, too little memory, a bad partition size, ...) or the
/// run's own errors.
/// Whether decode steps replay from CUDA graphs: `--cuda-graphs` as given, or by default on
/// with `--backend cuda` and off on the CPU.
///
/// # Errors
/// `--cuda-graphs` (true) with `--backend cpu`.
pub fn decode_graphs(kind: BackendKind, asked: Option<bool>) -> Result<bool> {
    match (kind, asked) {
        (BackendKind::Cpu, Some(true)) => Err(bad("cuda_graphs", "CUDA graphs need --backend cuda")),
        (BackendKind::Cpu, _) => Ok(false),
        (BackendKind::Cuda, asked) => Ok(asked.unwrap_or(true)),
    }
}

/// Whether the three-lane policies run prefill chunks on the prefill lane's own thread:
/// `--prefill-thread` as given, or by default only with `--backend cuda` and `--prefill-sms`
/// (whose partition is that thread's). Otherwise the chunks ride in the verify forwards
/// ([`prefill_ride`]): on an H100 at 128 running requests and 40 req/s that gave p50 / p99
/// TPOT 8.3 / 15.4 ms against 10.6 / 21.6 ms with the thread (docs/perf.md, "Where the TPOT
/// tail comes from"). On the CPU the thread's executors share one cache lock and take turns.
pub fn prefill_thread(kind: BackendKind, asked: Option<bool>, prefill_sms: Option<u32>) -> bool {
    asked.unwrap_or(kind == BackendKind::Cuda && prefill_sms.is_some())
}

/// Prompt tokens riding in each decode or verify forward of the three-lane policies:
/// `--prefill-ride` as given, or by default the prefill budget without the prefill thread (as
/// single-lane mixes its chunks) and none with it (the thread runs them).
pub fn prefill_ride(asked: Option<usize>, thread: bool, budget: usize) -> usize {
    asked.unwrap_or(if thread { 0 } else { budget })
}

pub fn run_once(
    setup: &RunSetup<'_>,
    cfg: &RuntimeConfig,
    requests: Vec<GenerateRequest>,
    times: &[f64],
    on_done: &mut dyn FnMut(),
) -> Result<RunOutput> {
    let RunSetup { kind, target, draft, blocks, block_size, partition, decode_graphs } = *setup;
    let draft_blocks = blocks * 2 + cfg.max_running;
    if let (Some(field), BackendKind::Cpu) = (partition.field(), kind) {
        return Err(bad(field, "SM partitions need --backend cuda"));
    }
    if decode_graphs && kind == BackendKind::Cpu {
        return Err(bad("cuda_graphs", "CUDA graphs need --backend cuda"));
    }
    match kind {
        BackendKind::Cpu => {
            let ModelSource::Loaded(model) = target else {
                return Err(bad("model", "random: models are drawn on the GPU: use --backend cuda"));
            };
            let mut engine = Engine::new(CpuBackend::new(model.config.clone(), Arc::clone(&model.weights), blocks, block_size)?)?;
            let mut drafter = match draft {
                None => None,
                Some(DraftChoice::Spec(d)) => Some(cpu_drafter(d, model, draft_blocks, block_size)?),
                Some(DraftChoice::Random(_)) => {
                    return Err(bad("draft", "random: drafters are drawn on the GPU: use --backend cuda"))
                }
            };
            let d = drafter.as_deref_mut().map(|d| d as &mut dyn Drafter);
            run_workload(&mut engine, d, cfg, requests, times, on_done)
        }
        BackendKind::Cuda => cuda::run_once(setup, draft_blocks, cfg, requests, times, on_done),
    }
}

/// `vpd generate --backend cuda`: plain or speculative generation with target and drafter
/// on GPU 0. Errors: no GPU or driver, too little memory, or the generation's own errors.
pub use cuda::generate as generate_cuda;

#[cfg(all(feature = "cuda", vpd_kernels))]
mod cuda {
    use super::*;
    use crate::backend::cuda::lanes::{Lane, Lanes};
    use crate::backend::cuda::CudaBackend;
    use crate::spec::model_drafter::ModelDrafter;
    use crate::spec::ngram::NgramDrafter;

    /// Seed of the random weights: fixed, so runs compare identical models.
    const SEED: u64 = 7;

    fn backend(source: &ModelSource, blocks: usize, block_size: usize) -> Result<CudaBackend> {
        match source {
            ModelSource::Loaded(m) => CudaBackend::new(m.config.clone(), Arc::clone(&m.weights), blocks, block_size, 0),
            ModelSource::Random(p) => CudaBackend::random(p.config(), blocks, block_size, 0, SEED),
        }
    }

    /// A drafter on GPU 0. `target_copy(blocks)` builds another copy of the target (the
    /// layer-skip drafter's own cache needs its own backend); model drafters are bound to
    /// `lane` when one is given.
    fn drafter(
        choice: &DraftChoice,
        target_vocab: usize,
        target_copy: &dyn Fn(usize) -> Result<CudaBackend>,
        blocks: usize,
        block_size: usize,
        lane: Option<&Arc<Lane>>,
        decode_graphs: bool,
    ) -> Result<Box<dyn Drafter>> {
        let on_lane = |mut b: CudaBackend| -> Result<CudaBackend> {
            if let Some(l) = lane {
                b.bind_lane(l)?;
            }
            b.set_decode_graphs(decode_graphs);
            Ok(b)
        };
        Ok(match choice {
            DraftChoice::Spec(DraftSpec::Ngram(n)) => Box::new(NgramDrafter::new(*n)),
            DraftChoice::Spec(DraftSpec::LayerSkip(k)) => {
                Box::new(ModelDrafter::new(format!("layer-skip:{k}"), on_lane(target_copy(blocks)?)?, *k)?)
            }
            DraftChoice::Spec(DraftSpec::Model(path)) => {
                let m = Model::load(path)?;
                let layers = m.config.num_hidden_layers;
                let b = CudaBackend::new(m.config.clone(), Arc::clone(&m.weights), blocks, block_size, 0)?;
                Box::new(ModelDrafter::new(format!("model:{}", path.display()), on_lane(b)?, layers)?)
            }
            DraftChoice::Random(p) => {
                if p.config().vocab_size != target_vocab {
                    return Err(bad("draft", "the random drafter's vocabulary differs from the target's"));
                }
                let b = CudaBackend::random(p.config(), blocks, block_size, 0, SEED + 1)?;
                let layers = p.config().num_hidden_layers;
                Box::new(ModelDrafter::new(format!("random:{p:?}"), on_lane(b)?, layers)?)
            }
        })
    }

    pub fn generate(
        model: &Model,
        spec: Option<&(DraftSpec, crate::spec::SpecOptions)>,
        req: &GenerateRequest,
        tokens: usize,
        trace: Option<&Path>,
    ) -> Result<crate::engine::GenerateOutput> {
        let bs = super::super::generate::BLOCK_SIZE;
        let blocks = (tokens.min(model.config.max_position_embeddings) + 1).div_ceil(bs);
        let copy = |blocks| CudaBackend::new(model.config.clone(), Arc::clone(&model.weights), blocks, bs, 0);
        let mut engine = Engine::new(copy(blocks)?)?;
        let Some((draft, opts)) = spec else {
            return engine.generate(req);
        };
        let tree_blocks = opts.tree.map_or(0, |t| t.budget).div_ceil(bs) + 1;
        let choice = DraftChoice::Spec(draft.clone());
        let d = drafter(&choice, model.config.vocab_size, &copy, blocks + tree_blocks, bs, None, false)?;
        let mut se = crate::spec::SpecEngine::new(engine, d, *opts)?;
        if let Some(p) = trace {
            se.set_trace(crate::spec::TraceWriter::create(p)?);
        }
        se.generate(req)
    }

    /// The target engine and its drafter, if any.
    type CudaParts = (Engine<CudaBackend>, Option<Box<dyn Drafter>>);

    /// The target engine and the drafter on GPU 0, on the three lanes' streams: the drafter on
    /// the decode lane (highest priority), the target on the verify lane, and executors the
    /// runtime forks from the target on the prefill lane (lowest). With `decode_sms`, the decode
    /// lane is a green-context partition of that many SMs and verify and prefill share the
    /// rest; the backends keep the lanes alive. With `decode_graphs`, both replay their decode
    /// steps from CUDA graphs.
    pub fn parts(
        target: &ModelSource,
        draft: Option<&DraftChoice>,
        blocks: usize,
        draft_blocks: usize,
        block_size: usize,
        partition: SmPartition,
        decode_graphs: bool,
    ) -> Result<CudaParts> {
        let mut target_backend = backend(target, blocks, block_size)?;
        target_backend.set_decode_graphs(decode_graphs);
        let dev = target_backend.device();
        let lanes = match partition {
            SmPartition::Decode(n) => Lanes::new(dev, n)?,
            SmPartition::Prefill(n) => Lanes::confined_prefill(dev, n)?,
            SmPartition::None => Lanes::streams(dev, "no partition asked for: every lane on the whole GPU")?,
        };
        tracing::info!("lanes: {:?}", lanes.isolation);
        target_backend.bind_lane(&lanes.verify)?;
        // The runtime's prefill lane forks its executor from the target (`prefill_thread`).
        target_backend.set_fork_lanes(&lanes);
        let engine = Engine::new(target_backend)?;
        let copy = |blocks| backend(target, blocks, block_size);
        let vocab = target.config().vocab_size;
        let drafter = draft
            .map(|d| drafter(d, vocab, &copy, draft_blocks, block_size, Some(&lanes.decode), decode_graphs))
            .transpose()?;
        Ok((engine, drafter))
    }

    pub fn run_once(
        setup: &RunSetup<'_>,
        draft_blocks: usize,
        cfg: &RuntimeConfig,
        requests: Vec<GenerateRequest>,
        times: &[f64],
        on_done: &mut dyn FnMut(),
    ) -> Result<RunOutput> {
        let RunSetup { target, draft, blocks, block_size, partition, decode_graphs, .. } = *setup;
        let (mut engine, mut drafter) =
            parts(target, draft, blocks, draft_blocks, block_size, partition, decode_graphs)?;
        let d = drafter.as_deref_mut().map(|d| d as &mut dyn Drafter);
        run_workload(&mut engine, d, cfg, requests, times, on_done)
    }
}

/// The CUDA target engine and drafter, as `vpd bench --backend cuda` builds them (for
/// `vpd serve --backend cuda`, on the serving thread).
#[cfg(all(feature = "cuda", vpd_kernels))]
pub use cuda::parts as cuda_parts;

/// The GPU's name for reports.
pub fn gpu_name() -> String {
    #[cfg(all(feature = "cuda", vpd_kernels))]
    if let Ok(d) = crate::backend::cuda::Device::open(0) {
        return format!("{} ({} SMs)", d.name, d.sm_count);
    }
    "cuda (device not opened)".into()
}

#[cfg(not(all(feature = "cuda", vpd_kernels)))]
mod cuda {
    use super::*;

    pub fn generate(
        _: &Model,
        _: Option<&(DraftSpec, crate::spec::SpecOptions)>,
        _: &GenerateRequest,
        _: usize,
        _: Option<&Path>,
    ) -> Result<crate::engine::GenerateOutput> {
        Err(bad("backend", "this binary was built without the `cuda` feature"))
    }

    pub fn run_once(
        _: &RunSetup<'_>,
        _: usize,
        _: &RuntimeConfig,
        _: Vec<GenerateRequest>,
        _: &[f64],
        _: &mut dyn FnMut(),
    ) -> Result<RunOutput> {
        Err(bad("backend", "this binary was built without the `cuda` feature"))
    }
}


#[cfg(test)]
mod tests {
    use super::{decode_graphs, prefill_ride, prefill_thread, BackendKind};

    /// Prefill rides in the verify forwards unless the thread is asked for, directly or by
    /// confining it to SMs on the GPU; the ride is the prefill budget unless given.
    #[test]
    fn prefill_rides_by_default_and_the_thread_comes_when_asked() {
        for kind in [BackendKind::Cpu, BackendKind::Cuda] {
            assert!(!prefill_thread(kind, None, None));
            assert!(prefill_thread(kind, Some(true), None));
            assert!(!prefill_thread(kind, Some(false), Some(32)));
        }
        assert!(prefill_thread(BackendKind::Cuda, None, Some(32)));
        assert_eq!(prefill_ride(None, false, 256), 256);
        assert_eq!(prefill_ride(None, true, 256), 0);
        assert_eq!(prefill_ride(Some(64), false, 256), 64);
        assert_eq!(prefill_ride(Some(0), false, 256), 0);
    }

    #[test]
    fn decode_graphs_default_on_for_cuda_off_for_cpu_and_refused_on_cpu_when_asked() {
        assert!(decode_graphs(BackendKind::Cuda, None).unwrap());
        assert!(!decode_graphs(BackendKind::Cuda, Some(false)).unwrap());
        assert!(decode_graphs(BackendKind::Cuda, Some(true)).unwrap());
        assert!(!decode_graphs(BackendKind::Cpu, None).unwrap());
        assert!(!decode_graphs(BackendKind::Cpu, Some(false)).unwrap());
        let e = decode_graphs(BackendKind::Cpu, Some(true)).unwrap_err().to_string();
        assert!(e.contains("cuda_graphs"), "{e}");
    }
}
