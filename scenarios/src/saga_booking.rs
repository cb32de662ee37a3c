//! `saga_booking`: a travel agent plans a trip with the LLM, then books flight, hotel and car
//! through tools; when a later booking fails, it compensates the earlier ones in reverse order.
//!
//! Owns the workflow (a saga: each booking has a compensation, and a booking whose outcome is
//! unknown is compensated too), its activities (`plan_trip`, `book`, and `cancel_flight`,
//! `cancel_hotel`, `cancel_car`), the scripted model and booking services (some destinations
//! have no cars; any booking can be sold out),
//! and the business checks over the tools' ledger: a booked trip holds all three bookings and
//! no cancellation; a failed trip leaves no booking behind, each one canceled exactly once,
//! after it was made, in reverse order.
//!
//! Its workflow never does I/O of its own, and never leaves a booking it may have made
//! uncompensated when the trip fails.

use crate::common::{self, chat, LLM_KEY_NAME, LLM_TIMEOUT, MODEL};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::Duration;
use tempest_engine::history::Kind;
use tempest_engine::services::{Activities, ActivityCtx, LlmRequest, LlmResponse, Message};
use tempest_engine::{Ctx, Failure, Registry, RetryPolicy, Time, WorkflowResult};
use tempest_sim::check::sometimes;
use tempest_sim::rng::Rng;
use tempest_sim::scenario::{Finished, Scenario, Start, ToolOutcome};

/// The bookings of a trip, in the order they are made.
pub(crate) const STEPS: [&str; 3] = ["flight", "hotel", "car"];
/// Where no car can be rented, so every trip there is compensated.
pub(crate) const CARLESS_DESTINATION: &str = "Venice";
const DESTINATIONS: [&str; 4] = ["Lisbon", "Kyoto", "Reykjavik", CARLESS_DESTINATION];
/// Chance any one booking is sold out.
const SOLD_OUT_PROBABILITY: f64 = 0.08;
const TOKENS: u64 = 900;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct TripRequest {
    pub(crate) destination: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub(crate) enum Trip {
    Booked {
        confirmations: Vec<String>,
    },
    /// `compensated` lists the canceled bookings in the order they were canceled.
    Canceled {
        reason: String,
        compensated: Vec<String>,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Itinerary {
    pub(crate) flight: String,
    pub(crate) hotel: String,
    pub(crate) car: String,
}

impl Itinerary {
    fn option(&self, step: &str) -> &str {
        match step {
            "flight" => &self.flight,
            "hotel" => &self.hotel,
            _ => &self.car,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct BookInput {
    pub(crate) trip: String,
    pub(crate) step: String,
    pub(crate) option: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub(crate) enum Booking {
    Confirmed { confirmation: String },
    Unavailable { reason: String },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct CancelInput {
    pub(crate) trip: String,
    pub(crate) step: String,
}

/// Compensations must finish however long the booking services are down.
pub(crate) fn compensation_retry() -> RetryPolicy {
    RetryPolicy::attempts(0).initial_interval(Duration::from_secs(1)).max_interval(Duration::from_secs(60))
}

/// The saga as a user writes it.
pub(crate) async fn saga_booking(ctx: Ctx, request: TripRequest) -> WorkflowResult<Trip> {
    let trip = ctx.workflow_id();
    let itinerary: Itinerary = ctx
        .activity("plan_trip", &request)
        .retry(common::llm_retry())
        .start_to_close(LLM_TIMEOUT)
        .rate_limit(LLM_KEY_NAME, TOKENS)
        .await?;
    let mut booked = Vec::new();
    let mut confirmations = Vec::new();
    let mut failure = None;
    for step in STEPS {
        let input = BookInput { trip: trip.clone(), step: step.to_owned(), option: itinerary.option(step).to_owned() };
        let booking = ctx
            .activity::<Booking>("book", &input)
            .retry(common::tool_retry())
            .start_to_close(Duration::from_secs(60))
            .await;
        match booking {
            Ok(Booking::Confirmed { confirmation }) => {
                booked.push(step);
                confirmations.push(confirmation);
            }
            Ok(Booking::Unavailable { reason }) => {
                failure = Some(format!("{step} unavailable: {reason}"));
                break;
            }
            Err(error) => {
                // The booking may have gone through with its answer lost: cancel it too.
                booked.push(step);
                failure = Some(format!("{step} failed: {error}"));
                break;
            }
        }
    }
    let Some(reason) = failure else {
        return Ok(Trip::Booked { confirmations });
    };
    let mut compensated = Vec::new();
    for step in booked.into_iter().rev() {
        let _: Value = ctx
            .activity(&format!("cancel_{step}"), &CancelInput { trip: trip.clone(), step: step.to_owned() })
            .retry(compensation_retry())
            .start_to_close(Duration::from_secs(60))
            .await?;
        compensated.push(step.to_owned());
    }
    Ok(Trip::Canceled { reason, compensated })
}

async fn plan_trip(ctx: ActivityCtx, request: TripRequest) -> Result<Itinerary, Failure> {
    let mut messages = vec![
        Message::system("Plan a trip as JSON {\"flight\": ..., \"hotel\": ..., \"car\": ...}."),
        Message::user(format!("A weekend in {}", request.destination)),
    ];
    if let Some(Failure::InvalidOutput { message }) = ctx.previous_failure() {
        messages.push(Message::user(format!("Your last answer was invalid: {message}")));
    }
    let request =
        LlmRequest { model: MODEL.to_owned(), messages, tools: Vec::new(), json_output: true, token_count: TOKENS };
    let response = chat(&ctx, request).await?;
    serde_json::from_str(&response.content).map_err(|e| Failure::InvalidOutput { message: e.to_string() })
}

async fn book(ctx: ActivityCtx, input: BookInput) -> Result<Booking, Failure> {
    let answer =
        ctx.tool(&format!("book_{}", input.step), json!({ "trip": input.trip, "option": input.option })).await?;
    serde_json::from_value(answer).map_err(|e| Failure::Application {
        kind: "bad_answer".to_owned(),
        message: format!("booking service answered something else: {e}"),
    })
}

async fn cancel(ctx: ActivityCtx, input: CancelInput) -> Result<Value, Failure> {
    ctx.tool(&format!("cancel_{}", input.step), json!({ "trip": input.trip })).await
}

pub(crate) fn register(registry: &mut Registry) {
    registry.register("saga_booking", saga_booking);
}

pub(crate) fn activities() -> Activities {
    let mut activities = Activities::new();
    activities.register("plan_trip", plan_trip).register("book", book);
    for step in STEPS {
        // One compensation per booking, each its own activity type.
        activities.register(&format!("cancel_{step}"), cancel);
    }
    activities
}

pub(crate) struct SagaBooking;

impl Scenario for SagaBooking {
    fn name(&self) -> &'static str {
        "saga_booking"
    }

    fn description(&self) -> &'static str {
        "a travel agent books flight, hotel and car; a later failure cancels the earlier bookings in reverse"
    }

    fn registry(&self) -> Registry {
        common::registry_with(register)
    }

    fn activities(&self) -> Activities {
        activities()
    }

    fn workload(&self, rng: &mut Rng) -> Vec<Start> {
        (0..rng.range_inclusive(4, 8))
            .map(|i| Start {
                at: Time(rng.below(120_000)),
                workflow_id: format!("trip-{i}"),
                workflow_type: "saga_booking".to_owned(),
                input: json!({ "destination": rng.pick(&DESTINATIONS) }),
            })
            .collect()
    }

    fn llm_answer(&self, request: &LlmRequest, rng: &mut Rng) -> LlmResponse {
        let n = rng.below(100);
        let asked = request.messages.get(1).map(|m| m.content.as_str()).unwrap_or_default();
        let destination = asked.rsplit(' ').next().unwrap_or_default();
        LlmResponse {
            content: json!({
                "flight": format!("TP{n} to {destination}"),
                "hotel": format!("Hotel {n} in {destination}"),
                "car": format!("compact in {destination}"),
            })
            .to_string(),
            tool_calls: Vec::new(),
            token_count: request.token_count,
        }
    }

    fn tool_call(&self, name: &str, arguments: &Value, rng: &mut Rng) -> ToolOutcome {
        let trip = arguments["trip"].as_str().unwrap_or("?");
        if let Some(step) = name.strip_prefix("cancel_") {
            return ToolOutcome { result: json!({ "canceled": true }), effect: Some(format!("cancel:{step}:{trip}")) };
        }
        let step = name.strip_prefix("book_").unwrap_or(name);
        let option = arguments["option"].as_str().unwrap_or("?");
        let carless = step == "car" && option.ends_with(CARLESS_DESTINATION);
        if carless || rng.chance(SOLD_OUT_PROBABILITY) {
            return ToolOutcome {
                result: json!({ "status": "unavailable", "reason": format!("{option} sold out") }),
                effect: None,
            };
        }
        ToolOutcome {
            result: json!({ "status": "confirmed", "confirmation": format!("{step}-{trip}-{}", rng.below(10_000)) }),
            effect: Some(format!("book:{step}:{trip}")),
        }
    }

    fn liveness_bound(&self) -> Duration {
        Duration::from_secs(6 * 3600)
    }

    fn check(&self, finished: &Finished<'_>) -> Result<(), String> {
        for history in finished.histories {
            check_trip(history, finished.tool_effects)?;
        }
        Ok(())
    }

    fn sometimes(&self, finished: &Finished<'_>) -> Vec<&'static str> {
        finished
            .histories
            .iter()
            .filter(|h| STEPS.iter().any(|step| !common::scheduled(h, &format!("cancel_{step}")).is_empty()))
            .map(|_| sometimes::COMPENSATION_RAN)
            .collect()
    }
}

/// The business outcome of one trip, from its run's history and the tools' ledger.
fn check_trip(history: &tempest_engine::History, ledger: &[String]) -> Result<(), String> {
    let trip = &history.workflow_id;
    let position = |kind: &str, step: &str| ledger.iter().position(|e| *e == format!("{kind}:{step}:{trip}"));
    let booked: Vec<&str> = STEPS.iter().copied().filter(|step| position("book", step).is_some()).collect();
    let mut canceled: Vec<(usize, &str)> =
        STEPS.iter().filter_map(|step| position("cancel", step).map(|at| (at, *step))).collect();
    canceled.sort();
    let canceled: Vec<&str> = canceled.into_iter().map(|(_, step)| step).collect();
    let ended_failed = matches!(history.events.last().map(|e| &e.kind), Some(Kind::WorkflowFailed { .. }));
    if ended_failed && !booked.is_empty() {
        return Err(format!("trip {trip}: the run failed and left bookings {booked:?} behind"));
    }
    let Some(outcome) = common::completed_output::<Trip>(history)? else {
        return Ok(());
    };
    match outcome {
        Trip::Booked { confirmations } => {
            if booked != STEPS || !canceled.is_empty() || confirmations.len() != STEPS.len() {
                return Err(format!(
                    "trip {trip}: reported booked with {} confirmations, but the services hold bookings {booked:?} and cancellations {canceled:?}",
                    confirmations.len()
                ));
            }
        }
        Trip::Canceled { reason, compensated } => {
            for step in &booked {
                if position("cancel", step) < position("book", step) {
                    return Err(format!(
                        "trip {trip} ({reason}): {step} booking left in place or canceled before it was made"
                    ));
                }
            }
            // Compensations run in reverse booking order; the last step may have failed
            // with an unknown outcome, so it may be canceled without a booking.
            let attempted = STEPS.len().min(booked.len() + 1);
            let expected_at_most: Vec<&str> = STEPS[..attempted].iter().rev().copied().collect();
            let in_reverse = canceled == expected_at_most
                || (canceled.len() + 1 == expected_at_most.len() && canceled == expected_at_most[1..]);
            if !in_reverse {
                return Err(format!(
                    "trip {trip} ({reason}): compensations ran as {canceled:?}, expected the reverse of the bookings {booked:?}"
                ));
            }
            if compensated != canceled {
                return Err(format!(
                    "trip {trip}: reports compensations {compensated:?} but the services saw {canceled:?}"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, WithWorkflows};
    use tempest_sim::world::{self, Options};

    /// The steps whose `book` activity confirmed, in the order they were booked.
    fn confirmed_steps(history: &tempest_engine::History) -> Vec<String> {
        common::scheduled(history, "book")
            .into_iter()
            .filter(|(seq, _)| {
                history.events.iter().any(|e| {
                    matches!(&e.kind, Kind::ActivityCompleted { seq: s, output, .. }
                        if s == seq && output.to_value()["status"] == "confirmed")
                })
            })
            .map(|(_, input)| input["step"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    #[test]
    fn trips_without_a_car_cancel_their_bookings_in_reverse_and_others_book_everything() {
        let workload: Vec<Start> = ["Venice", "Venice", "Lisbon"]
            .iter()
            .enumerate()
            .map(|(i, destination)| Start {
                at: Time(1_000 * i as u64),
                workflow_id: format!("trip-{i}"),
                workflow_type: "saga_booking".to_owned(),
                input: json!({ "destination": destination }),
            })
            .collect();
        let mut compensated_trips = 0;
        for seed in 0..4 {
            let options = Options { workload: Some(workload.clone()), keep_histories: true, ..Options::swarm(seed) };
            let outcome = world::run_catching(&SagaBooking, options);
            assert!(outcome.passed(), "seed {seed}: {:?}", outcome.failure);
            for history in &outcome.histories {
                let trip: Trip = common::completed_output(history).unwrap().expect("every trip ends");
                let confirmed = confirmed_steps(history);
                match trip {
                    Trip::Canceled { compensated, .. } => {
                        compensated_trips += 1;
                        let mut expected = confirmed.clone();
                        expected.reverse();
                        // A booking whose outcome was unknown is canceled too, first.
                        assert!(
                            compensated == expected || compensated[1..] == expected[..],
                            "seed {seed} {}: canceled {compensated:?} after booking {confirmed:?}",
                            history.workflow_id
                        );
                        let canceled: Vec<&str> = history
                            .events
                            .iter()
                            .filter_map(|e| match &e.kind {
                                Kind::ActivityScheduled { activity_type, .. } => activity_type.strip_prefix("cancel_"),
                                _ => None,
                            })
                            .collect();
                        assert_eq!(canceled, compensated, "seed {seed} {}", history.workflow_id);
                    }
                    Trip::Booked { confirmations } => {
                        assert_ne!(history.workflow_id, "trip-0", "seed {seed}: a car was rented in Venice");
                        assert_eq!(confirmed, STEPS, "seed {seed} {}", history.workflow_id);
                        assert_eq!(confirmations.len(), STEPS.len());
                    }
                }
            }
            assert!(outcome.sometimes.get(sometimes::COMPENSATION_RAN).is_some_and(|n| *n >= 2), "seed {seed}");
        }
        assert!(compensated_trips >= 8, "only {compensated_trips} trips were compensated");
    }

    /// Compensates in booking order, as a careless saga would.
    async fn forward_compensation(ctx: Ctx, request: TripRequest) -> WorkflowResult<Trip> {
        let trip = ctx.workflow_id();
        let itinerary: Itinerary = ctx.activity("plan_trip", &request).retry(common::llm_retry()).await?;
        let mut booked = Vec::new();
        for step in STEPS {
            let input =
                BookInput { trip: trip.clone(), step: step.to_owned(), option: itinerary.option(step).to_owned() };
            match ctx.activity::<Booking>("book", &input).retry(common::tool_retry()).await {
                Ok(Booking::Confirmed { .. }) => booked.push(step.to_owned()),
                _ => {
                    for step in &booked {
                        let input = CancelInput { trip: trip.clone(), step: step.clone() };
                        let _: Value =
                            ctx.activity(&format!("cancel_{step}"), &input).retry(compensation_retry()).await?;
                    }
                    return Ok(Trip::Canceled { reason: format!("{step} failed"), compensated: booked });
                }
            }
        }
        Ok(Trip::Booked { confirmations: booked })
    }

    #[test]
    fn saga_compensating_in_booking_order_fails_its_check() {
        let broken = WithWorkflows {
            scenario: SagaBooking,
            register: |registry| {
                registry.register("saga_booking", forward_compensation);
            },
        };
        let outcome = testing::first_failure(&broken, 20).expect("a seed where two bookings are compensated");
        let failure = outcome.failure.expect("failed");
        assert_eq!(failure.check, "check_saga_booking_outcome", "{}", failure.message);
        assert!(failure.message.contains("reverse"), "{}", failure.message);
    }
}
