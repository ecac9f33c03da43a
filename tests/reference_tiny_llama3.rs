//! The CPU engine against Hugging Face transformers on a tiny random Llama-3.2-style checkpoint
//! saved by transformers (llama3 RoPE scaling, tied embeddings, GQA, non-unit norms): full
//! logits at every position within 1e-3 relative, greedy ids identical.
//! Fixture: tests/fixtures/tiny-llama3/, made by tools/fixtures/make_fixtures.py.
mod common;

use common::*;
use verify_pd::engine::{Engine, GenerateRequest};
use verify_pd::model::Model;
use vpd_sampling::SamplingParams;

#[test]
fn logits_at_every_position_match_transformers() {
    let model = Model::load(&fixture("tiny-llama3")).expect("load tiny checkpoint");
    assert!(model.config.rope_scaling.is_some() && model.config.tie_word_embeddings);
    let fx = read_json("tiny-llama3/reference.json");
    for case in fx["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().unwrap_or("?");
        let prompt = ids(&case["prompt_ids"]);
        let greedy = ids(&case["greedy_ids"]);
        let all: Vec<u32> = prompt.iter().chain(&greedy).copied().collect();
        let mut be = backend(&model, all.len());
        let rows = all_logits(&mut be, &all);
        let want = case["logits"].as_array().expect("logits");
        assert_eq!(want.len(), all.len(), "case {name}");
        for (pos, w) in want.iter().enumerate() {
            let err = max_rel_err(&rows[pos], &floats(w));
            assert!(err <= 1e-3, "case {name} pos {pos}: relative error {err}");
        }
    }
}

#[test]
fn greedy_ids_match_transformers() {
    let model = Model::load(&fixture("tiny-llama3")).expect("load tiny checkpoint");
    let fx = read_json("tiny-llama3/reference.json");
    for case in fx["cases"].as_array().expect("cases") {
        let prompt = ids(&case["prompt_ids"]);
        let greedy = ids(&case["greedy_ids"]);
        let mut engine = Engine::new(backend(&model, prompt.len() + greedy.len() + 1)).expect("engine");
        let req = GenerateRequest { prompt_ids: prompt, max_new_tokens: greedy.len(), sampling: SamplingParams::greedy(), ignore_eos: true };
        let out = engine.generate(&req).expect("generate");
        assert_eq!(out.token_ids, greedy, "case {}", case["name"]);
    }
}
