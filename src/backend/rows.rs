//! What one step hands back to its caller: whole logits rows, or only each row's greedy token
//! when every request in the step is greedy and wants no logprobs
//! ([`Backend::forward_argmax`]: on the GPU the rows are reduced on the device and 4 bytes a
//! row cross to the host instead of `4 · vocab`). The runtime, `Engine::generate`,
//! `SpecEngine` and the model drafter all choose through [`StepRows::forward`].
use vpd_sampling::{argmax, Sampler, SamplingParams};

use super::{Argmax, Backend, Logits, StepPlan};
use crate::error::Result;

pub enum StepRows {
    Logits(Logits),
    Greedy(Argmax),
}

/// One row of a step's output.
#[derive(Clone, Copy)]
pub enum Row<'a> {
    Logits(&'a [f32]),
    Greedy(u32),
}

impl StepRows {
    /// Runs `plan` through layers `0..num_layers`; with `greedy_only`, asks only for each
    /// row's greedy token.
    ///
    /// # Errors
    /// As [`Backend::forward_layers`].
    pub fn forward<B: Backend + ?Sized>(backend: &mut B, plan: &StepPlan, num_layers: usize, greedy_only: bool) -> Result<Self> {
        Ok(if greedy_only {
            Self::Greedy(backend.forward_argmax(plan, num_layers)?)
        } else {
            Self::Logits(backend.forward_layers(plan, num_layers)?)
        })
    }

    /// The rows of plan sequence `s`.
    pub fn seq_rows(&self, s: usize) -> Vec<Row<'_>> {
        match self {
            Self::Logits(l) => l.seq_rows(s).map(Row::Logits).collect(),
            Self::Greedy(a) => a.seq_ids(s).iter().map(|&t| Row::Greedy(t)).collect(),
        }
    }

    /// The last row of plan sequence `s`, if it has any.
    pub fn last_row(&self, s: usize) -> Option<Row<'_>> {
        match self {
            Self::Logits(l) => l.last_row(s).map(Row::Logits),
            Self::Greedy(a) => a.seq_ids(s).last().map(|&t| Row::Greedy(t)),
        }
    }
}

impl<'a> Row<'a> {
    /// The row's greedy token.
    pub fn argmax(self) -> u32 {
        match self {
            Self::Logits(l) => argmax(l),
            Self::Greedy(t) => t,
        }
    }

    /// The logits, where the step kept them.
    pub fn logits(self) -> Option<&'a [f32]> {
        match self {
            Self::Logits(l) => Some(l),
            Self::Greedy(_) => None,
        }
    }

    /// The next token under `sampling`; `None` for a greedy row and a sampling request (callers
    /// ask for greedy rows only when every request in the step is greedy).
    pub fn token(self, sampler: &mut Sampler, sampling: &SamplingParams) -> Option<u32> {
        match self {
            Self::Logits(l) => Some(sampler.sample(l, sampling)),
            Self::Greedy(t) => sampling.is_greedy().then_some(t),
        }
    }
}
