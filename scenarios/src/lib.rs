//! Built-in scenarios: real AI workflows, each with the world it runs in.
//!
//! Owns the workflows (written against the engine's public API exactly as users write
//! them), their activities, and each scenario's scripted LLM, tools, humans and business
//! checks. It never reaches into the simulator's internals: the `Scenario` trait is the
//! whole interface.

mod agent_loop;
mod common;
pub mod hello_llm;
pub mod human_approval;

use tempest_engine::Registry;
use tempest_sim::Scenario;

/// Every built-in scenario, in the order `tempest scenarios` lists them.
pub fn all() -> Vec<Box<dyn Scenario>> {
    vec![Box::new(hello_llm::HelloLlm), Box::new(agent_loop::AgentLoop), Box::new(human_approval::HumanApproval)]
}

/// The scenario called `name`.
pub fn find(name: &str) -> Option<Box<dyn Scenario>> {
    all().into_iter().find(|s| s.name() == name)
}

/// Every built-in workflow type, for replaying recorded histories.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    hello_llm::register(&mut registry);
    agent_loop::register(&mut registry);
    human_approval::register(&mut registry);
    registry
}
