//! Log-probabilities in OpenAI's two response shapes. Completions (legacy):
//! `{"tokens", "token_logprobs", "top_logprobs": [{token: logprob}], "text_offset"}`. Chat:
//! `{"content": [{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob",
//! "bytes"}]}]}`. Token text is each id decoded alone (a byte-level token that is part of a
//! UTF-8 character decodes to U+FFFD; `bytes` then still holds the true bytes where the
//! tokenizer's token string has them).
use serde_json::{json, Map, Value};
use vpd_formats::tokenizer::Tokenizer;

use crate::runtime::events::TokenLogprob;

fn text_of(tok: &Tokenizer, id: u32) -> String {
    tok.decode(&[id], false)
        .ok()
        .or_else(|| tok.id_to_token(id))
        .unwrap_or_default()
}

/// Completions shape; `offset` is the text offset of the first token, advanced past these.
pub fn completion(tok: &Tokenizer, lps: &[TokenLogprob], offset: &mut usize) -> Value {
    let (mut tokens, mut logprobs, mut tops, mut offsets) = (vec![], vec![], vec![], vec![]);
    for lp in lps {
        let text = text_of(tok, lp.token);
        offsets.push(*offset);
        *offset += text.len();
        tokens.push(text);
        logprobs.push(lp.logprob);
        let top: Map<String, Value> = lp.top.iter().map(|&(id, l)| (text_of(tok, id), json!(l))).collect();
        tops.push(Value::Object(top));
    }
    json!({"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": tops, "text_offset": offsets})
}

/// Chat shape.
pub fn chat(tok: &Tokenizer, lps: &[TokenLogprob]) -> Value {
    let entry = |id: u32, l: f32| {
        let text = text_of(tok, id);
        json!({"token": text, "logprob": l, "bytes": text.as_bytes()})
    };
    let content: Vec<Value> = lps
        .iter()
        .map(|lp| {
            let mut e = entry(lp.token, lp.logprob);
            e["top_logprobs"] = Value::Array(lp.top.iter().map(|&(id, l)| entry(id, l)).collect());
            e
        })
        .collect();
    json!({ "content": content })
}
