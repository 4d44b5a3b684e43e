//! End-to-end tests of collector + query in process, against the real ClickHouse.

mod agent;
mod agent_outage;
mod agent_rows;
mod conformance;
mod ingest;
mod metrics;
mod otlp_sdk;
mod scaling;
mod spool;
mod tenancy;
mod zipkin;
