//! Durations and sizes, as every config section reads them (see `gatehouse-config`).

pub use gatehouse_config::{parse_duration, DurationError};
