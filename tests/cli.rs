//! The `vpd` command line, end to end: the JSON contract of `generate`, `make-model`, and a
//! clear error with a non-zero exit (never a panic) for each kind of bad input.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn vpd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vpd")).args(args).output().expect("run vpd")
}

fn tiny(dir: &Path) -> PathBuf {
    let out = dir.join("tiny");
    let o = vpd(&["make-model", "--preset", "tiny-llama3", "--seed", "3", "--dtype", "f32", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "make-model failed: {}", String::from_utf8_lossy(&o.stderr));
    out
}

/// Runs vpd, expects failure with `needle` in stderr and no panic.
fn fails_with(args: &[&str], needle: &str) {
    let o = vpd(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{args:?} should fail");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    assert!(err.contains(needle), "{args:?}: stderr does not name `{needle}`: {err}");
}

#[test]
fn generate_json_contract() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny(d.path());
    let o = vpd(&["generate", "--model", m.to_str().unwrap(), "--prompt-ids", "1,2,3", "--max-new-tokens", "6", "--ignore-eos", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8(o.stdout).unwrap();
    let last = stdout.lines().last().expect("a line");
    let v: serde_json::Value = serde_json::from_str(last).expect("last line is JSON");
    assert_eq!(v["prompt_ids"], serde_json::json!([1, 2, 3]), "prompt ids verbatim, no BOS added");
    assert_eq!(v["token_ids"].as_array().unwrap().len(), 6);
    assert_eq!(v["finish_reason"], "length");
    assert!(v["text"].is_string());
    assert!(v["timings"]["total_ms"].as_f64().unwrap() >= 0.0);
}

#[test]
fn generate_text_prompt_follows_model_bos_policy() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny(d.path());
    let o = vpd(&["generate", "--model", m.to_str().unwrap(), "--prompt", "hi", "--max-new-tokens", "2", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8(o.stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let ids = v["prompt_ids"].as_array().unwrap();
    assert!(!ids.is_empty());
}

#[test]
fn missing_model_path_is_named() {
    fails_with(&["generate", "--model", "/nonexistent/model.gguf", "--prompt-ids", "1"], "/nonexistent/model.gguf");
}

#[test]
fn bad_gguf_files_are_named() {
    let d = tempfile::tempdir().unwrap();
    let magic = d.path().join("wrong-magic.gguf");
    std::fs::write(&magic, b"NOPE\x03\x00\x00\x00 and then some bytes").unwrap();
    fails_with(&["generate", "--model", magic.to_str().unwrap(), "--prompt-ids", "1"], "wrong-magic.gguf");
    let trunc = d.path().join("truncated.gguf");
    let mut bytes = b"GGUF\x03\x00\x00\x00".to_vec();
    bytes.extend_from_slice(&5u64.to_le_bytes()); // claims 5 tensors, then ends
    std::fs::write(&trunc, bytes).unwrap();
    fails_with(&["generate", "--model", trunc.to_str().unwrap(), "--prompt-ids", "1"], "truncated.gguf");
}

#[test]
fn bad_checkpoint_directories_are_named() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny(d.path());
    let cfg_path = m.join("config.json");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();

    std::fs::write(&cfg_path, cfg.replace("LlamaForCausalLM", "MambaForCausalLM").replace("\"llama\"", "\"mamba\"")).unwrap();
    fails_with(&["generate", "--model", m.to_str().unwrap(), "--prompt-ids", "1"], "MambaForCausalLM");

    std::fs::write(&cfg_path, cfg.replace("\"intermediate_size\": 160", "\"intermediate_size\": 170")).unwrap();
    fails_with(&["generate", "--model", m.to_str().unwrap(), "--prompt-ids", "1"], "mlp");

    std::fs::write(&cfg_path, "{ not json").unwrap();
    fails_with(&["generate", "--model", m.to_str().unwrap(), "--prompt-ids", "1"], "config.json");
}

#[test]
fn bad_requests_name_the_field() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny(d.path());
    let m = m.to_str().unwrap();
    fails_with(&["generate", "--model", m, "--prompt-ids", "1,512"], "outside the vocabulary");
    let long: Vec<String> = (0..2100).map(|i| (i % 500).to_string()).collect();
    fails_with(&["generate", "--model", m, "--prompt-ids", &long.join(",")], "does not fit the context");
    fails_with(&["generate", "--model", m, "--prompt-ids", "1", "--temperature", "NaN"], "temperature");
    fails_with(&["generate", "--model", m, "--prompt-ids", "1", "--top-p", "1.5"], "top_p");
}

#[test]
fn speculative_generate_reports_acceptance_in_json() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny(d.path());
    let trace = d.path().join("trace.jsonl");
    let o = vpd(&[
        "generate", "--model", m.to_str().unwrap(), "--prompt-ids", "1,2,3,1,2,3,1,2", "--max-new-tokens", "9", "--ignore-eos",
        "--draft", "layer-skip:1", "--num-draft", "3", "--trace", trace.to_str().unwrap(), "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8(o.stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(v["token_ids"].as_array().unwrap().len(), 9);
    let steps = v["steps"].as_u64().unwrap();
    assert!(steps >= 1 && v["drafted"].as_u64().unwrap() >= v["accepted"].as_u64().unwrap());
    assert!(v["mean_accepted_length"].is_number());
    let lines = std::fs::read_to_string(&trace).unwrap();
    assert_eq!(lines.lines().count() as u64, steps, "one trace line per verify step");
    let first: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert!(first["L"].is_number() && first["accepted"].is_number() && first["request"].is_number());
}

#[test]
fn bad_speculative_options_name_the_field() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny(d.path());
    let m = m.to_str().unwrap();
    let base = ["generate", "--model", m, "--prompt-ids", "1,2"];
    fn joined<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        base.iter().chain(extra).copied().collect()
    }
    let with = |extra: &[&'static str]| joined(&base, extra);
    fails_with(&with(&["--draft", "medusa:2"]), "unknown drafter");
    fails_with(&with(&["--draft", "ngram:2", "--num-draft", "0"]), "num_draft");
    fails_with(&with(&["--draft", "ngram:2", "--num-draft", "17"]), "num_draft");
    fails_with(&with(&["--draft", "ngram:2", "--tree", "60,10"]), "budget");
    fails_with(&with(&["--draft", "layer-skip:9"]), "layer-skip");
    // A drafter with another vocabulary: a random model with SmolLM2's tokenizer.
    let other = d.path().join("other");
    let smollm2 = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/SmolLM2-135M-Instruct.Q4_1.gguf");
    let o = vpd(&["make-model", "--preset", "tiny-llama3", "--dtype", "f32", "--out", other.to_str().unwrap(), "--vocab-from", smollm2]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let spec = format!("model:{}", other.display());
    fails_with(&joined(&base, &["--draft", &spec]), "vocabulary");
    fails_with(&["make-model", "--preset", "tiny-llama3", "--out", other.to_str().unwrap(), "--vocab-from", "/nonexistent"], "/nonexistent");
}
