//! gatehouse-server
