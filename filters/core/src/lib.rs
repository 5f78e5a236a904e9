//! Tollgate's protocol core: everything the filters know about LLM APIs, as pure functions and
//! sans-I/O state machines. No proxy-wasm, no I/O, no clock (time is a parameter), so it builds
//! and tests natively and for `wasm32-wasip1` alike.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

pub mod api;
pub mod config;
pub mod consumer;
pub mod convert;
pub mod decompress;
pub mod error;
pub mod estimate;
pub mod eventstream;
pub mod form;
pub mod fxhash;
pub mod guard;
pub mod json_array;
pub mod json_scan;
pub mod metrics;
pub mod provider;
pub mod quota;
pub mod request;
pub mod route;
pub mod schema;
pub mod sse;
pub mod stage;
pub mod usage;
