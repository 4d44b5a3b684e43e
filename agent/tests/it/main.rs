//! Integration tests of the public API, in one binary.
//!
//! This binary installs a counting global allocator, so its tests measure allocations
//! of the agent as an application sees them.

mod allocations;
