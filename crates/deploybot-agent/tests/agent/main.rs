//! The real agent against a fake controller, running real deploy scripts.

#[path = "../support/mod.rs"]
mod support;

mod jobs;
mod logs;
mod registration;
mod stopping;
