//! In-process relay tests.
