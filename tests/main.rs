//! The single integration-test binary (one link step keeps CI fast).

mod common;

mod chatwoot;

mod cli;
mod connectors;
mod console;
mod contract;
mod crash;
mod default_model;
mod encoder;
mod fidelity;
mod freshdesk;
mod hardening;
mod hub;
mod incidents;
mod jira;
mod learning;
mod nats;
#[path = "../src/store/pg_cluster.rs"]
mod pg_cluster;
mod replicas;
mod routing;
mod server;
mod zammad;
mod zendesk;
