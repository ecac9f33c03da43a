//! The CPU engine against Hugging Face transformers on the real SmolLM2-135M-Instruct (Q4_1
//! GGUF, dequantised by both sides): greedy ids identical, top-5 logits within 1e-3 relative.
//! Fixture: tests/fixtures/smollm2/reference.json, made by tools/fixtures/make_fixtures.py.
mod common;

use common::*;
use verify_pd::engine::{Engine, FinishReason, GenerateRequest};
use verify_pd::model::Model;
use vpd_sampling::SamplingParams;

#[test]
fn greedy_ids_and_logits_match_transformers() {
    let model = Model::load(&smollm2_path()).expect("load SmolLM2");
    let fx = read_json("smollm2/reference.json");
    let cases = fx["cases"].as_array().expect("cases");
    assert!(cases.len() >= 8, "fixture has {} cases", cases.len());
    let mut worst = 0.0f32;
    for case in cases {
        let name = case["name"].as_str().unwrap_or("?");
        let prompt = ids(&case["prompt_ids"]);
        let expected = ids(&case["greedy_ids"]);
        let mut engine = Engine::new(backend(&model, prompt.len() + 40)).expect("engine");
        let req = GenerateRequest {
            prompt_ids: prompt.clone(),
            max_new_tokens: 32,
            sampling: SamplingParams::greedy(),
            ignore_eos: false,
        };
        let out = engine.generate(&req).expect("generate");
        assert_eq!(out.token_ids, expected, "case {name}: greedy ids differ from transformers");
        if expected.len() < 32 {
            assert_eq!(out.finish_reason, FinishReason::Stop, "case {name}");
        }
        engine.blocks().check_invariants().expect("block invariants");
        assert_eq!(engine.blocks().num_used(), 0, "case {name}: blocks leaked");

        let all: Vec<u32> = prompt.iter().chain(&expected).copied().collect();
        let mut be = backend(&model, all.len());
        let rows = all_logits(&mut be, &all);
        for t in case["top5"].as_array().expect("top5") {
            let pos = t["pos"].as_u64().expect("pos") as usize;
            let want = floats(&t["logits"]);
            let got: Vec<f32> = ids(&t["ids"]).iter().map(|&i| rows[pos][i as usize]).collect();
            let err = max_rel_err(&got, &want);
            worst = worst.max(err);
            assert!(err <= 1e-3, "case {name} pos {pos}: logits {got:?} vs transformers {want:?} (err {err})");
            // The reference's top-1 is ours too (ties aside).
            let ours = vpd_sampling::argmax(&rows[pos]);
            let top = ids(&t["ids"])[0];
            assert!(ours == top || (rows[pos][ours as usize] - rows[pos][top as usize]).abs() < 1e-4, "case {name} pos {pos}: argmax {ours} vs {top}");
        }
    }
    eprintln!("worst relative logit error vs transformers: {worst:.2e}");
}
