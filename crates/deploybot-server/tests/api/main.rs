//! Integration tests of the controller's HTTP API: each test starts a real
//! controller (SQLite file in a temp dir, random port) and talks HTTP to it.

mod agents;
mod apps;
mod auth;
mod bodies;
mod cluster;
mod connections;
mod dispatch_race;
mod errors;
mod helpers;
mod hosts;
mod jobs;
mod logs;
mod metrics;
mod openapi;
mod paging;
mod probes;
mod protocol;
mod restart;
mod seed_clients;
mod status;
mod webhook_properties;
mod webhook_requests;
mod webhooks;
