//! The front-ends: `log` and `tracing` records in, encoded records out.

#[cfg(feature = "log")]
pub(crate) mod log;
#[cfg(feature = "tracing")]
mod spans;
#[cfg(feature = "tracing")]
pub(crate) mod tracing;
