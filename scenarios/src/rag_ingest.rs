//! `rag_ingest`: scheduled document ingestion for retrieval. Each pass lists a source's
//! documents, splits them into chunks, fans the chunks out to embedding activities under the
//! model's rate limit, fans the vectors back in and writes them to a vector index under a
//! key derived from the chunk's content, so re-running ingestion of the same document writes
//! nothing twice.
//!
//! Owns the workflow (a nightly job of several passes, and a manual re-run of the same
//! source), its activities (`list_documents`, `embed`, `index_write`), the scripted document
//! store, embedding model and index, and the business checks: every chunk of every document
//! an ingestion finished is in the index, with its own embedding; no chunk is written twice.
//!
//! Its workflow never does I/O of its own and never writes a chunk under a key of its own run.

use crate::common::{self, chat, LLM_KEY_NAME, LLM_TIMEOUT, MODEL};
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tempest_engine::hash::hash_parts;
use tempest_engine::services::{Activities, ActivityCtx, LlmRequest, LlmResponse, Message};
use tempest_engine::{Ctx, Failure, Registry, Time, WorkflowResult};
use tempest_sim::rng::Rng;
use tempest_sim::scenario::{Finished, Scenario, Start, ToolOutcome};

/// Embedding activities in flight at once per ingestion: a large document must not flood
/// the workers' queue ahead of everyone else's work.
const FAN_OUT_MAX: usize = 4;
const EMBEDDING_LEN: usize = 4;
const TOKENS_PER_CHUNK: u64 = 250;
const EMBED_PROMPT: &str = "Embed this passage.";
const PASS_INTERVAL: Duration = Duration::from_secs(4 * 3600);

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct IngestInput {
    pub(crate) source: String,
    pub(crate) pass_count: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct PassReport {
    pub(crate) documents: u32,
    pub(crate) chunks: u32,
    /// Chunks embedded in this pass (the others were unchanged since an earlier pass).
    pub(crate) embedded: u32,
    /// Chunks this run wrote first; the rest were already in the index.
    pub(crate) written: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Document {
    pub(crate) doc: String,
    pub(crate) text: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Chunk {
    pub(crate) doc: String,
    pub(crate) hash: String,
    pub(crate) text: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct IndexEntry {
    pub(crate) chunk: Chunk,
    pub(crate) embedding: Vec<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct IndexWrite {
    pub(crate) writer: String,
    pub(crate) entries: Vec<IndexEntry>,
}

/// Splits a document into chunks named by a hash of their content.
pub(crate) fn chunks_of(document: &Document) -> Vec<Chunk> {
    document
        .text
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| Chunk {
            doc: document.doc.clone(),
            hash: format!("{:016x}", hash_parts(&[&document.doc, line])),
            text: line.to_owned(),
        })
        .collect()
}

/// The scripted embedding model's vector for `text`: a pure function of the text, so the
/// check can tell whether a chunk was indexed with its own vector.
pub(crate) fn embedding_of(text: &str) -> Vec<f64> {
    (0..EMBEDDING_LEN).map(|i| (hash_parts(&[text, &i.to_string()]) % 1000) as f64 / 1000.0).collect()
}

/// Embeds `chunks`, at most `FAN_OUT_MAX` at a time, and pairs each with its own vector.
async fn embed_all(ctx: &Ctx, chunks: Vec<Chunk>) -> WorkflowResult<Vec<IndexEntry>> {
    let mut entries = Vec::new();
    for batch in chunks.chunks(FAN_OUT_MAX) {
        let calls = batch.iter().map(|chunk| {
            ctx.activity::<Vec<f64>>("embed", &chunk.text)
                .retry(common::llm_retry())
                .start_to_close(LLM_TIMEOUT)
                .rate_limit(LLM_KEY_NAME, TOKENS_PER_CHUNK)
                .start()
        });
        let vectors = join_all(calls.collect::<Vec<_>>()).await;
        for (chunk, vector) in batch.iter().zip(vectors) {
            entries.push(IndexEntry { chunk: chunk.clone(), embedding: vector? });
        }
    }
    Ok(entries)
}

/// The ingestion job as a user writes it: `pass_count` passes, `PASS_INTERVAL` apart.
pub(crate) async fn rag_ingest(ctx: Ctx, input: IngestInput) -> WorkflowResult<Vec<PassReport>> {
    // Chunks this run already indexed: unchanged documents are not embedded again.
    let mut indexed: BTreeSet<String> = BTreeSet::new();
    let mut reports = Vec::new();
    for pass in 0..input.pass_count {
        if pass > 0 {
            ctx.sleep(PASS_INTERVAL).await?;
        }
        let documents: Vec<Document> = ctx
            .activity("list_documents", &json!({ "source": input.source, "pass": pass }))
            .retry(common::tool_retry())
            .start_to_close(Duration::from_secs(60))
            .await?;
        let mut report = PassReport { documents: documents.len() as u32, chunks: 0, embedded: 0, written: 0 };
        for document in &documents {
            let chunks = chunks_of(document);
            report.chunks += chunks.len() as u32;
            let new: Vec<Chunk> = chunks.into_iter().filter(|c| !indexed.contains(&c.hash)).collect();
            if new.is_empty() {
                continue;
            }
            report.embedded += new.len() as u32;
            let entries = embed_all(&ctx, new).await?;
            let hashes: Vec<String> = entries.iter().map(|e| e.chunk.hash.clone()).collect();
            let written: u32 = ctx
                .activity("index_write", &IndexWrite { writer: ctx.workflow_id(), entries })
                .retry(common::tool_retry())
                .start_to_close(Duration::from_secs(60))
                .await?;
            report.written += written;
            indexed.extend(hashes);
        }
        reports.push(report);
    }
    Ok(reports)
}

async fn list_documents(ctx: ActivityCtx, request: Value) -> Result<Vec<Document>, Failure> {
    let answer = ctx.tool("list_documents", request).await?;
    serde_json::from_value(answer).map_err(|e| Failure::Application {
        kind: "bad_answer".to_owned(),
        message: format!("document store answered something else: {e}"),
    })
}

async fn embed(ctx: ActivityCtx, text: String) -> Result<Vec<f64>, Failure> {
    let request = LlmRequest {
        model: MODEL.to_owned(),
        messages: vec![Message::system(EMBED_PROMPT), Message::user(text)],
        tools: Vec::new(),
        json_output: true,
        token_count: TOKENS_PER_CHUNK,
    };
    let response = chat(&ctx, request).await?;
    let answer: Value =
        serde_json::from_str(&response.content).map_err(|e| Failure::InvalidOutput { message: e.to_string() })?;
    let vector: Vec<f64> = serde_json::from_value(answer["embedding"].clone())
        .map_err(|e| Failure::InvalidOutput { message: format!("field `embedding`: {e}") })?;
    if vector.len() != EMBEDDING_LEN {
        return Err(Failure::InvalidOutput { message: format!("embedding has {} dimensions", vector.len()) });
    }
    Ok(vector)
}

/// Upserts each entry under a key of its content, not of this attempt: whoever writes a chunk
/// first writes it, and every later write of the same chunk, from any run, is a no-op.
async fn index_write(ctx: ActivityCtx, write: IndexWrite) -> Result<u32, Failure> {
    let mut written = 0;
    for entry in write.entries {
        let key = format!("index/{}/{}", entry.chunk.doc, entry.chunk.hash);
        let arguments = json!({ "entry": entry, "writer": write.writer });
        let answer = ctx.tool_with_key("index_upsert", arguments, Some(key)).await?;
        if answer["writer"].as_str() == Some(write.writer.as_str()) {
            written += 1;
        }
    }
    Ok(written)
}

pub(crate) fn register(registry: &mut Registry) {
    registry.register("rag_ingest", rag_ingest);
}

pub(crate) fn activities() -> Activities {
    let mut activities = Activities::new();
    activities.register("list_documents", list_documents).register("embed", embed).register("index_write", index_write);
    activities
}

/// The text of `doc` at `version`: a few passages, some shared by every version.
fn document_text(doc: &str, version: u64, passage_count: u64) -> String {
    (0..passage_count)
        .map(|p| if p == 0 { format!("{doc} passage {p} (v{version})") } else { format!("{doc} passage {p}") })
        .collect::<Vec<_>>()
        .join("\n")
}

pub(crate) struct RagIngest;

impl Scenario for RagIngest {
    fn name(&self) -> &'static str {
        "rag_ingest"
    }

    fn description(&self) -> &'static str {
        "scheduled ingestion fans chunks out to rate-limited embeddings and indexes each chunk once"
    }

    fn registry(&self) -> Registry {
        common::registry_with(register)
    }

    fn activities(&self) -> Activities {
        activities()
    }

    fn workload(&self, rng: &mut Rng) -> Vec<Start> {
        let source = format!("kb-{}", rng.below(100));
        vec![
            Start {
                at: Time(rng.below(60_000)),
                workflow_id: format!("ingest-{source}-nightly"),
                workflow_type: "rag_ingest".to_owned(),
                input: json!({ "source": source, "pass_count": 2 }),
            },
            // Someone re-runs ingestion of the same source by hand while the job is running.
            Start {
                at: Time(rng.below(3_600_000)),
                workflow_id: format!("ingest-{source}-manual"),
                workflow_type: "rag_ingest".to_owned(),
                input: json!({ "source": source, "pass_count": 1 }),
            },
        ]
    }

    fn llm_answer(&self, request: &LlmRequest, _rng: &mut Rng) -> LlmResponse {
        let text = request.messages.last().map(|m| m.content.as_str()).unwrap_or_default();
        LlmResponse {
            content: json!({ "embedding": embedding_of(text) }).to_string(),
            tool_calls: Vec::new(),
            token_count: request.token_count,
        }
    }

    fn tool_call(&self, name: &str, arguments: &Value, rng: &mut Rng) -> ToolOutcome {
        if name == "index_upsert" {
            let entry: Option<IndexEntry> = serde_json::from_value(arguments["entry"].clone()).ok();
            let effect = entry.map(|e| format!("index:{}:{}", e.chunk.doc, e.chunk.hash));
            return ToolOutcome { result: json!({ "writer": arguments["writer"] }), effect };
        }
        // The document store: the first pass sees every document at version 0; later, some
        // documents have changed.
        let source = arguments["source"].as_str().unwrap_or("?");
        let pass = arguments["pass"].as_u64().unwrap_or(0);
        let documents: Vec<Document> = (0..3u64)
            .map(|i| {
                let doc = format!("{source}/doc-{i}");
                let version = if pass == 0 { 0 } else { rng.below(2) };
                Document { text: document_text(&doc, version, 2 + i), doc }
            })
            .collect();
        ToolOutcome { result: json!(documents), effect: None }
    }

    fn liveness_bound(&self) -> Duration {
        Duration::from_secs(12 * 3600)
    }

    fn check(&self, finished: &Finished<'_>) -> Result<(), String> {
        let mut writes: BTreeMap<&str, u32> = BTreeMap::new();
        for effect in finished.tool_effects.iter().filter(|e| e.starts_with("index:")) {
            *writes.entry(effect).or_default() += 1;
        }
        if let Some((effect, count)) = writes.iter().find(|(_, count)| **count > 1) {
            return Err(format!("chunk {effect} was written to the index {count} times"));
        }
        for history in finished.histories {
            for (_, write) in common::scheduled(history, "index_write") {
                let write: IndexWrite = serde_json::from_value(write.clone())
                    .map_err(|e| format!("run {}: index write {write} does not decode: {e}", history.run_id))?;
                for entry in &write.entries {
                    if entry.embedding != embedding_of(&entry.chunk.text) {
                        return Err(format!(
                            "run {}: chunk {} of {} is indexed with another chunk's embedding",
                            history.run_id, entry.chunk.hash, entry.chunk.doc
                        ));
                    }
                }
            }
            if common::completed_output::<Vec<PassReport>>(history)?.is_none() {
                continue;
            }
            // Every chunk of every document a finished ingestion listed is in the index.
            for (seq, _) in common::scheduled(history, "list_documents") {
                let listed = history.events.iter().find_map(|e| match &e.kind {
                    tempest_engine::Kind::ActivityCompleted { seq: s, output, .. } if *s == seq => Some(output),
                    _ => None,
                });
                let documents: Vec<Document> = listed
                    .map(|output| output.decode())
                    .transpose()
                    .map_err(|e| format!("run {}: listed documents do not decode: {e}", history.run_id))?
                    .unwrap_or_default();
                for chunk in documents.iter().flat_map(chunks_of) {
                    if !writes.contains_key(format!("index:{}:{}", chunk.doc, chunk.hash).as_str()) {
                        return Err(format!(
                            "run {}: finished, but chunk {} of {} is not in the index",
                            history.run_id, chunk.hash, chunk.doc
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, WithWorkflows};

    #[test]
    fn reingesting_the_same_documents_writes_each_chunk_once() {
        for seed in 0..3 {
            let outcome = testing::run_passing(&RagIngest, seed);
            let mut written_chunks = BTreeSet::new();
            let (mut embedded, mut written) = (0, 0);
            for history in &outcome.histories {
                for (_, write) in common::scheduled(history, "index_write") {
                    let write: IndexWrite = serde_json::from_value(write.clone()).unwrap();
                    written_chunks.extend(write.entries.into_iter().map(|e| e.chunk.hash));
                }
                let reports: Vec<PassReport> = common::completed_output(history).unwrap().expect("ingestion ends");
                embedded += reports.iter().map(|r| r.embedded).sum::<u32>();
                written += reports.iter().map(|r| r.written).sum::<u32>();
            }
            // Each chunk has exactly one first writer, though both runs ingested it.
            assert_eq!(written as usize, written_chunks.len(), "seed {seed}");
            assert!(embedded > written, "seed {seed}: the re-run found nothing already indexed");
        }
    }

    /// Fans the vectors back in in the wrong order.
    async fn mixed_up_fan_in(ctx: Ctx, input: IngestInput) -> WorkflowResult<Vec<PassReport>> {
        let documents: Vec<Document> = ctx
            .activity("list_documents", &json!({ "source": input.source, "pass": 0 }))
            .retry(common::tool_retry())
            .await?;
        let mut report = PassReport { documents: documents.len() as u32, chunks: 0, embedded: 0, written: 0 };
        for document in &documents {
            let chunks = chunks_of(document);
            let mut entries = embed_all(&ctx, chunks).await?;
            let mut vectors: Vec<Vec<f64>> = entries.iter().map(|e| e.embedding.clone()).collect();
            vectors.reverse();
            for (entry, vector) in entries.iter_mut().zip(vectors) {
                entry.embedding = vector;
            }
            report.embedded += entries.len() as u32;
            let write = IndexWrite { writer: ctx.workflow_id(), entries };
            report.written += ctx.activity::<u32>("index_write", &write).retry(common::tool_retry()).await?;
        }
        Ok(vec![report])
    }

    #[test]
    fn ingestion_mixing_up_embeddings_at_fan_in_fails_its_check() {
        let broken = WithWorkflows {
            scenario: RagIngest,
            register: |registry| {
                registry.register("rag_ingest", mixed_up_fan_in);
            },
        };
        let outcome = testing::first_failure(&broken, 5).expect("the first seed fails");
        let failure = outcome.failure.expect("failed");
        assert_eq!(failure.check, "check_rag_ingest_outcome", "{}", failure.message);
        assert!(failure.message.contains("another chunk's embedding"), "{}", failure.message);
    }
}
