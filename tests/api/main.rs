//! Integration tests against the real local RabbitMQ and Postgres. Tests under `serial::`
//! disturb shared services and run one at a time after the others, with the fault suite
//! (crates/harness; see scripts/test).

mod auth;
mod batch_submissions;
mod batches;
mod cancellation;
mod cli;
mod commands;
mod dashboard;
mod dead_letters;
mod declared_http;
mod declared_sql;
mod declared_types;
mod endpoint;
mod first_run;
#[cfg(feature = "fuzzing")]
mod fuzz_regressions;
mod helpers;
mod http_server;
mod json_budget;
mod ledger;
mod openapi;
mod operators;
mod ordering;
mod outages;
mod priorities;
mod publish_bursts;
mod quorum_ttl;
mod retention;
mod retries;
mod schedules;
mod scheduling;
mod secrets;
mod serial;
mod tenants;
mod validation;
mod webhooks;
