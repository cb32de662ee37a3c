//! The workflow author's API: `Ctx`, the futures it hands out, and the registry of workflows.
//!
//! Owns everything a workflow can do (activities, timers, signals, children, queries,
//! recorded randomness, version markers, continue-as-new, cancellation) as commands on the
//! machine's shared state. Workflow code must only observe the world through `Ctx`: it never
//! reads a clock, draws a random number or does I/O itself, so replay can reproduce it.

use crate::activity::{self, Options};
use crate::hash;
use crate::history::{ChildOutcome, Kind, Marker, Payload};
use crate::machine::{Issued, PendingKind, Resolution, Shared};
use crate::retry::RetryPolicy;
use crate::time::{duration_ms, Time};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// How a workflow ends other than with its output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WorkflowError {
    #[error("{message}")]
    Failed { message: String },
    #[error("{0}")]
    Activity(activity::Error),
    #[error("child workflow {workflow_id} failed: {error}")]
    Child { workflow_id: String, error: String },
    #[error("canceled")]
    Canceled,
    /// Not a failure: the run hands over to a fresh run of the same workflow id.
    #[error("continued as new")]
    ContinueAsNew { input: Payload },
    #[error("payload does not decode: {message}")]
    Payload { message: String },
}

impl WorkflowError {
    pub fn failed(message: impl Into<String>) -> WorkflowError {
        WorkflowError::Failed { message: message.into() }
    }
}

impl From<activity::Error> for WorkflowError {
    fn from(error: activity::Error) -> Self {
        if error.cause == activity::Cause::Canceled {
            return WorkflowError::Canceled;
        }
        WorkflowError::Activity(error)
    }
}

impl From<serde_json::Error> for WorkflowError {
    fn from(error: serde_json::Error) -> Self {
        WorkflowError::Payload { message: error.to_string() }
    }
}

pub type WorkflowResult<T> = Result<T, WorkflowError>;
pub(crate) type WorkflowFuture = Pin<Box<dyn Future<Output = Result<Payload, WorkflowError>>>>;
/// Builds a run's future from its input: the shared payload of the `workflow_started` event.
type Factory = Arc<dyn Fn(Ctx, Payload) -> WorkflowFuture + Send + Sync>;
pub(crate) type QueryHandler = Box<dyn Fn(&Value) -> Value>;

/// Workflow types by name. Cheap to share between threads; each run's future stays on one.
#[derive(Clone, Default)]
pub struct Registry {
    workflows: BTreeMap<String, Factory>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Registers `workflow` under `workflow_type`. Its input is decoded from the run's JSON
    /// input; an input that does not decode fails the run (it is not a panic).
    pub fn register<I, O, F, Fut>(&mut self, workflow_type: &str, workflow: F) -> &mut Self
    where
        I: DeserializeOwned + 'static,
        O: Serialize + 'static,
        F: Fn(Ctx, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = WorkflowResult<O>> + 'static,
    {
        let workflow = Arc::new(workflow);
        let factory: Factory = Arc::new(move |ctx: Ctx, input: Payload| {
            let workflow = workflow.clone();
            Box::pin(async move {
                let input = input.decode::<I>()?;
                let output = workflow(ctx, input).await?;
                Ok(Payload::encode(&output)?)
            })
        });
        self.workflows.insert(workflow_type.to_owned(), factory);
        self
    }

    pub(crate) fn get(&self, workflow_type: &str) -> Option<&Factory> {
        self.workflows.get(workflow_type)
    }

    pub fn contains(&self, workflow_type: &str) -> bool {
        self.workflows.contains_key(workflow_type)
    }

    pub fn workflow_types(&self) -> impl Iterator<Item = &str> {
        self.workflows.keys().map(String::as_str)
    }
}

/// The run id that continue-as-new hands over to: derived, so replay names the same one.
pub fn next_run_id(workflow_id: &str, run_id: &str) -> String {
    format!("r{:012x}", hash::hash_parts(&[workflow_id, run_id, "continue-as-new"]) >> 16)
}

/// The idempotency key of activity `seq` of run `run_id`: the same for every attempt, worker
/// and replay.
pub fn idempotency_key(run_id: &str, seq: u32) -> String {
    // Into one buffer of the right size, not through `format!`: every activity call builds
    // one, on every replay.
    let mut key = String::with_capacity(run_id.len() + 11);
    key.push_str(run_id);
    key.push(':');
    write!(key, "{seq}").expect("writing to a String cannot fail");
    key
}

/// A workflow's handle on the world. Every method is a command recorded in, or replayed
/// from, the run's history.
#[derive(Clone)]
pub struct Ctx {
    shared: Rc<RefCell<Shared>>,
}

impl Ctx {
    pub(crate) fn new(shared: Rc<RefCell<Shared>>) -> Ctx {
        Ctx { shared }
    }

    pub fn workflow_id(&self) -> String {
        self.shared.borrow().workflow_id.clone()
    }

    pub fn run_id(&self) -> String {
        self.shared.borrow().run_id.clone()
    }

    /// Engine time of the event being processed; replay sees the recorded time, so no
    /// marker is needed.
    pub fn now(&self) -> Time {
        self.shared.borrow().now
    }

    /// Whether the code is re-running recorded history (e.g. to skip logging).
    pub fn is_replaying(&self) -> bool {
        !self.shared.borrow().is_live()
    }

    /// A random number, recorded so that replay returns the same one.
    pub fn random(&self) -> u64 {
        let mut shared = self.shared.borrow_mut();
        let seq = shared.next_seq();
        let value = hash::hash_parts(&[&shared.run_id, &seq.to_string(), "random"]);
        match shared.issue(Kind::MarkerRecorded { seq, marker: Marker::Random { value } }) {
            Issued::Recorded(Some(Marker::Random { value: recorded })) => recorded,
            Issued::Recorded(_) | Issued::New | Issued::Diverged => value,
        }
    }

    /// A UUID (version 4 layout), recorded so that replay returns the same one.
    pub fn uuid(&self) -> String {
        let mut shared = self.shared.borrow_mut();
        let seq = shared.next_seq();
        let high = hash::hash_parts(&[&shared.run_id, &seq.to_string(), "uuid-high"]);
        let low = hash::hash_parts(&[&shared.run_id, &seq.to_string(), "uuid-low"]);
        let value = format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            high >> 32,
            (high >> 16) & 0xffff,
            high & 0x0fff,
            (low >> 48) & 0x3fff | 0x8000,
            low & 0xffff_ffff_ffff
        );
        match shared.issue(Kind::MarkerRecorded { seq, marker: Marker::Uuid { value: value.clone() } }) {
            Issued::Recorded(Some(Marker::Uuid { value: recorded })) => recorded,
            Issued::Recorded(_) | Issued::New | Issued::Diverged => value,
        }
    }

    /// Version marker: `true` for runs that take the new code path of `patch_id`, `false`
    /// for runs whose history was recorded before the patch existed.
    pub fn patched(&self, patch_id: &str) -> bool {
        self.shared.borrow_mut().patched(patch_id)
    }

    /// Whether someone asked this run to cancel. Pending activities and timers already
    /// resolved with `Canceled`; code may still run cleanup activities.
    pub fn is_cancel_requested(&self) -> bool {
        self.shared.borrow().cancel_requested
    }

    /// The error to return to end this run and start a fresh one with `input`.
    pub fn continue_as_new(&self, input: &impl Serialize) -> WorkflowError {
        match Payload::encode(input) {
            Ok(input) => WorkflowError::ContinueAsNew { input },
            Err(error) => error.into(),
        }
    }

    /// Answers query `name` with `handler(args)`; handlers read state the workflow shares
    /// with them (e.g. through `Rc<RefCell<_>>`) and must not change it.
    pub fn set_query_handler(&self, name: &str, handler: impl Fn(&Value) -> Value + 'static) {
        self.shared.borrow_mut().queries.insert(name.to_owned(), Box::new(handler));
    }

    /// Answers query `name` with a fixed value until the next call.
    pub fn set_query_value(&self, name: &str, value: &impl Serialize) {
        let value = serde_json::to_value(value).unwrap_or(Value::Null);
        self.set_query_handler(name, move |_| value.clone());
    }

    /// An activity call; options are set on the returned builder, and it runs on `.await`.
    pub fn activity<O: DeserializeOwned>(&self, activity_type: &str, input: &impl Serialize) -> ActivityCall<O> {
        ActivityCall {
            ctx: self.clone(),
            activity_type: activity_type.to_owned(),
            input: Payload::encode(input).unwrap_or_else(|_| Payload::null()),
            options: Options::default(),
            output: PhantomData,
        }
    }

    /// A durable timer of any length; a year costs the same as a second.
    pub fn sleep(&self, duration: Duration) -> Timer {
        let mut shared = self.shared.borrow_mut();
        let seq = shared.next_seq();
        let duration_ms = duration_ms(duration);
        let fire_at_ms = shared.now.plus(duration);
        shared.issue(Kind::TimerStarted { seq, duration_ms, fire_at_ms });
        shared.register(seq, PendingKind::Timer);
        Timer { shared: self.shared.clone(), seq }
    }

    /// Waits for the next signal called `name`. A signal that arrived before this wait is
    /// buffered and returned at once.
    pub fn signal<T: DeserializeOwned>(&self, name: &str) -> SignalWait<T> {
        SignalWait { shared: self.shared.clone(), name: name.to_owned(), output: PhantomData }
    }

    /// Waits for signal `name` at most `timeout`; `Ok(None)` when the time ran out.
    pub async fn signal_timeout<T: DeserializeOwned>(
        &self,
        name: &str,
        timeout: Duration,
    ) -> WorkflowResult<Option<T>> {
        if self.shared.borrow().signals.get(name).is_some_and(|q| !q.is_empty()) {
            return self.signal(name).await.map(Some);
        }
        let signal = self.signal::<T>(name);
        let timer = self.sleep(timeout);
        match futures_util::future::select(signal, timer).await {
            futures_util::future::Either::Left((signal, _)) => signal.map(Some),
            futures_util::future::Either::Right((fired, _)) => fired.map(|()| None),
        }
    }

    /// Starts a child workflow and waits for its outcome. Its workflow id defaults to
    /// `<parent workflow id>/<parent run id>/<seq>`: the run id keeps the children of a run
    /// that continued as new apart from those of the runs before it, which used the same seqs.
    pub fn child<O: DeserializeOwned>(&self, workflow_type: &str, input: &impl Serialize) -> ChildCall<O> {
        ChildCall {
            ctx: self.clone(),
            workflow_type: workflow_type.to_owned(),
            workflow_id: None,
            input: Payload::encode(input).unwrap_or_else(|_| Payload::null()),
            output: PhantomData,
        }
    }
}

/// A configured activity call; `.await` (or `start`) issues the command.
#[must_use = "an activity runs only when awaited or started"]
pub struct ActivityCall<O> {
    ctx: Ctx,
    activity_type: String,
    input: Payload,
    options: Options,
    output: PhantomData<fn() -> O>,
}

impl<O: DeserializeOwned> ActivityCall<O> {
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.options.retry = policy;
        self
    }

    pub fn start_to_close(mut self, timeout: Duration) -> Self {
        self.options.start_to_close_ms = Some(duration_ms(timeout));
        self
    }

    pub fn schedule_to_close(mut self, timeout: Duration) -> Self {
        self.options.schedule_to_close_ms = Some(duration_ms(timeout));
        self
    }

    /// Dispatches under rate-limiter `key`, counting `token_count` tokens per attempt.
    pub fn rate_limit(mut self, key: &str, token_count: u64) -> Self {
        self.options.rate_limit_key = Some(key.to_owned());
        self.options.token_count = token_count;
        self
    }

    /// Issues the command now and returns the future of its result, for join and select.
    pub fn start(self) -> ActivityFuture<O> {
        let mut shared = self.ctx.shared.borrow_mut();
        let seq = shared.next_seq();
        let idempotency_key = idempotency_key(&shared.run_id, seq);
        shared.issue(Kind::ActivityScheduled {
            seq,
            activity_type: self.activity_type.clone(),
            input: self.input,
            idempotency_key,
            options: self.options,
        });
        shared.register(seq, PendingKind::Activity);
        ActivityFuture { shared: self.ctx.shared.clone(), seq, activity_type: self.activity_type, output: PhantomData }
    }
}

impl<O: DeserializeOwned> IntoFuture for ActivityCall<O> {
    type Output = Result<O, activity::Error>;
    type IntoFuture = ActivityFuture<O>;

    fn into_future(self) -> ActivityFuture<O> {
        self.start()
    }
}

/// Takes the resolution of `seq` if there is one, or parks the waker.
fn take_resolution(shared: &Rc<RefCell<Shared>>, seq: u32, cx: &Context<'_>) -> Option<Resolution> {
    let mut shared = shared.borrow_mut();
    if let Some(resolution) = shared.resolved.remove(&seq) {
        return Some(resolution);
    }
    if let Some((_, waker)) = shared.pending.get_mut(&seq) {
        *waker = Some(cx.waker().clone());
    }
    None
}

pub struct ActivityFuture<O> {
    shared: Rc<RefCell<Shared>>,
    seq: u32,
    activity_type: String,
    output: PhantomData<fn() -> O>,
}

impl<O: DeserializeOwned> Future for ActivityFuture<O> {
    type Output = Result<O, activity::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match take_resolution(&this.shared, this.seq, cx) {
            None => Poll::Pending,
            Some(Resolution::Activity(Ok(output))) => Poll::Ready(output.decode::<O>().map_err(|e| activity::Error {
                activity_type: this.activity_type.clone(),
                seq: this.seq,
                attempt_count: 0,
                cause: activity::Cause::NonRetryable,
                last_failure: activity::Failure::InvalidOutput { message: format!("output does not decode: {e}") },
            })),
            Some(Resolution::Activity(Err(mut error))) => {
                error.activity_type.clone_from(&this.activity_type);
                Poll::Ready(Err(error))
            }
            Some(other) => panic!("activity seq {} resolved as {other:?}", this.seq),
        }
    }
}

/// A durable timer; resolves `Err(Canceled)` if the run is canceled first.
pub struct Timer {
    shared: Rc<RefCell<Shared>>,
    seq: u32,
}

impl Future for Timer {
    type Output = WorkflowResult<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match take_resolution(&self.shared, self.seq, cx) {
            None => Poll::Pending,
            Some(Resolution::Timer(result)) => Poll::Ready(result),
            Some(other) => panic!("timer seq {} resolved as {other:?}", self.seq),
        }
    }
}

pub struct SignalWait<T> {
    shared: Rc<RefCell<Shared>>,
    name: String,
    output: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Future for SignalWait<T> {
    type Output = WorkflowResult<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut shared = self.shared.borrow_mut();
        if let Some(record) = shared.signals.get_mut(&self.name).and_then(|q| q.pop_front()) {
            return Poll::Ready(record.payload.decode::<T>().map_err(Into::into));
        }
        if shared.cancel_requested {
            return Poll::Ready(Err(WorkflowError::Canceled));
        }
        let waiting = shared.signal_waiters.iter().any(|(n, w)| *n == self.name && w.will_wake(cx.waker()));
        if !waiting {
            shared.signal_waiters.push((self.name.clone(), cx.waker().clone()));
        }
        Poll::Pending
    }
}

#[must_use = "a child workflow starts only when awaited or started"]
pub struct ChildCall<O> {
    ctx: Ctx,
    workflow_type: String,
    workflow_id: Option<String>,
    input: Payload,
    output: PhantomData<fn() -> O>,
}

impl<O: DeserializeOwned> ChildCall<O> {
    pub fn id(mut self, workflow_id: &str) -> Self {
        self.workflow_id = Some(workflow_id.to_owned());
        self
    }

    pub fn start(self) -> ChildFuture<O> {
        let mut shared = self.ctx.shared.borrow_mut();
        let seq = shared.next_seq();
        let workflow_id = self.workflow_id.unwrap_or_else(|| format!("{}/{}/{seq}", shared.workflow_id, shared.run_id));
        shared.issue(Kind::ChildStarted {
            seq,
            workflow_type: self.workflow_type,
            workflow_id: workflow_id.clone(),
            input: self.input,
        });
        shared.register(seq, PendingKind::Child);
        ChildFuture { shared: self.ctx.shared.clone(), seq, workflow_id, output: PhantomData }
    }
}

impl<O: DeserializeOwned> IntoFuture for ChildCall<O> {
    type Output = WorkflowResult<O>;
    type IntoFuture = ChildFuture<O>;

    fn into_future(self) -> ChildFuture<O> {
        self.start()
    }
}

pub struct ChildFuture<O> {
    shared: Rc<RefCell<Shared>>,
    seq: u32,
    workflow_id: String,
    output: PhantomData<fn() -> O>,
}

impl<O: DeserializeOwned> Future for ChildFuture<O> {
    type Output = WorkflowResult<O>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match take_resolution(&self.shared, self.seq, cx) {
            None => Poll::Pending,
            Some(Resolution::Child(ChildOutcome::Completed { output })) => {
                Poll::Ready(output.decode::<O>().map_err(Into::into))
            }
            Some(Resolution::Child(ChildOutcome::Failed { error })) => {
                Poll::Ready(Err(WorkflowError::Child { workflow_id: self.workflow_id.clone(), error }))
            }
            Some(Resolution::Child(ChildOutcome::Canceled)) => Poll::Ready(Err(WorkflowError::Canceled)),
            Some(other) => panic!("child seq {} resolved as {other:?}", self.seq),
        }
    }
}
