//! The real agent against a fake controller, running real deploy scripts.

#[path = "../support/mod.rs"]
mod support;

mod auth;
mod jobs;
mod logs;
mod policy;
mod registration;
mod stopping;
