//! gatehouse-postgres
