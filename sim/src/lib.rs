//! The seeded world that runs Tempest's engine under faults.
//!
//! Owns the simulated universe of one seed: its randomness, its agenda and virtual clock, and
//! the network, disk, LLM provider, tools and humans the engine talks to, with the faults each
//! can inject; the checks that judge a world; and sweeps over many seeds. It never reads a
//! real clock, draws OS randomness or iterates a hash map, so one seed gives the same world
//! bit for bit. It reaches the engine only through its public API.

pub mod agenda;
pub mod check;
pub mod disk;
pub mod human;
pub mod llm;
pub mod net;
pub mod plan;
pub mod rng;
pub mod scenario;
pub mod shrink;
pub mod swarm;
pub mod tool;
pub mod world;

pub use plan::FaultPlan;
pub use scenario::Scenario;
pub use world::{shrink_failure, CheckFailure, Options, Outcome, World};
