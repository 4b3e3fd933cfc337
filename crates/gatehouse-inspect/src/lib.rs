//! Pure inspection of commands: plain functions over strings, no I/O.

pub mod analyze;
pub mod effects;
pub mod shape;
pub mod sql;
pub mod tokens;
mod tree;
