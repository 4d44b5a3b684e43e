//! The ring drainer: a thread of its own that moves the spans the application threads
//! pushed into their span rings into the active aggregation buffer.
//!
//! It polls instead of being woken, so a recording thread never makes a system call:
//! every 10 ms while the application records little, every 100 µs (plus the kernel's
//! timer slack) while some thread fills its ring fast. At that pace a ring of 8,192
//! spans keeps up with about 40 million spans a second per thread, so the aggregation
//! work stays off the application's threads; a thread that still fills its ring (the
//! drainer descheduled on a busy machine) drains the rings itself, as before.
//!
//! It is not a task of the reporter's runtime because that thread also encodes and
//! compresses reports, and tokio's timers tick in milliseconds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::agent::Shared;
use crate::registry::RING_CAPACITY;

/// Longest wait between two drains, while the application records little.
const MAX_PERIOD: Duration = Duration::from_millis(10);
/// Shortest wait between two drains, while some thread fills its ring fast.
const MIN_PERIOD: Duration = Duration::from_micros(100);
/// A drain that finds this many spans in one ring (an eighth of its capacity) starts
/// draining at [`MIN_PERIOD`]; quieter drains double the wait, up to [`MAX_PERIOD`].
const BUSY_RING_SPANS: usize = RING_CAPACITY / 8;
/// Name of the drainer thread.
const THREAD_NAME: &str = "caracal-agent-drain";
/// Stack of the drainer thread: draining needs little.
const STACK_BYTES: usize = 256 * 1024;

/// The drainer thread, stopped and joined when dropped.
#[derive(Debug)]
pub(crate) struct RingDrainer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RingDrainer {
    /// Starts draining the rings of `shared`'s registry.
    pub(crate) fn spawn(shared: Arc<Shared>) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name(THREAD_NAME.to_owned())
            .stack_size(STACK_BYTES)
            .spawn({
                let stop = Arc::clone(&stop);
                move || drain_until_stopped(&shared, &stop)
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for RingDrainer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            if thread.join().is_err() {
                tracing::error!("agent ring drainer panicked; threads drained their own rings");
            }
        }
    }
}

fn drain_until_stopped(shared: &Shared, stop: &AtomicBool) {
    let mut period = MAX_PERIOD;
    while !stop.load(Ordering::Acquire) {
        std::thread::park_timeout(period);
        period = next_period(period, shared.registry.drain_rings());
    }
}

/// The wait after a drain that found at most `fullest_ring` spans in one ring.
fn next_period(period: Duration, fullest_ring: usize) -> Duration {
    if fullest_ring >= BUSY_RING_SPANS {
        MIN_PERIOD
    } else {
        (period * 2).min(MAX_PERIOD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_rings_are_drained_fast_and_quiet_ones_slowly() {
        assert_eq!(next_period(MAX_PERIOD, BUSY_RING_SPANS), MIN_PERIOD);
        assert_eq!(next_period(MIN_PERIOD, 0), MIN_PERIOD * 2);
        let mut period = MIN_PERIOD;
        for _ in 0..20 {
            period = next_period(period, BUSY_RING_SPANS - 1);
        }
        assert_eq!(period, MAX_PERIOD);
    }
}
