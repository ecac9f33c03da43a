//! What a target step hands back to the scheduler: whole logits rows, or only each row's
//! greedy token when every request in the step is greedy and wants no logprobs
//! ([`Backend::forward_argmax`](crate::backend::Backend::forward_argmax): on the GPU the rows
//! are reduced on the device and 4 bytes a row cross to the host instead of `4 · vocab`).
use vpd_sampling::{argmax, Sampler, SamplingParams};

use super::internal;
use crate::backend::{Argmax, Logits};
use crate::error::Result;
use crate::runtime::state::Req;

pub(super) enum StepRows {
    Logits(Logits),
    Greedy(Argmax),
}

/// One row of a step's output.
#[derive(Clone, Copy)]
pub(super) enum Row<'a> {
    Logits(&'a [f32]),
    Greedy(u32),
}

impl StepRows {
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

    /// The next token under `sampling`; `None` for a greedy row and a sampling request (the
    /// scheduler asks for greedy rows only when every request in the step is greedy).
    pub fn token(self, sampler: &mut Sampler, sampling: &SamplingParams) -> Option<u32> {
        match self {
            Self::Logits(l) => Some(sampler.sample(l, sampling)),
            Self::Greedy(t) => sampling.is_greedy().then_some(t),
        }
    }
}

impl Req {
    /// Request `self`'s next token from `row` (its own sampler and parameters), with its
    /// logprob noted where it asked for them.
    pub(super) fn next_token(&mut self, row: Row<'_>) -> Result<u32> {
        let tok = row
            .token(&mut self.verify, &self.req.sampling)
            .ok_or_else(|| internal("a sampling request got a greedy-only row"))?;
        self.note_row_logprob(row, tok)?;
        Ok(tok)
    }

    /// Notes the logprob of `token` under `row`, if the request asked for logprobs.
    pub(super) fn note_row_logprob(&mut self, row: Row<'_>, token: u32) -> Result<()> {
        if self.logprobs.is_none() {
            return Ok(());
        }
        let logits = row
            .logits()
            .ok_or_else(|| internal("a request that wants logprobs got a greedy-only row"))?;
        self.note_logprob(logits, token);
        Ok(())
    }
}
