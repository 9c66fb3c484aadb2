//! intent-router: reads helpdesk tickets in Russian and English, works out the customer's intent
//! and (with the rules layer) decides who handles it.

pub mod assign;
pub mod batch;
pub mod cli;
pub mod commands;
pub mod config;
pub mod connector;
pub mod decision;
pub mod engine;
pub mod failpoint;
pub mod fsutil;
pub mod import;
pub mod incident;
pub mod intent;
pub mod lang;
pub mod learn;
pub mod metrics;
pub mod model;
pub mod nats;
pub mod privacy;
pub mod registry;
pub mod rules;
pub mod server;
pub mod service;
pub mod serving;
pub mod stats;
pub mod store;
pub mod text;
pub mod ticket;
pub mod train;
