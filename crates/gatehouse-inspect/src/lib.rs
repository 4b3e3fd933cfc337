//! gatehouse-inspect
