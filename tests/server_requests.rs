//! Bad input never crashes the server's request parser: random bodies (arbitrary JSON for every
//! field the API knows, wrong types, huge and non-finite numbers, byte-level corruption of
//! valid bodies) always come back as a checked job or a 400/404 naming a field, and every job
//! that passes keeps the limits the engine relies on.
use std::path::Path;

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use verify_pd::server::protocol::{parse_body, Endpoint, ModelLimits, MAX_N, MAX_STOP, MAX_TOP_LOGPROBS_CHAT};
use vpd_formats::tokenizer::Tokenizer;

const FIXTURE: &str = "tests/fixtures/tiny-llama3";

fn tokenizer() -> Tokenizer {
    let dir = Path::new(FIXTURE);
    Tokenizer::from_file(&dir.join("tokenizer.json"), Some(&dir.join("tokenizer_config.json"))).expect("fixture tokenizer")
}

fn limits() -> ModelLimits {
    ModelLimits { name: "tiny-llama3".into(), vocab: 300, context: 64 }
}

/// Fields of the two endpoints, and a few that are not.
const FIELDS: &[&str] = &[
    "model", "prompt", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "n", "seed",
    "stop", "stream", "stream_options", "ignore_eos", "logprobs", "top_logprobs", "echo", "best_of", "suffix", "tools",
    "role", "content", "include_usage", "",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-3i64..400).prop_map(Value::from),
        any::<f64>().prop_map(|x| serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)),
        (0.0f64..2.5).prop_map(Value::from),
        "[a-z ]{0,12}".prop_map(Value::from),
        prop::sample::select(vec!["NaN", "Infinity", "-Infinity", "user", "system", "assistant", "tiny-llama3", "\u{0}", "é😀"])
            .prop_map(Value::from),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(FIELDS.to_vec()), inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec((prop::sample::select(FIELDS.to_vec()), value()), 0..8)
        .prop_map(|kv| kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

/// What every accepted job must satisfy, and what every refusal must say.
fn check(endpoint: Endpoint, bytes: &[u8]) -> Result<(), TestCaseError> {
    let (tok, m) = (tokenizer(), limits());
    match parse_body(endpoint, bytes, &tok, &m) {
        Ok(job) => {
            prop_assert!(!job.prompt_ids.is_empty());
            prop_assert!(job.prompt_ids.iter().all(|&t| (t as usize) < m.vocab), "ids {:?}", job.prompt_ids);
            prop_assert!(job.max_tokens >= 1 && job.prompt_ids.len() + job.max_tokens <= m.context);
            prop_assert!((1..=MAX_N as usize).contains(&job.n));
            let s = job.sampling;
            prop_assert!(s.temperature.is_finite() && s.temperature >= 0.0);
            prop_assert!(s.top_p > 0.0 && s.top_p <= 1.0);
            prop_assert!(job.stop.len() <= MAX_STOP);
            prop_assert!(job.logprobs.is_none_or(|k| k <= MAX_TOP_LOGPROBS_CHAT as usize));
        }
        Err(e) => {
            prop_assert!(matches!(e.status.as_u16(), 400 | 404), "status {}", e.status);
            prop_assert!(!e.message.is_empty());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, .. ProptestConfig::default() })]

    #[test]
    fn random_bodies_are_checked_or_refused(b in body(), chat in any::<bool>()) {
        let endpoint = if chat { Endpoint::Chat } else { Endpoint::Completions };
        check(endpoint, Value::Object(b).to_string().as_bytes())?;
    }

    #[test]
    fn corrupted_valid_bodies_are_checked_or_refused(cut in 0usize..200, flips in prop::collection::vec((0usize..200, any::<u8>()), 0..4), chat in any::<bool>()) {
        let valid = if chat {
            json!({"messages": [{"role": "user", "content": "hi there"}], "max_tokens": 5, "temperature": 0.5, "stop": ["x"], "logprobs": true, "top_logprobs": 2})
        } else {
            json!({"prompt": "hello world", "max_tokens": 5, "top_p": 0.9, "n": 2, "stream": true, "stream_options": {"include_usage": true}})
        };
        let mut bytes = valid.to_string().into_bytes();
        for (at, b) in flips {
            if let Some(x) = bytes.get_mut(at) {
                *x = b;
            }
        }
        bytes.truncate(cut.max(1));
        check(if chat { Endpoint::Chat } else { Endpoint::Completions }, &bytes)?;
    }
}

#[test]
fn the_valid_bodies_used_above_are_accepted() {
    let (tok, m) = (tokenizer(), limits());
    let chat = json!({"messages": [{"role": "user", "content": "hi there"}], "max_tokens": 5}).to_string();
    let plain = json!({"prompt": "hello world", "max_tokens": 5, "n": 2}).to_string();
    assert!(parse_body(Endpoint::Chat, chat.as_bytes(), &tok, &m).is_ok());
    assert!(parse_body(Endpoint::Completions, plain.as_bytes(), &tok, &m).is_ok());
}
