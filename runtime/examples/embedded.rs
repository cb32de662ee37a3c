//! Embedding the runtime in your own binary: your workflows, your activities, a SQLite file,
//! and (optionally) the HTTP API. Run: `cargo run -p tempest-runtime --example embedded`.

use std::io::Write;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tempest_engine::services::{Activities, ActivityCtx};
use tempest_engine::{Ctx, Failure, Registry, RetryPolicy, WorkflowResult};
use tempest_runtime::services::{LlmBackend, MockLlm};
use tempest_runtime::{host, sqlite, Host, RunStore};

/// A workflow of your own: shout a name, durably.
async fn greet(ctx: Ctx, name: String) -> WorkflowResult<String> {
    let loud: String = ctx.activity("shout", &name).retry(RetryPolicy::attempts(3)).await?;
    ctx.sleep(Duration::from_millis(10)).await?;
    Ok(format!("hello, {loud}!"))
}

async fn shout(_ctx: ActivityCtx, name: String) -> Result<String, Failure> {
    Ok(name.to_uppercase())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut registry = Registry::new();
    registry.register("greet", greet);
    let mut activities = Activities::new();
    activities.register("shout", shout);

    let dir = std::env::temp_dir().join(format!("tempest-embedded-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let io = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (store, _journal) = io.block_on(sqlite::open_store(&dir.join("app.db"), Default::default()))?;
    let store: Arc<dyn RunStore> = Arc::new(store);

    let llm = Box::new(|| Rc::new(MockLlm::new(0)) as Rc<dyn LlmBackend>);
    let host = Host::start(store.clone(), host::Config::new(registry, vec![activities], llm), None)?;
    let result = io.block_on(async {
        store.start(host::now(), "greet-1", "greet", serde_json::json!("ada")).await?;
        store.wait_closed("greet-1").await
    })?;
    if let Some(run) = result {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{} {}: {}", run.workflow_id, run.status, run.result.unwrap_or_default())?;
    }
    host.stop();
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
