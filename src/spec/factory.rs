//! Building a drafter from a [`DraftSpec`] on the CPU backend.
use std::sync::Arc;

use super::drafter::Drafter;
use super::model_drafter::ModelDrafter;
use super::ngram::NgramDrafter;
use super::DraftSpec;
use crate::backend::cpu::CpuBackend;
use crate::error::{EngineError, Result};
use crate::model::Model;

/// A drafter for `target`, with draft caches of `blocks` blocks of `block_size` tokens.
///
/// # Errors
/// A draft model that fails to load, or whose vocabulary or tokenizer differs from the
/// target's; a layer-skip K outside `1..num_layers`.
pub fn cpu_drafter(spec: &DraftSpec, target: &Model, blocks: usize, block_size: usize) -> Result<Box<dyn Drafter>> {
    match spec {
        DraftSpec::Ngram(n) => Ok(Box::new(NgramDrafter::new(*n))),
        DraftSpec::LayerSkip(k) => {
            let layers = target.config.num_hidden_layers;
            if *k >= layers {
                return Err(EngineError::InvalidRequest {
                    field: "draft",
                    detail: format!("layer-skip:{k} must use fewer than the target's {layers} layers"),
                });
            }
            // Shares the target's weights; only the cache is its own.
            let backend = CpuBackend::new(target.config.clone(), Arc::clone(&target.weights), blocks, block_size)?;
            Ok(Box::new(ModelDrafter::new(format!("layer-skip:{k}"), backend, *k)?))
        }
        DraftSpec::Model(path) => {
            let draft = Model::load(path)?;
            check_same_vocabulary(target, &draft)?;
            let backend = CpuBackend::new(draft.config.clone(), Arc::clone(&draft.weights), blocks, block_size)?;
            let layers = draft.config.num_hidden_layers;
            Ok(Box::new(ModelDrafter::new(format!("model:{}", path.display()), backend, layers)?))
        }
    }
}

/// Speculative sampling compares distributions id by id, so both models must index the same
/// vocabulary with the same tokenizer.
fn check_same_vocabulary(target: &Model, draft: &Model) -> Result<()> {
    let err = |detail: String| EngineError::Model { path: draft.path.display().to_string(), detail };
    if draft.config.vocab_size != target.config.vocab_size {
        return Err(err(format!(
            "draft vocabulary has {} tokens, the target's {}: a drafter must share the target's vocabulary",
            draft.config.vocab_size, target.config.vocab_size
        )));
    }
    if let (Some(t), Some(d)) = (&target.tokenizer, &draft.tokenizer) {
        if t.vocab_fingerprint() != d.vocab_fingerprint() {
            return Err(err("draft tokenizer differs from the target's (same size, different tokens)".into()));
        }
    }
    Ok(())
}
