//! Pure logic of the image-tagging pipeline, shared by both workers.
//!
//! Nothing here touches Workers APIs, so all of it is tested natively with `cargo test`.
//! The worker crates are thin shells that do the I/O and call into this crate.
//!
//! One folder per domain. A folder uses only the folders before it in this list (the
//! `layout` test checks it):
//! - [`wire`]: what crosses process boundaries, and the names of things (messages, ids,
//!   keys, config, records, log events);
//! - [`image`]: image formats (types, magic numbers, headers);
//! - [`tagging`]: the tagger's logic (errors, retry policy, pacing, outcomes, labels);
//! - [`webhook`]: webhook events, URLs, signatures and retries;
//! - [`api`]: the upload worker's HTTP contract;
//! - [`storage`]: all SQL.

pub mod wire;

pub mod image;

pub mod tagging;

pub mod webhook;

pub mod api;

pub mod storage;

pub use image::format::ImageType;
pub use tagging::error::TagError;
pub use tagging::labels::Label;
pub use wire::id::ImageId;
pub use wire::message::ImageMessage;
pub use wire::record::{Status, TagRecord};
