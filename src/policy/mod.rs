//! Which images the mirror serves.

pub mod images;
