//! Tests that disturb the shared RabbitMQ or Postgres, run one at a time (scripts/test).

mod alarm_retry;
