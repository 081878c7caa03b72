//! Integration tests against the real local RabbitMQ and Postgres. Tests under `fault::`
//! disturb shared services and run one at a time after the others (see scripts/test).

mod auth;
mod batch_submissions;
mod batches;
mod cli;
mod commands;
mod dashboard;
mod dead_letters;
// The fault-injection suite needs the binary's test-only hooks (`--features fault-hooks`).
#[cfg(feature = "fault-hooks")]
mod fault;
mod first_run;
#[cfg(feature = "fuzzing")]
mod fuzz_regressions;
mod helpers;
mod http_server;
mod json_budget;
mod ledger;
mod openapi;
mod operators;
mod outages;
mod proxy;
mod retention;
mod retries;
mod secrets;
mod tenants;
mod validation;
mod webhooks;
