//! Test helpers for the scenarios' own tests: run one world with its histories kept, and
//! swap a scenario's workflow code for a deliberately broken variant.
//!
//! Owns nothing the scenarios ship; it exists only under `cfg(test)`.

use serde_json::Value;
use std::time::Duration;
use tempest_engine::services::{Activities, LlmRequest, LlmResponse};
use tempest_engine::Registry;
use tempest_sim::rng::Rng;
use tempest_sim::scenario::{Finished, HumanAnswer, Scenario, Start, ToolOutcome};
use tempest_sim::world::{self, Options, Outcome};

/// Runs the swarm world of `seed`, keeping every history.
pub(crate) fn run(scenario: &dyn Scenario, seed: u64) -> Outcome {
    let mut options = Options::swarm(seed);
    options.keep_histories = true;
    world::run_catching(scenario, options)
}

/// Runs `seed` and fails the test with the check's message if the world failed.
pub(crate) fn run_passing(scenario: &dyn Scenario, seed: u64) -> Outcome {
    let outcome = run(scenario, seed);
    if let Some(failure) = &outcome.failure {
        panic!("{} seed {seed}: {}: {}", scenario.name(), failure.check, failure.message);
    }
    outcome
}

/// The first seed below `seed_count_max` whose world fails, with its outcome.
pub(crate) fn first_failure(scenario: &dyn Scenario, seed_count_max: u64) -> Option<Outcome> {
    (0..seed_count_max).map(|seed| run(scenario, seed)).find(|outcome| !outcome.passed())
}

/// A scenario whose workflows are registered by `register` instead of its own: everything
/// else, its checks included, is the real scenario's.
pub(crate) struct WithWorkflows<S> {
    pub(crate) scenario: S,
    pub(crate) register: fn(&mut Registry),
}

impl<S: Scenario> Scenario for WithWorkflows<S> {
    fn name(&self) -> &'static str {
        self.scenario.name()
    }

    fn description(&self) -> &'static str {
        self.scenario.description()
    }

    fn registry(&self) -> Registry {
        crate::common::registry_with(self.register)
    }

    fn activities(&self) -> Activities {
        self.scenario.activities()
    }

    fn workload(&self, rng: &mut Rng) -> Vec<Start> {
        self.scenario.workload(rng)
    }

    fn llm_answer(&self, request: &LlmRequest, rng: &mut Rng) -> LlmResponse {
        self.scenario.llm_answer(request, rng)
    }

    fn tool_call(&self, name: &str, arguments: &Value, rng: &mut Rng) -> ToolOutcome {
        self.scenario.tool_call(name, arguments, rng)
    }

    fn human_answer(&self, arguments: &Value, rng: &mut Rng) -> Option<HumanAnswer> {
        self.scenario.human_answer(arguments, rng)
    }

    fn liveness_bound(&self) -> Duration {
        self.scenario.liveness_bound()
    }

    fn check(&self, finished: &Finished<'_>) -> Result<(), String> {
        self.scenario.check(finished)
    }

    fn sometimes(&self, finished: &Finished<'_>) -> Vec<&'static str> {
        self.scenario.sometimes(finished)
    }
}
