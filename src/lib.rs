//! Verify-PD engine.
