//! Keeps a CPU awake while a commit waits for its disk flush.
//!
//! On a virtual machine whose idle vCPUs halt without polling (KVM's
//! `haltpoll` with `guest_halt_poll_ns=0`, as on Firecracker), the
//! completion of a flush that arrives while every vCPU is halted is noticed
//! up to a timer tick late: on the 2-core machine of the README a lone
//! `fdatasync` took 3.9 ms at the median, and 0.2 ms while another thread of
//! the process merely woke every 100 µs. A commit is one flush, so that
//! wait was most of a batch's time. An [`Awake`] is that other thread: it
//! sleeps in short steps while any commit is in flight and parks otherwise,
//! so it costs nothing when the service is idle. Durability is unchanged:
//! every commit still waits for its own flush.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::Thread;
use std::time::Duration;

/// How long the thread sleeps between wake-ups while a commit is in flight.
/// The timer's slack makes it a little longer.
const STEP: Duration = Duration::from_micros(100);

/// The handle the store holds; dropping it stops the thread.
pub(crate) struct Awake {
    shared: Arc<Shared>,
    thread: Thread,
}

struct Shared {
    /// Commits in flight.
    busy: AtomicUsize,
    stop: AtomicBool,
}

/// One commit in flight, from [`Awake::hold`] until dropped.
pub(crate) struct Held<'a>(&'a Awake);

impl Awake {
    /// Starts the thread, parked. None when the system refuses a thread:
    /// commits then wait for the disk as they would anyway.
    pub(crate) fn start() -> Option<Awake> {
        let shared = Arc::new(Shared {
            busy: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let theirs = shared.clone();
        let handle = std::thread::Builder::new()
            .name("stockpool-awake".into())
            .spawn(move || {
                while !theirs.stop.load(Ordering::Acquire) {
                    if theirs.busy.load(Ordering::Acquire) == 0 {
                        std::thread::park();
                    } else {
                        std::thread::sleep(STEP);
                    }
                }
            });
        match handle {
            Ok(handle) => Some(Awake {
                shared,
                thread: handle.thread().clone(),
            }),
            Err(e) => {
                tracing::warn!(error = %e, "could not start the thread that keeps a CPU awake during commits; commits may wait longer for the disk");
                None
            }
        }
    }

    /// Keeps the thread waking until the returned guard is dropped.
    pub(crate) fn hold(&self) -> Held<'_> {
        if self.shared.busy.fetch_add(1, Ordering::AcqRel) == 0 {
            self.thread.unpark();
        }
        Held(self)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.shared.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Awake {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thread_counts_commits_in_flight_and_stops_with_its_handle() {
        let awake = Awake::start().expect("a thread");
        {
            let _a = awake.hold();
            let _b = awake.hold();
            assert_eq!(awake.shared.busy.load(Ordering::Acquire), 2);
        }
        assert_eq!(awake.shared.busy.load(Ordering::Acquire), 0);
        let shared = awake.shared.clone();
        drop(awake);
        assert!(shared.stop.load(Ordering::Acquire));
        // The thread lets go of its share when it ends.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&shared) > 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "the thread did not stop"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
