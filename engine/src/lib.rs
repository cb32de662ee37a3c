//! Tempest's engine: the pure core of durable execution.
//!
//! Owns workflows as code, histories, the replay machine and retry policy. It never performs
//! I/O, reads a clock, draws OS randomness, spawns threads or iterates a hash map: the host
//! hands it time and inputs and carries out the effects it answers with.

pub mod hash;
pub mod time;

pub use time::Time;
