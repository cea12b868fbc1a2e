//! The scheduler actor over in-memory ports, on a paused clock: what it sends and appends
//! and when it wakes up, in milliseconds of test time.
