//! End-to-end tests of the `deploybot` binary: every test runs the real
//! executable (`CARGO_BIN_EXE_deploybot`) as a child process, in its own
//! temporary directory, and talks to it only through its arguments,
//! environment, signals, stdout/stderr and HTTP.
//!
//! Readiness is the `listening on http://…` log line; nothing sleeps for a
//! condition it can wait on.

mod auth;

mod client_deploy;
mod client_errors;
mod client_follow;
mod client_login;
mod client_tables;
mod closed_stdout;
mod cluster;
mod cluster_proof;
mod common;
mod config_commands;
mod dev;
mod durability;
mod e2e;
mod e2e_failures;
mod help;
mod logs;
mod metrics;
mod nginx;
mod postgres;
mod secrets;
mod settings;
mod signals;
mod tls;
mod webhook_secret;
