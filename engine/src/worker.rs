//! The worker's workflow side: turns a workflow task into a conditional append.
//!
//! Owns the sticky cache of live machines (so the normal path does not replay from the
//! start) and the rule for processing a task: feed the inbox inputs to the machine one at a
//! time, interleaving each input with the commands it caused, and stop consuming once the
//! run closes. A machine is cached only after the store accepted its append; a miss or a
//! rejection means replay from the full history. It never talks to the store itself.

use crate::history::Event;
use crate::machine::{self, Machine};
use crate::store::{WorkflowCompletion, WorkflowTask};
use crate::workflow::Registry;
use std::collections::{BTreeMap, VecDeque};

/// What to do with a workflow task.
#[derive(Debug)]
pub enum Outcome {
    Complete(WorkflowCompletion),
    /// The task needs the full history (a sticky delta arrived but the cache lost the run).
    Abandon {
        reason: String,
    },
    /// Replay failed: the code no longer matches the history, or the type is unknown.
    Fail(machine::Error),
}

struct Cached {
    machine: Machine,
    len: u64,
}

/// Live machines of one worker, most recently used last.
pub struct WorkflowWorker {
    registry: Registry,
    cache: BTreeMap<String, Cached>,
    order: VecDeque<String>,
    cache_len_max: usize,
    /// Machines of completions not yet acknowledged, by run id.
    pending: BTreeMap<String, Cached>,
    pub replay_count: u64,
    pub cache_hit_count: u64,
}

impl WorkflowWorker {
    pub fn new(registry: Registry, cache_len_max: usize) -> WorkflowWorker {
        assert!(cache_len_max > 0, "the sticky cache needs room for one run");
        WorkflowWorker {
            registry,
            cache: BTreeMap::new(),
            order: VecDeque::new(),
            cache_len_max,
            pending: BTreeMap::new(),
            replay_count: 0,
            cache_hit_count: 0,
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn cached_len(&self) -> usize {
        self.cache.len()
    }

    /// Processes a task into the events to append.
    pub fn process(&mut self, task: WorkflowTask) -> Outcome {
        let WorkflowTask { run_id, token, base_len, from, history, inbox } = task;
        self.pending.remove(&run_id);
        let mut machine = match self.cache.remove(&run_id) {
            Some(cached) if from > 0 && cached.len == base_len && history.is_empty() => {
                self.cache_hit_count += 1;
                Some(cached.machine)
            }
            _ if from > 0 => {
                return Outcome::Abandon {
                    reason: format!("run {run_id}: sticky cache has no machine at event {base_len}"),
                }
            }
            _ if history.is_empty() => None,
            _ => {
                self.replay_count += 1;
                match Machine::replay(&self.registry, &history) {
                    Ok((machine, extra)) => {
                        assert!(extra.is_empty(), "run {run_id}: a stored history ends mid-decision");
                        Some(machine)
                    }
                    Err(error) => return Outcome::Fail(error),
                }
            }
        };
        self.order.retain(|r| *r != run_id);
        let mut events = Vec::new();
        let mut consumed = 0;
        for (time, kind) in inbox {
            if machine.as_ref().is_some_and(Machine::is_closed) {
                break;
            }
            let index = base_len + events.len() as u64;
            let input = Event { index, time_ms: time, kind };
            let commands = match machine.as_mut() {
                Some(machine) => machine.apply(&input),
                None => match Machine::new(&self.registry, &input) {
                    Ok((started, commands)) => {
                        machine = Some(started);
                        Ok(commands)
                    }
                    Err(error) => Err(error),
                },
            };
            let commands = match commands {
                Ok(commands) => commands,
                Err(error) => return Outcome::Fail(error),
            };
            events.push(input);
            consumed += 1;
            for kind in commands {
                let index = base_len + events.len() as u64;
                events.push(Event { index, time_ms: time, kind });
            }
        }
        let machine = machine.expect("a task starts with workflow_started or a history");
        let len = base_len + events.len() as u64;
        if !machine.is_closed() {
            self.pending.insert(run_id.clone(), Cached { machine, len });
        }
        Outcome::Complete(WorkflowCompletion { run_id, token, base_len, events, consumed })
    }

    /// The store's answer to a completion: cache the machine only if it was accepted.
    pub fn acknowledged(&mut self, run_id: &str, accepted: bool) {
        let Some(cached) = self.pending.remove(run_id) else {
            return;
        };
        if !accepted {
            return;
        }
        self.cache.insert(run_id.to_owned(), cached);
        self.order.push_back(run_id.to_owned());
        while self.cache.len() > self.cache_len_max {
            let evicted = self.order.pop_front().expect("order tracks the cache");
            self.cache.remove(&evicted);
        }
    }

    /// Drops a run from the cache (e.g. its task was taken over by another worker).
    pub fn evict(&mut self, run_id: &str) {
        self.cache.remove(run_id);
        self.pending.remove(run_id);
        self.order.retain(|r| r != run_id);
    }

    pub fn query(
        &self,
        run_id: &str,
        name: &str,
        args: &serde_json::Value,
    ) -> Option<Result<serde_json::Value, machine::Error>> {
        self.cache.get(run_id).map(|c| c.machine.query(name, args))
    }
}
