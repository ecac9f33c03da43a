//! Speculative greedy output on the real SmolLM2-135M equals the greedy ids transformers
//! produced (and so plain greedy decoding), for every drafter, L in {1, 2, 4, 8}, chain and
//! tree, on the fixture prompts (tests/fixtures/smollm2/reference.json).
//!
//! Kept to three fixture prompts (short raw, one-token raw, and a chat prompt that stops on
//! EOS after 14 tokens) and 16 new tokens so the whole matrix (3 drafters × 5 shapes) runs
//! in CI on 2 cores; the 32-token equality of plain decoding on all ten prompts is in
//! reference_smollm2.rs, and every drafter and shape also runs on a random model in
//! speculative.rs.
mod common;

use std::sync::Arc;

use common::*;
use verify_pd::backend::cpu::CpuBackend;
use verify_pd::engine::{Engine, GenerateRequest};
use verify_pd::make_model::{with_vocabulary, write_random_checkpoint, Preset, WeightDType};
use verify_pd::model::Model;
use verify_pd::spec::factory::cpu_drafter;
use verify_pd::spec::{DraftSpec, SpecEngine, SpecOptions, TreeShape};
use vpd_sampling::SamplingParams;

const NEW_TOKENS: usize = 16;
const CASES: [&str; 3] = ["raw-1", "raw-4", "chat-0"];

#[test]
fn every_drafter_reproduces_transformers_greedy_ids() {
    let target = Model::load(&smollm2_path()).expect("load SmolLM2");
    // A random two-layer drafter sharing SmolLM2's tokenizer: near-zero acceptance.
    let dd = tempfile::tempdir().expect("tempdir");
    let tok = target.tokenizer.as_ref().expect("tokenizer");
    let cfg = with_vocabulary(&Preset::TinyLlama3.config(), tok);
    write_random_checkpoint(&cfg, WeightDType::F32, 11, dd.path(), Some(tok), &mut |_, _| {}).expect("write drafter");
    let fx = read_json("smollm2/reference.json");
    let cases = fx["cases"].as_array().expect("cases");
    let drafters = [DraftSpec::LayerSkip(6), DraftSpec::Ngram(2), DraftSpec::Model(dd.path().to_path_buf())];
    let configs: Vec<SpecOptions> = [1, 2, 4, 8]
        .into_iter()
        .map(|l| SpecOptions { num_draft: l, tree: None })
        .chain([SpecOptions { num_draft: 4, tree: Some(TreeShape::parse("2,3", 16).expect("shape")) }])
        .collect();
    for case in cases.iter().filter(|c| CASES.contains(&c["name"].as_str().unwrap_or(""))) {
        let prompt = ids(&case["prompt_ids"]);
        let want: Vec<u32> = ids(&case["greedy_ids"]).into_iter().take(NEW_TOKENS).collect();
        let req = GenerateRequest { prompt_ids: prompt.clone(), max_new_tokens: NEW_TOKENS, sampling: SamplingParams::greedy(), ignore_eos: false };
        for d in &drafters {
            for opts in &configs {
                let blocks = (prompt.len() + NEW_TOKENS + 40).div_ceil(16) + 1;
                let backend = CpuBackend::new(target.config.clone(), Arc::clone(&target.weights), blocks, 16).expect("backend");
                let drafter = cpu_drafter(d, &target, blocks + 2, 16).expect("drafter");
                let mut se = SpecEngine::new(Engine::new(backend).expect("engine"), drafter, *opts).expect("spec");
                let out = se.generate(&req).expect("generate");
                assert_eq!(out.token_ids, want, "case {} drafter {d:?} {opts:?}", case["name"]);
                assert_eq!(se.target().blocks().num_used(), 0);
            }
        }
    }
}
