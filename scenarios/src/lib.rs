//! Built-in AI workflows and the registry the `tempest` binary replays and runs them with.
//!
//! For now it holds one tiny workflow, `hello_llm`, so that `tempest replay` has real code to
//! replay against; the scenarios and their simulated worlds replace it. It never performs I/O:
//! activities are carried out by whichever host drives the engine.

use tempest_engine::{Ctx, Registry, RetryPolicy, WorkflowResult};

/// Every built-in workflow, by type name.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    registry.register("hello_llm", hello_llm);
    registry
}

/// Asks the `llm` activity to answer `prompt` and returns its answer.
pub async fn hello_llm(ctx: Ctx, prompt: String) -> WorkflowResult<String> {
    let answer: String = ctx
        .activity("llm", &prompt)
        .retry(RetryPolicy::attempts(3))
        .await?;
    Ok(answer)
}
