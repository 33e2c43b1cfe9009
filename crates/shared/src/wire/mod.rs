//! What crosses process boundaries, and the one place names live: queue messages, image
//! ids, R2/KV keys, bindings and settings, records and views, timestamps, base64, and the
//! log event names of both workers.

pub mod base64;
pub mod config;
#[cfg(test)]
mod contract;
pub mod id;
pub mod keys;
pub mod log_event;
pub mod message;
pub mod record;
pub mod time;
