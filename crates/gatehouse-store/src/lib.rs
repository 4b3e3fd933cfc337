//! gatehouse-store
