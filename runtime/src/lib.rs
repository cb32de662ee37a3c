//! Tempest's production host of the engine: tokio, SQLite, HTTP.
//!
//! Owns everything that touches the real world on behalf of the engine. It never decides
//! anything about a run: it only carries out the engine's effects.

pub mod llm;
pub mod web;
