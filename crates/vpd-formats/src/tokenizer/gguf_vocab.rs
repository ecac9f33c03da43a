//! Tokenizers from GGUF `tokenizer.ggml.*` metadata (llama.cpp's `gguf.h` key names).
//!
//! `tokenizer.ggml.model = "gpt2"` is byte-level BPE: `tokens` are byte-level-encoded
//! strings (GPT-2's bytes-to-unicode map), `merges` are "left right" pairs in rank order.
//! Token type 3 (control) becomes a special added token, type 4 (user-defined) an ordinary
//! added token. `tokenizer.ggml.pre` selects the pre-tokenizer llama.cpp applies:
//! - "gpt2" (or no key): the GPT-2 regex, i.e. `ByteLevel(use_regex)`.
//! - "smollm" (and "starcoder", "refact", "codeshell"): llama.cpp splits `\p{N}` individually, then the
//!   GPT-2 regex. That is `Digits(individual_digits) + ByteLevel(use_regex)`, exactly the
//!   pre-tokenizer of SmolLM2's own `tokenizer.json`.
//! - "llama-bpe" (Llama 3): the Llama 3 split regex, then ByteLevel without its own regex.
//!
//! `add_bos_token` becomes a `TemplateProcessing` post-processor (as `transformers`'
//! GPT-2 converter does), so `encode(text, true)` prepends BOS only when the file says so.
use std::path::Path;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, PostProcessorWrapper, PreTokenizerWrapper, SplitDelimiterBehavior};

use super::Tokenizer;
use crate::error::{FormatError, Result};
use crate::gguf::GgufValue;

/// Llama 3's pre-tokenizer split pattern (from its `tokenizer.json`).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

const TOKEN_TYPE_CONTROL: u64 = 3;
const TOKEN_TYPE_USER_DEFINED: u64 = 4;

fn missing(key: &str, what: &str) -> FormatError {
    FormatError::Tokenizer(format!("GGUF metadata `{key}`: {what}"))
}

/// A string-array key, e.g. `tokenizer.ggml.tokens`.
fn strings<'a>(get: &impl Fn(&str) -> Option<&'a GgufValue>, key: &str) -> Result<Vec<&'a str>> {
    let arr = get(key)
        .ok_or_else(|| missing(key, "missing"))?
        .as_array()
        .ok_or_else(|| missing(key, "not an array"))?;
    arr.iter()
        .map(|v| {
            v.as_str()
                .ok_or_else(|| missing(key, "array element is not a string"))
        })
        .collect()
}

fn id<'a>(
    get: &impl Fn(&str) -> Option<&'a GgufValue>,
    key: &str,
    n: usize,
) -> Result<Option<u32>> {
    let Some(v) = get(key) else { return Ok(None) };
    match v.as_u64().and_then(|i| u32::try_from(i).ok()) {
        Some(i) if (i as usize) < n => Ok(Some(i)),
        _ => Err(missing(key, &format!("{v:?} is not a token id below {n}"))),
    }
}

fn pre_tokenizer(pre: &str, path: &Path) -> Result<PreTokenizerWrapper> {
    let byte_level =
        |use_regex| PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, use_regex));
    Ok(match pre {
        // GPT-2's regex alone; also the fallback `transformers` uses for every GGUF BPE vocab.
        "gpt2" | "default" => byte_level(true),
        "smollm" | "starcoder" | "refact" | "codeshell" => {
            PreTokenizerWrapper::Sequence(Sequence::new(vec![
                Digits::new(true).into(),
                byte_level(true),
            ]))
        }
        "llama-bpe" | "llama3" => {
            let split = Split::new(
                SplitPattern::Regex(LLAMA3_SPLIT.into()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| FormatError::Tokenizer(format!("Llama 3 split regex: {e}")))?;
            PreTokenizerWrapper::Sequence(Sequence::new(vec![split.into(), byte_level(false)]))
        }
        other => {
            return Err(FormatError::Unsupported {
                path: path.to_path_buf(),
                what: "tokenizer pre-tokenizer",
                detail: format!(
                    "`tokenizer.ggml.pre` = {other:?} (supported: smollm, gpt2, llama-bpe)"
                ),
            })
        }
    })
}

impl Tokenizer {
    /// Builds a tokenizer from GGUF metadata looked up through `get`; `path` names the file
    /// in errors. This is the core of [`Tokenizer::from_gguf`].
    ///
    /// # Errors
    /// A model other than "gpt2" or an unknown pre-tokenizer (`Unsupported`); missing or
    /// mistyped `tokens` / `merges` / ids (`Tokenizer`, naming the key).
    pub fn from_gguf_metadata<'a>(
        path: &Path,
        get: impl Fn(&str) -> Option<&'a GgufValue>,
    ) -> Result<Tokenizer> {
        let model = get("tokenizer.ggml.model")
            .and_then(GgufValue::as_str)
            .unwrap_or("");
        if model != "gpt2" {
            return Err(FormatError::Unsupported {
                path: path.to_path_buf(),
                what: "tokenizer model",
                detail: format!("`tokenizer.ggml.model` = {model:?} (only \"gpt2\", byte-level BPE, is supported)"),
            });
        }
        let pre = get("tokenizer.ggml.pre")
            .and_then(GgufValue::as_str)
            .unwrap_or("default");
        let pre = pre_tokenizer(pre, path)?;

        let tokens = strings(&get, "tokenizer.ggml.tokens")?;
        let n = tokens.len();
        // Later duplicates win, as in transformers' `{tok: i for i, tok in enumerate(tokens)}`.
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| ((*t).to_string(), i as u32))
            .collect();
        let merges = strings(&get, "tokenizer.ggml.merges")?
            .into_iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| {
                        missing(
                            "tokenizer.ggml.merges",
                            &format!("merge {m:?} is not \"left right\""),
                        )
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| {
                FormatError::Tokenizer(format!("{}: BPE from GGUF vocabulary: {e}", path.display()))
            })?;

        let types: Vec<u64> = match get("tokenizer.ggml.token_type").and_then(GgufValue::as_array) {
            Some(a) if a.len() == n => a.iter().map(|v| v.as_u64().unwrap_or(1)).collect(),
            Some(a) => {
                return Err(missing(
                    "tokenizer.ggml.token_type",
                    &format!("{} entries for {n} tokens", a.len()),
                ));
            }
            None => vec![1; n],
        };

        let bos_id = id(&get, "tokenizer.ggml.bos_token_id", n)?;
        let mut eos_ids = Vec::new();
        // EOT / EOM end a turn in chat models; llama.cpp stops on them as on EOS.
        for key in [
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.eot_token_id",
            "tokenizer.ggml.eom_token_id",
        ] {
            if let Some(e) = id(&get, key, n)? {
                if !eos_ids.contains(&e) {
                    eos_ids.push(e);
                }
            }
        }
        let add_bos = get("tokenizer.ggml.add_bos_token")
            .and_then(GgufValue::as_bool)
            .unwrap_or(false);

        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(pre));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        let post = match (add_bos, bos_id) {
            (true, Some(b)) => {
                let bos = tokens[b as usize].to_string();
                let tp = TemplateProcessing::builder()
                    .try_single(format!("{bos}:0 $A:0"))
                    .and_then(|t| t.try_pair(format!("{bos}:0 $A:0 {bos}:1 $B:1")))
                    .map_err(|e| FormatError::Tokenizer(format!("BOS template: {e}")))?
                    .special_tokens(vec![(bos, b)])
                    .build()
                    .map_err(|e| FormatError::Tokenizer(format!("BOS template: {e}")))?;
                PostProcessorWrapper::Template(tp)
            }
            (true, None) => {
                return Err(missing(
                    "tokenizer.ggml.bos_token_id",
                    "missing but add_bos_token is true",
                ))
            }
            (false, _) => PostProcessorWrapper::ByteLevel(ByteLevel::new(false, false, true)),
        };
        inner.with_post_processor(Some(post));

        let added = |ty: u64, special: bool| -> Vec<AddedToken> {
            (0..n)
                .filter(|&i| types[i] == ty)
                .map(|i| AddedToken::from(tokens[i].to_string(), special).normalized(false))
                .collect()
        };
        inner.add_special_tokens(&added(TOKEN_TYPE_CONTROL, true));
        inner.add_tokens(&added(TOKEN_TYPE_USER_DEFINED, false));

        let chat_template = get("tokenizer.chat_template")
            .and_then(GgufValue::as_str)
            .map(str::to_string);
        Ok(Tokenizer::assemble(inner, bos_id, eos_ids, chat_template))
    }
}
