//! Bodies on their way through: chunk sizes for fast and slow clients, upload deadlines, and
//! transparent resume of broken downloads.

pub mod chunking;
pub mod resume;
pub mod upload;
