//! The request state machine of DESIGN.md: waiting → prefilling → (drafting ⇄ verifying)* →
//! finished | aborted, plus preemption back to waiting (recompute, as vLLM preempts).
//!
//! One lane owns a request at a time: [`RequestState::owner`] says which. A hand-off between
//! lanes is a state transition, checked by [`RequestState::transition`], so a lane that pops a
//! request in the wrong state finds out at once instead of corrupting its KV.

use std::fmt;

/// Engine-wide request identifier.
pub type RequestId = u64;

/// The three lanes, in priority order (highest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lane {
    /// Draft-model steps and plain single-token (L = 0) steps. Highest priority.
    Decode,
    /// Target verification of completed drafts, micro-batched across requests.
    Verify,
    /// Chunked prefill under a token budget. Lowest priority.
    Prefill,
}

impl Lane {
    /// All lanes, highest priority first.
    pub const ALL: [Lane; 3] = [Lane::Decode, Lane::Verify, Lane::Prefill];
}

/// Where a request is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestState {
    /// Admitted, queued for prefill (or preempted and queued to be recomputed).
    Waiting,
    /// Its prompt is being prefilled, chunk by chunk.
    Prefilling,
    /// The decode lane drafts L tokens for it, or runs a plain step when L = 0.
    Drafting,
    /// Its draft waits for or is in a target verification.
    Verifying,
    /// Stopped normally (EOS, stop string, max tokens). Terminal.
    Finished,
    /// Cancelled by the client or failed. Terminal.
    Aborted,
}

/// An illegal state change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("illegal request state transition {from:?} -> {to:?}")]
pub struct TransitionError {
    pub from: RequestState,
    pub to: RequestState,
}

impl RequestState {
    /// Every state, for exhaustive tests and tables.
    pub const ALL: [RequestState; 6] = [
        RequestState::Waiting,
        RequestState::Prefilling,
        RequestState::Drafting,
        RequestState::Verifying,
        RequestState::Finished,
        RequestState::Aborted,
    ];

    /// The lane that owns a request in this state; `None` for terminal states.
    /// A waiting request sits in the prefill lane's queue, so that lane owns it.
    pub fn owner(self) -> Option<Lane> {
        match self {
            Self::Waiting | Self::Prefilling => Some(Lane::Prefill),
            Self::Drafting => Some(Lane::Decode),
            Self::Verifying => Some(Lane::Verify),
            Self::Finished | Self::Aborted => None,
        }
    }

    /// Finished or aborted: no lane will touch it again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Finished | Self::Aborted)
    }

    /// Whether `self -> to` is a legal transition.
    ///
    /// Legal: waiting → prefilling; prefilling → drafting (the prefill emitted the first
    /// token) or → finished (that token ended it); drafting → verifying (a draft of L ≥ 1) or
    /// → finished (a plain L = 0 step ended it); verifying → drafting or → finished;
    /// prefilling, drafting or verifying → waiting (preemption by recompute); any live state
    /// → aborted. Self-loops are not transitions: a second prefill chunk or another plain
    /// step keeps the state and needs no call.
    pub fn can_transition(self, to: RequestState) -> bool {
        use RequestState::*;
        matches!(
            (self, to),
            (Waiting, Prefilling)
                | (Prefilling, Drafting | Finished | Waiting)
                | (Drafting, Verifying | Finished | Waiting)
                | (Verifying, Drafting | Finished | Waiting)
                | (Waiting | Prefilling | Drafting | Verifying, Aborted)
        )
    }

    /// Checked transition: returns the new state.
    ///
    /// # Errors
    /// [`TransitionError`] when [`Self::can_transition`] is false (including any move out of
    /// a terminal state and any self-loop).
    pub fn transition(self, to: RequestState) -> Result<RequestState, TransitionError> {
        if self.can_transition(to) {
            Ok(to)
        } else {
            Err(TransitionError { from: self, to })
        }
    }
}

impl fmt::Display for RequestState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::RequestState::*;
    use super::*;

    /// The whole 6 × 6 table, written out, so a change to the rules must change this test.
    #[test]
    fn transition_table_is_exactly_the_documented_one() {
        let legal = [
            (Waiting, Prefilling),
            (Waiting, Aborted),
            (Prefilling, Drafting),
            (Prefilling, Finished),
            (Prefilling, Waiting),
            (Prefilling, Aborted),
            (Drafting, Verifying),
            (Drafting, Finished),
            (Drafting, Waiting),
            (Drafting, Aborted),
            (Verifying, Drafting),
            (Verifying, Finished),
            (Verifying, Waiting),
            (Verifying, Aborted),
        ];
        let mut n = 0;
        for from in RequestState::ALL {
            for to in RequestState::ALL {
                let want = legal.contains(&(from, to));
                assert_eq!(from.can_transition(to), want, "{from} -> {to}");
                match from.transition(to) {
                    Ok(s) => {
                        assert!(want);
                        assert_eq!(s, to);
                        n += 1;
                    }
                    Err(e) => {
                        assert!(!want);
                        assert_eq!(e, TransitionError { from, to });
                    }
                }
            }
        }
        assert_eq!(n, legal.len());
    }

    #[test]
    fn terminal_states_have_no_owner_and_no_exit() {
        for s in RequestState::ALL {
            assert_eq!(s.is_terminal(), s.owner().is_none(), "{s}");
            if s.is_terminal() {
                assert!(RequestState::ALL.iter().all(|&t| s.transition(t).is_err()));
            }
        }
    }

    #[test]
    fn each_lane_owns_the_states_it_works_on() {
        assert_eq!(Waiting.owner(), Some(Lane::Prefill));
        assert_eq!(Prefilling.owner(), Some(Lane::Prefill));
        assert_eq!(Drafting.owner(), Some(Lane::Decode));
        assert_eq!(Verifying.owner(), Some(Lane::Verify));
    }

    #[test]
    fn a_full_life_walks_the_machine() {
        let mut s = Waiting;
        for to in [Prefilling, Drafting, Verifying, Drafting, Verifying, Drafting, Finished] {
            s = s.transition(to).unwrap();
        }
        assert!(s.is_terminal());
    }

    #[test]
    fn error_message_names_both_states() {
        let e = Finished.transition(Drafting).unwrap_err();
        assert_eq!(e.to_string(), "illegal request state transition Finished -> Drafting");
    }
}
