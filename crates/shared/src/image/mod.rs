//! Image formats: the type of an upload and its magic numbers ([`format`]), and the
//! width and height read from its header ([`header`]).

pub mod format;
pub mod header;
pub mod orientation;
