//! `vpd make-model --preset P --seed S --out DIR [--dtype bf16|f32]`.
use std::path::PathBuf;

use crate::error::Result;
use crate::make_model::{write_random_checkpoint, Preset, WeightDType};

#[derive(Debug, clap::Args)]
pub struct MakeModelArgs {
    #[arg(long, value_enum)]
    pub preset: Preset,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub out: PathBuf,
    /// Weight type in the safetensors file.
    #[arg(long, value_enum, default_value = "bf16")]
    pub dtype: WeightDType,
    /// Take the vocabulary (size, tokenizer, BOS/EOS, chat template) from this model, e.g. to
    /// make a random drafter for it.
    #[arg(long)]
    pub vocab_from: Option<PathBuf>,
}

pub fn run(a: MakeModelArgs) -> Result<()> {
    let tokenizer = match &a.vocab_from {
        Some(p) => Some(crate::model::load_tokenizer(p)?.ok_or_else(|| crate::error::EngineError::Model {
            path: p.display().to_string(),
            detail: "has no tokenizer to take the vocabulary from".into(),
        })?),
        None => None,
    };
    let cfg = match &tokenizer {
        Some(t) => crate::make_model::with_vocabulary(&a.preset.config(), t),
        None => a.preset.config(),
    };
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message("writing weights");
    write_random_checkpoint(&cfg, a.dtype, a.seed, &a.out, tokenizer.as_ref(), &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })?;
    bar.finish_and_clear();
    eprintln!("wrote {} ({:?}, seed {}) to {}", a.preset.to_possible_value_name(), a.dtype, a.seed, a.out.display());
    Ok(())
}

trait PossibleValueName {
    fn to_possible_value_name(&self) -> String;
}

impl<T: clap::ValueEnum> PossibleValueName for T {
    fn to_possible_value_name(&self) -> String {
        self.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default()
    }
}
