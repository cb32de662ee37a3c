//! Tempest's engine: the pure core of durable execution.
//!
//! Owns workflows as code (`workflow`), histories (`history`), the replay machine
//! (`machine`), run bookkeeping (`run`), retry policy (`retry`) and the sans-io host
//! interface (`engine`). It never performs I/O, reads a clock, draws OS randomness, spawns
//! threads or iterates a hash map: the host hands it time and inputs and carries out the
//! effects it answers with.

pub mod activity;
pub mod engine;
pub mod hash;
pub mod history;
pub mod machine;
pub mod ratelimit;
pub mod retry;
pub mod run;
pub mod services;
pub mod store;
pub mod time;
pub mod worker;
pub mod workflow;

#[doc(hidden)]
pub mod testing;

pub use activity::Failure;
pub use engine::{ActivityTask, Effect, Engine, Input, TimerId};
pub use history::{Event, History, Kind, Payload};
pub use machine::{Machine, Nondeterminism};
pub use retry::RetryPolicy;
pub use run::RunState;
pub use time::Time;
pub use workflow::{Ctx, Registry, WorkflowError, WorkflowResult};

#[cfg(test)]
mod tests;
