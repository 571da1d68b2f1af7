//! Surviving failing instances.
//!
//! - `outlier`: passive health checking. An instance whose calls fail to
//!   reach it several times in a row is ejected for a while, then tried
//!   again.

pub(crate) mod outlier;

pub use outlier::Ejection;
