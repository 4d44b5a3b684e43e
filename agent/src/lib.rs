//! Caracal agent: the instrumentation SDK (in progress).
