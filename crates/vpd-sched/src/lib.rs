//! Device-free scheduling for Verify-PD's three-lane runtime (DESIGN.md, "The three lanes").
//!
//! - [`request`]: the request state machine and which [`Lane`] owns each state.
//! - [`queue`]: bounded lock-free hand-off queues between lanes.
//! - [`priority`]: strict lane priority with anti-starvation bounds.
//! - [`busy`]: a lane's recent busy fraction (decayed), the load the controller reads.
//! - [`cost`]: the online step-cost model (draft time vs batch, verify time vs tokens with a ridge).
//! - [`controller`]: the acceptance-aware draft-length controller (SmartSpec/TurboSpec goodput).
//!
//! Nothing here touches a device or spawns a thread: the engine's lane threads call into these
//! types, and every decision is plain data that tests can check.
#![forbid(unsafe_code)]

pub mod busy;
pub mod controller;
pub mod cost;
pub mod priority;
pub mod queue;
pub mod request;

pub use busy::BusyMeter;
pub use controller::{Controller, ControllerConfig, ControllerError, ControllerStats, Decision, LaneLoad, Objective};
pub use cost::{CostModel, CostPrior};
pub use priority::{LaneReady, PrioritySelector, StarvationBounds};
pub use queue::LaneQueue;
pub use request::{Lane, RequestId, RequestState, TransitionError};
