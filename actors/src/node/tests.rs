//! Tests of the node actor over the sim runtime and in-memory ports, on a paused clock.
