//! Tests of the failover: its decisions scenario by scenario ([`decide`]), and its actor
//! over in-memory ports on a paused clock ([`actor`]).

mod actor;
mod decide;
