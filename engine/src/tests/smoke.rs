//! Smoke test: one run through retry, a year-long timer and a signal, then replay.

use crate::activity::Failure;
use crate::retry::RetryPolicy;
use crate::testing::Host;
use crate::workflow::{Ctx, Registry, WorkflowResult};
use serde_json::json;
use std::time::Duration;

async fn summarize(ctx: Ctx, doc: String) -> WorkflowResult<String> {
    let summary: String = ctx.activity("llm", &doc).retry(RetryPolicy::attempts(5)).await?;
    ctx.sleep(Duration::from_secs(365 * 86_400)).await?;
    let approved: bool = ctx.signal("approve").await?;
    Ok(format!("{summary} approved={approved}"))
}

#[test]
fn smoke_retry_timer_signal() {
    let mut registry = Registry::new();
    registry.register("summarize", summarize);
    let mut host = Host::new(registry);
    let run = host.start("summarize", "wf-1", json!("doc"));
    host.signal("wf-1", "s1", "approve", json!(true));
    let task = host.task("llm");
    host.fail(&task, Failure::RateLimited { retry_after_ms: Some(30_000) });
    let task = host.task("llm");
    assert_eq!(task.attempt, 2);
    assert_eq!(task.not_before.0, 30_000);
    host.complete(&task, json!("short"));
    host.fire_next_timer();
    let rendered = host.render(&run);
    assert!(rendered.contains("workflow_completed output=\"short approved=true\""), "{rendered}");
    // Replay reproduces the history without new commands.
    let events = host.appended[&run].clone();
    let (_, extra) = crate::machine::Machine::replay(host.engine.registry(), &events).unwrap();
    assert!(extra.is_empty());
}

/// A store rebuilt from the records of any prefix of a history holds exactly that prefix,
/// with the same run state a fold over it gives: the seam a fork starts its world from.
#[test]
fn store_recovers_every_history_prefix_from_its_records() {
    use crate::run::RunState;
    use crate::store::{self, Record, Store};
    let mut registry = Registry::new();
    registry.register("summarize", summarize);
    let mut host = Host::new(registry);
    let run = host.start("summarize", "wf-1", json!("doc"));
    host.signal("wf-1", "s1", "approve", json!(true));
    let task = host.task("llm");
    host.fail(&task, Failure::RateLimited { retry_after_ms: Some(30_000) });
    let task = host.task("llm");
    host.complete(&task, json!("short"));
    host.fire_next_timer();
    let events = host.events(&run);
    assert!(events.len() >= 8, "{}", host.render(&run));
    for len in 1..=events.len() {
        let prefix = &events[..len];
        let (store, _) = Store::recover(store::Config::default(), Record::of_history(prefix));
        let stored = store.run(&run).unwrap_or_else(|| panic!("prefix of {len}: no run"));
        // A last input with no command after it waits in the inbox for the code to react.
        let waiting = usize::from(!prefix[len - 1].kind.is_command());
        assert_eq!(stored.events, prefix[..len - waiting], "prefix of {len}");
        let inbox: Vec<_> = prefix[len - waiting..].iter().map(|e| (e.time_ms, e.kind.clone())).collect();
        assert_eq!(stored.inbox.iter().cloned().collect::<Vec<_>>(), inbox, "prefix of {len}");
        assert_eq!(stored.logical, RunState::from_events(prefix).unwrap(), "prefix of {len}");
    }
    assert!(Record::of_history(&[]).is_empty());
}
