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
mod long_sleep;
mod multi_agent;
mod rag_ingest;
mod saga_booking;
mod tool_agent;
mod validated_output;

#[cfg(test)]
mod testing;

use tempest_engine::Registry;
use tempest_sim::Scenario;

/// Every built-in scenario, in the order `tempest scenarios` lists them.
pub fn all() -> Vec<Box<dyn Scenario>> {
    vec![
        Box::new(hello_llm::HelloLlm),
        Box::new(agent_loop::AgentLoop),
        Box::new(tool_agent::ToolAgent),
        Box::new(human_approval::HumanApproval),
        Box::new(rag_ingest::RagIngest),
        Box::new(validated_output::ValidatedOutput),
        Box::new(multi_agent::MultiAgent),
        Box::new(saga_booking::SagaBooking),
        Box::new(long_sleep::LongSleep),
    ]
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
    tool_agent::register(&mut registry);
    human_approval::register(&mut registry);
    rag_ingest::register(&mut registry);
    validated_output::register(&mut registry);
    multi_agent::register(&mut registry);
    saga_booking::register(&mut registry);
    long_sleep::register(&mut registry);
    registry
}
