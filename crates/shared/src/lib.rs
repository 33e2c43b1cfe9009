//! Pure logic of the image-tagging pipeline, shared by both workers.
//!
//! Nothing here touches Workers APIs, so all of it is tested natively with `cargo test`.
//! The worker crates are thin shells that do the I/O and call into this crate.

pub mod api;
pub mod auth;
pub mod budget;
pub mod config;
pub mod content;
#[cfg(test)]
mod contract;
pub mod db;
pub mod dimensions;
pub mod error;
pub mod head;
pub mod id;
#[cfg(feature = "imaging")]
pub mod imaging;
pub mod keys;
pub mod labels;
pub mod message;
pub mod multipart;
pub mod outbox;
pub mod outcome;
pub mod pacer;
pub mod policy;
pub mod record;
pub mod search;
pub mod sniff;
pub mod time;
pub mod webhook;

pub use error::TagError;
pub use id::ImageId;
pub use labels::Label;
pub use message::ImageMessage;
pub use record::{Status, TagRecord};
pub use sniff::ImageType;
