//! Tokenizers for serving, built on the Hugging Face `tokenizers` crate.
//!
//! Sources: a `tokenizer.json` (+ `tokenizer_config.json` for special tokens and the chat
//! template), a GGUF vocabulary ([`gguf_vocab`], byte-level BPE as llama.cpp's `gpt2` model),
//! or a synthetic byte-level vocabulary for random-weight models ([`synthetic`]).
//!
//! BOS policy: `encode(text, true)` runs the tokenizer's post-processor, which is where
//! Hugging Face records whether BOS is prepended (`TemplateProcessing`); GGUF's
//! `tokenizer.ggml.add_bos_token` is translated into the same post-processor, so the policy
//! survives `to_json`. Streaming output goes through [`DecodeStream`], which never emits
//! half of a UTF-8 character.
mod chat;
mod gguf_vocab;
mod synthetic;

use std::path::Path;

use serde_json::Value;

pub use chat::{render as render_chat_template, ChatMessage};
pub use synthetic::{byte_to_char, BOS_TOKEN as SYNTHETIC_BOS, EOS_TOKEN as SYNTHETIC_EOS};

use crate::error::{FormatError, Result};
use crate::gguf::GgufFile;

/// A tokenizer with its special ids and chat template.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos_id: Option<u32>,
    eos_ids: Vec<u32>,
    chat_template: Option<String>,
    /// Cached: `tokenizers` recounts by cloning the whole vocabulary on every call.
    vocab_size: usize,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos_id", &self.bos_id)
            .field("eos_ids", &self.eos_ids)
            .field("chat_template", &self.chat_template.is_some())
            .finish()
    }
}

fn tok_err(context: &str, e: impl std::fmt::Display) -> FormatError {
    FormatError::Tokenizer(format!("{context}: {e}"))
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| FormatError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// A special-token entry of `tokenizer_config.json`: a string or an AddedToken object.
fn token_content(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

impl Tokenizer {
    /// Wraps a built tokenizer; used by every constructor.
    fn assemble(
        inner: tokenizers::Tokenizer,
        bos_id: Option<u32>,
        eos_ids: Vec<u32>,
        chat_template: Option<String>,
    ) -> Self {
        let vocab_size = inner.get_vocab_size(true);
        Self {
            inner,
            bos_id,
            eos_ids,
            chat_template,
            vocab_size,
        }
    }

    /// Loads `tokenizer.json`, and from `tokenizer_config.json` (when given) the BOS/EOS
    /// tokens and the chat template.
    ///
    /// # Errors
    /// Unreadable files, a `tokenizer.json` the `tokenizers` crate rejects, or a
    /// `tokenizer_config.json` that is not valid JSON or names unknown special tokens.
    pub fn from_file(tokenizer_json: &Path, tokenizer_config_json: Option<&Path>) -> Result<Self> {
        let text = read_text(tokenizer_json)?;
        let inner: tokenizers::Tokenizer = text
            .parse()
            .map_err(|e| tok_err(&tokenizer_json.display().to_string(), e))?;
        let mut tok = Self::assemble(inner, None, Vec::new(), None);
        let Some(cfg_path) = tokenizer_config_json else {
            return Ok(tok);
        };
        let cfg: Value =
            serde_json::from_str(&read_text(cfg_path)?).map_err(|e| FormatError::Corrupt {
                path: cfg_path.to_path_buf(),
                detail: format!("invalid JSON: {e}"),
            })?;
        let lookup = |field: &str| -> Result<Option<u32>> {
            match token_content(cfg.get(field)) {
                None => Ok(None),
                Some(t) => tok
                    .inner
                    .token_to_id(&t)
                    .map(Some)
                    .ok_or_else(|| FormatError::Field {
                        path: cfg_path.to_path_buf(),
                        field: field.to_string(),
                        detail: format!("token {t:?} is not in the vocabulary"),
                    }),
            }
        };
        let bos = lookup("bos_token")?;
        let eos = lookup("eos_token")?;
        tok.bos_id = bos;
        tok.eos_ids = eos.into_iter().collect();
        tok.chat_template = chat::template_from_config(cfg.get("chat_template"), cfg_path)?;
        Ok(tok)
    }

    /// Loads `dir/tokenizer.json` with `dir/tokenizer_config.json` when present; a
    /// `dir/chat_template.jinja` (newer `transformers` layout) overrides the config's template.
    ///
    /// # Errors
    /// As [`Self::from_file`].
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let cfg = dir.join("tokenizer_config.json");
        let mut tok = Self::from_file(
            &dir.join("tokenizer.json"),
            cfg.is_file().then_some(cfg.as_path()),
        )?;
        let jinja = dir.join("chat_template.jinja");
        if jinja.is_file() {
            tok.chat_template = Some(read_text(&jinja)?);
        }
        Ok(tok)
    }

    /// Builds the tokenizer stored in a GGUF file's `tokenizer.ggml.*` metadata.
    ///
    /// # Errors
    /// See [`Self::from_gguf_metadata`].
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        Self::from_gguf_metadata(g.path(), |k| g.get(k))
    }

    /// Sets the chat template (e.g. one supplied on the command line).
    pub fn set_chat_template(&mut self, template: Option<String>) {
        self.chat_template = template;
    }

    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// Token ids of `text`; `add_special` applies the model's BOS policy (the post-processor).
    ///
    /// # Errors
    /// The tokenizer fails on the input (does not happen for byte-level vocabularies).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special)
            .map_err(|e| tok_err("encode", e))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`; `skip_special` drops special tokens (BOS, EOS, chat markers).
    ///
    /// # Errors
    /// An id outside the vocabulary.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        let n = self.vocab_size();
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= n) {
            return Err(tok_err(
                "decode",
                format!("id {bad} is outside the vocabulary of {n}"),
            ));
        }
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| tok_err("decode", e))
    }

    /// Number of ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// Every id that ends generation.
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The tokenizer as `tokenizer.json` text.
    ///
    /// # Errors
    /// Serialisation failure (not expected).
    pub fn to_json(&self) -> Result<String> {
        self.inner
            .to_string(false)
            .map_err(|e| tok_err("to_json", e))
    }

    /// The underlying `tokenizers` tokenizer.
    /// A hash of every (id, token) pair, added tokens included: equal fingerprints mean two
    /// tokenizers index the same vocabulary (what a drafter must share with its target).
    pub fn vocab_fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut pairs: Vec<(u32, String)> = self.inner.get_vocab(true).into_iter().map(|(t, i)| (i, t)).collect();
        pairs.sort_unstable();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        pairs.hash(&mut h);
        h.finish()
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// A streaming decoder; see [`DecodeStream`].
    pub fn decode_stream(&self, skip_special: bool) -> DecodeStream<&Self> {
        DecodeStream::new(self, skip_special)
    }

    /// The text `ids[prefix_len..]` adds to `ids[..prefix_len]`, holding back a trailing
    /// incomplete UTF-8 character (stateless form of [`DecodeStream`]).
    ///
    /// # Errors
    /// An id outside the vocabulary.
    pub fn decode_incremental(&self, ids: &[u32], prefix_len: usize) -> Result<String> {
        let prefix_len = prefix_len.min(ids.len());
        let before = self.decode(&ids[..prefix_len], false)?;
        let after = self.decode(ids, false)?;
        let new = after.get(common_prefix(&before, &after)..).unwrap_or("");
        Ok(new.strip_suffix(REPLACEMENT).map_or(new, |s| s).to_string())
    }
}

const REPLACEMENT: char = '\u{FFFD}';

/// Length in bytes of the longest common prefix of `a` and `b`, at a char boundary.
fn common_prefix(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or(a.len().min(b.len()), |((i, _), _)| i)
}

/// Incremental detokenisation: feed ids one at a time, get only the new complete text.
///
/// Decodes a small window (the ids of the last emitted chunk plus pending ids) and emits the
/// part beyond the previous chunk's text, as `tokenizers`' own `DecodeStream` does. Unlike
/// it, a trailing U+FFFD is held back only while at most 4 ids are pending (a UTF-8
/// character has at most 4 bytes), so a model that emits invalid bytes cannot stall the stream.
///
/// `T` is anything that derefs to the tokenizer: a borrow, or an `Arc` for a stream that must
/// outlive the caller's borrow (a server's response stream).
pub struct DecodeStream<T: std::ops::Deref<Target = Tokenizer>> {
    tok: T,
    skip_special: bool,
    ids: Vec<u32>,
    prefix: String,
    prefix_index: usize,
}

impl<T: std::ops::Deref<Target = Tokenizer>> DecodeStream<T> {
    pub fn new(tok: T, skip_special: bool) -> Self {
        Self {
            tok,
            skip_special,
            ids: Vec::new(),
            prefix: String::new(),
            prefix_index: 0,
        }
    }

    /// Adds one id; returns the text it completes, if any.
    ///
    /// # Errors
    /// An id outside the vocabulary.
    pub fn step(&mut self, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        self.emit(false)
    }

    /// Emits whatever is still held back (an incomplete character becomes U+FFFD).
    ///
    /// # Errors
    /// As [`Self::step`].
    pub fn flush(&mut self) -> Result<Option<String>> {
        self.emit(true)
    }

    fn emit(&mut self, force: bool) -> Result<Option<String>> {
        let text = self.tok.decode(&self.ids, self.skip_special)?;
        let pending = self.ids.len() - self.prefix_index;
        let incomplete = text.ends_with(REPLACEMENT) && pending <= 4 && !force;
        let nothing_new = text.len() <= self.prefix.len() && !(force && text != self.prefix);
        if nothing_new || incomplete {
            return Ok(None);
        }
        // Normally `text` extends `prefix`; if a decoder rewrote the overlap, skip what matches.
        let new = text[common_prefix(&self.prefix, &text)..].to_string();
        // Keep the ids just decoded as context for the next chunk.
        self.ids.drain(..self.prefix_index);
        self.prefix_index = self.ids.len();
        self.prefix = self.tok.decode(&self.ids, self.skip_special)?;
        Ok((!new.is_empty()).then_some(new))
    }
}
