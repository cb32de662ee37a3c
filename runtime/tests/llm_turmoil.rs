//! Groundwork for the full-stack mode: the runtime's real LLM client, unchanged, talks to the
//! mock provider across two turmoil hosts over turmoil's simulated TCP, in virtual time, and
//! a partition between them turns into the same `Failure` a real network outage gives.
//!
//! The only simulation-specific code is the connector (turmoil's `TcpStream` behind hyper's
//! connector interface) and the listener the mock is served on, both in `fullstack::net`;
//! everything between them is the production code.

use serde_json::json;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tempest_engine::services::{LlmRequest, Message};
use tempest_engine::Failure;
use tempest_runtime::fullstack::net::{TurmoilConnector, TurmoilListener};
use tempest_runtime::llm::mock_server::{MockServer, Reply};
use tempest_runtime::llm::{Config, LlmClient};

const LLM_HOST: &str = "llm";
const LLM_PORT: u16 = 8080;

fn request(question: &str) -> LlmRequest {
    LlmRequest {
        model: "logical-model".to_owned(),
        messages: vec![Message::user(question)],
        tools: vec!["search".to_owned()],
        json_output: true,
        token_count: 50,
    }
}

#[test]
fn llm_client_over_turmoil_survives_a_partition() -> turmoil::Result {
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(300))
        .min_message_latency(Duration::from_millis(5))
        .max_message_latency(Duration::from_millis(50))
        .build();

    let mock = MockServer::new();
    mock.push(Reply::tool_call("search", json!({"query": "turmoil"})));
    let served = mock.clone();
    sim.host(LLM_HOST, move || {
        let router = served.router();
        async move {
            let listener = turmoil::net::TcpListener::bind(("0.0.0.0", LLM_PORT)).await?;
            axum::serve(TurmoilListener(listener), router).await?;
            Ok(())
        }
    });

    sim.client("worker", async move {
        let mut config = Config::new(&format!("http://{LLM_HOST}:{LLM_PORT}/v1"), "mock-model")?;
        config.timeout = Duration::from_secs(5);
        let client = LlmClient::with_connector(config, TurmoilConnector);

        let first = client.complete(&request("first")).await;
        let first = first.map_err(|f| format!("before the partition: {f}"))?;
        assert_eq!(first.tool_calls.len(), 1);
        assert_eq!(first.tool_calls[0].name, "search");

        // The pooled connection and any new one are cut: the request is lost on the way,
        // and the client's timeout (virtual time, so no wall-clock wait) ends it.
        turmoil::partition("worker", LLM_HOST);
        let during = client.complete(&request("during")).await;
        assert_eq!(during.unwrap_err(), Failure::TimedOut);

        turmoil::repair("worker", LLM_HOST);
        let after = client.complete(&request("after")).await.map_err(|f| format!("after the repair: {f}"))?;
        assert_eq!(after.content, r#"{"answer":"mock answer to: after"}"#);
        Ok(())
    });

    sim.run()?;
    let questions: Vec<String> =
        mock.received().iter().map(|r| r.body["messages"][0]["content"].as_str().unwrap_or("").to_owned()).collect();
    assert_eq!(questions, ["first", "after"], "the partitioned request never reached the provider");
    Ok(())
}

/// Phases of the restart test, shared by the client host and the driver loop.
const PHASE_ANSWERED: u8 = 1;
const PHASE_RESTARTED: u8 = 2;

#[test]
fn llm_client_over_turmoil_recovers_when_the_provider_restarts() -> turmoil::Result {
    let mut sim = turmoil::Builder::new().simulation_duration(Duration::from_secs(300)).build();
    let mock = MockServer::new();
    let served = mock.clone();
    sim.host(LLM_HOST, move || {
        let router = served.router();
        async move {
            let listener = turmoil::net::TcpListener::bind(("0.0.0.0", LLM_PORT)).await?;
            axum::serve(TurmoilListener(listener), router).await?;
            Ok(())
        }
    });

    let phase = Arc::new(AtomicU8::new(0));
    let client_phase = phase.clone();
    sim.client("worker", async move {
        let mut config = Config::new(&format!("http://{LLM_HOST}:{LLM_PORT}/v1"), "mock-model")?;
        config.timeout = Duration::from_secs(5);
        let client = LlmClient::with_connector(config, TurmoilConnector);
        client.complete(&request("before")).await.map_err(|f| format!("before the restart: {f}"))?;
        client_phase.store(PHASE_ANSWERED, Ordering::SeqCst);
        while client_phase.load(Ordering::SeqCst) != PHASE_RESTARTED {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The pooled connection died with the provider's process. What the engine would
        // see, attempt by attempt: retryable failures at most, then answers again, from the
        // same client.
        let mut outcomes = Vec::new();
        for attempt in 1..=4 {
            outcomes.push(client.complete(&request(&format!("after {attempt}"))).await);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        for outcome in &outcomes {
            if let Err(failure) = outcome {
                assert!(failure.is_retryable(), "{failure:?} in {outcomes:?}");
            }
        }
        // Only the request that found the dead connection fails; the pool then reconnects.
        assert!(outcomes[1..].iter().all(Result::is_ok), "{outcomes:?}");
        Ok(())
    });

    while !sim.step()? {
        if phase.load(Ordering::SeqCst) == PHASE_ANSWERED {
            sim.bounce(LLM_HOST);
            phase.store(PHASE_RESTARTED, Ordering::SeqCst);
        }
    }
    assert_eq!(phase.load(Ordering::SeqCst), PHASE_RESTARTED, "the provider was restarted");
    let answered = mock.received().len();
    assert!(answered >= 2, "{answered} requests reached the provider");
    Ok(())
}

#[test]
fn llm_client_over_turmoil_sees_a_crashed_provider_as_unreachable() -> turmoil::Result {
    let mut sim = turmoil::Builder::new().simulation_duration(Duration::from_secs(60)).build();
    // A host with nothing listening on the port: connecting is refused.
    sim.host(LLM_HOST, || async {
        std::future::pending::<()>().await;
        Ok(())
    });
    sim.client("worker", async move {
        let mut config = Config::new(&format!("http://{LLM_HOST}:{LLM_PORT}/v1"), "mock-model")?;
        config.timeout = Duration::from_secs(5);
        let client = LlmClient::with_connector(config, TurmoilConnector);
        let failure = client.complete(&request("anyone?")).await.unwrap_err();
        assert!(
            matches!(&failure, Failure::Application { kind, .. } if kind == "llm_unreachable"),
            "expected unreachable, got {failure:?}"
        );
        Ok(())
    });
    sim.run()
}
