//! The tagger's logic: its errors and their classes ([`error`]), the retry policy
//! ([`retry`]), the daily AI pacer ([`pacer`]), what became of a message ([`outcome`]), the
//! labels that become tags ([`labels`]), the categories they add up to ([`categories`]), the
//! byte budget of images in memory ([`memory`]), and the consumer's batch orchestration
//! behind an I/O trait ([`batch`]).

pub mod batch;
pub mod categories;
pub mod error;
pub mod labels;
pub mod memory;
pub mod outcome;
pub mod pacer;
pub mod retry;
