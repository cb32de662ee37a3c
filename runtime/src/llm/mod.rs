//! The LLM half of the runtime's `Services`: an OpenAI-compatible chat-completions client over
//! hyper, and a mock server that speaks the same protocol for tests.
//!
//! Owns talking to LLM providers and classifying what they answer into the engine's
//! `Failure` kinds. It never retries and never records anything: the engine decides about
//! attempts, and the store records their outcomes.

pub mod client;
pub mod config;
pub mod mock_server;
pub mod wire;

pub use client::LlmClient;
pub use config::Config;
