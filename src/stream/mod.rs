//! Bodies on their way through: the relay of an upstream body to the client, the idle limit
//! between chunks, chunk sizes for fast and slow clients, upload deadlines, transparent resume
//! of broken downloads, and the zero-copy path for blobs between plain sockets. Nothing here
//! knows how a request is sent: resume asks again through a function the upstream side gives
//! it.

pub mod chunking;
pub mod idle;
pub mod relay;
pub mod resume;
#[cfg(target_os = "linux")]
pub mod splice;
pub mod upload;
