//! Tempest's production host: the engine's store protocol and workers on tokio, a durable
//! SQLite store, an HTTP API and its client.
//!
//! Owns everything that touches the wall clock, the disk and the network in production:
//! `store` (the `RunStore` seam and `DurableStore`), `sqlite` (the journal with group
//! commit), `host` (the worker thread that drives the protocol), `services` (the LLM seam and
//! built-in tools), `http` (the API), `client` (its HTTP client), `builtin` (the `steps`
//! workflow of the benchmark and crash test), `llm` (the OpenAI-compatible client and a mock
//! provider), `web` (the page at `/`), `fullstack` (all of it over turmoil's simulated
//! network, clock and crashes, with the simulator's checks). It never decides anything about
//! a run: every decision is the engine's, exactly as in the simulator.
//!
//! Embedding: build a `Registry` and `Activities` of your own, open a store
//! (`sqlite::open_store`), and `host::Host::start` it; `examples/embedded.rs` shows it.

pub mod builtin;
pub mod client;
pub mod conformance;
pub mod fullstack;
pub mod host;
pub mod http;
pub mod llm;
pub mod services;
pub mod sqlite;
pub mod store;
pub mod web;

pub use host::{Config, Host, Http};
pub use store::{DurableStore, RunStore, RunView};
