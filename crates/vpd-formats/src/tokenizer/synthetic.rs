//! A synthetic byte-level tokenizer for random-weight models (`vpd make-model`).
//!
//! Ids 0..256 are the 256 bytes, spelled with GPT-2's bytes-to-unicode map so the standard
//! `ByteLevel` decoder turns them back into bytes; BPE has no merges, so any text encodes
//! to one id per byte. `<|begin_of_text|>` / `<|end_of_text|>` are special tokens at the
//! requested ids (Llama 3 layout: BOS just below EOS), and every other id is a filler
//! `<|reserved_N|>` in the BPE vocabulary: never produced by encoding, but decodable, so
//! whatever a random model samples can be shown. Fillers are plain vocabulary entries rather
//! than added tokens, which keeps a 128256-entry vocabulary cheap to build.
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::AddedToken;

use super::Tokenizer;
use crate::error::{FormatError, Result};

pub const BOS_TOKEN: &str = "<|begin_of_text|>";
pub const EOS_TOKEN: &str = "<|end_of_text|>";

/// GPT-2's reversible byte → printable char map: printable Latin-1 bytes map to themselves,
/// the other 68 bytes to U+0100 upwards in byte order.
pub fn byte_to_char() -> [char; 256] {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut out = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        out[b as usize] = if printable(b) {
            char::from(b)
        } else {
            next += 1;
            char::from_u32(next - 1).unwrap_or('?')
        };
    }
    out
}

impl Tokenizer {
    /// A byte-level tokenizer with `vocab_size` ids and EOS at `eos_id`.
    ///
    /// BOS sits at `eos_id - 1` when that is not a byte id, else at `eos_id + 1`.
    /// `encode(text, true)` prepends BOS, as Llama 3 does.
    ///
    /// # Errors
    /// `vocab_size` below 258, or no room for BOS/EOS outside the byte ids.
    pub fn synthetic_byte_level(vocab_size: usize, eos_id: u32) -> Result<Tokenizer> {
        let bad = |m: String| FormatError::Tokenizer(format!("synthetic tokenizer: {m}"));
        if vocab_size < 258 || vocab_size > u32::MAX as usize {
            return Err(bad(format!(
                "vocab_size {vocab_size} must be in 258..2^32 (256 bytes + BOS + EOS)"
            )));
        }
        if eos_id < 256 || eos_id as usize >= vocab_size {
            return Err(bad(format!(
                "eos_id {eos_id} must be in 256..{vocab_size} (ids below 256 are bytes)"
            )));
        }
        let bos_id = if eos_id > 256 { eos_id - 1 } else { eos_id + 1 };
        if bos_id as usize >= vocab_size {
            return Err(bad(format!(
                "no room for BOS next to eos_id {eos_id} in a vocabulary of {vocab_size}"
            )));
        }

        let mut vocab = Vocab::default();
        vocab.reserve(vocab_size);
        for (b, c) in byte_to_char().iter().enumerate() {
            vocab.insert(c.to_string(), b as u32);
        }
        for id in 256..vocab_size as u32 {
            let name = match id {
                _ if id == bos_id => BOS_TOKEN.to_string(),
                _ if id == eos_id => EOS_TOKEN.to_string(),
                _ => format!("<|reserved_{id}|>"),
            };
            vocab.insert(name, id);
        }
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, Vec::new())
            .build()
            .map_err(|e| bad(e.to_string()))?;

        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        let tp = TemplateProcessing::builder()
            .try_single(format!("{BOS_TOKEN}:0 $A:0"))
            .and_then(|t| t.try_pair(format!("{BOS_TOKEN}:0 $A:0 {BOS_TOKEN}:1 $B:1")))
            .map_err(|e| bad(e.to_string()))?
            .special_tokens(vec![(BOS_TOKEN.to_string(), bos_id)])
            .build()
            .map_err(|e| bad(e.to_string()))?;
        inner.with_post_processor(Some(tp));
        inner.add_special_tokens(&[
            AddedToken::from(BOS_TOKEN, true),
            AddedToken::from(EOS_TOKEN, true),
        ]);
        Ok(Tokenizer::assemble(inner, Some(bos_id), vec![eos_id], None))
    }
}
