//! The server's life: loading → catching up → serving → draining. One type, owned by `Running`
//! and shared with everything that behaves differently while loading, catching up or draining
//! (probes, stream admission, open streams, keep-alive connections, region links), so there is
//! one flag per fact and one signal to wait on.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::sync::watch;

pub struct Lifecycle {
    loaded: AtomicBool,
    /// Region links that have not yet read their stream's backlog since the start.
    catching_up: AtomicUsize,
    /// When readiness stops waiting for them (set once, with their number).
    catch_up_deadline: OnceLock<Instant>,
    /// Becomes true once, when the drain starts; streams and connections wait on it.
    draining: watch::Sender<bool>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            loaded: AtomicBool::new(false),
            catching_up: AtomicUsize::new(0),
            catch_up_deadline: OnceLock::new(),
            draining: watch::channel(false).0,
        }
    }
}

impl Lifecycle {
    /// The data directory is loaded: API calls are served.
    pub fn set_loaded(&self) {
        self.loaded.store(true, Ordering::Release);
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// `links` region links start reading their streams' backlogs; readiness waits until each
    /// has called `caught_up` or `wait` has passed (a peer writing faster than this instance
    /// applies must not keep it out of service for ever).
    pub fn expect_catch_up(&self, links: usize, wait: Duration) {
        let now = Instant::now();
        let deadline = now.checked_add(wait).unwrap_or(now);
        if self.catch_up_deadline.set(deadline).is_ok() {
            self.catching_up.store(links, Ordering::Release);
        }
    }

    /// One region link has read its stream to the end once (or cannot reach it). Each link calls
    /// this at most once.
    pub fn caught_up(&self) {
        let _ = self
            .catching_up
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Every region link has caught up, or readiness stopped waiting for them.
    pub fn is_caught_up(&self) -> bool {
        self.catching_up.load(Ordering::Acquire) == 0
            || self
                .catch_up_deadline
                .get()
                .is_none_or(|d| Instant::now() >= *d)
    }

    /// Starts the drain (idempotent).
    pub fn start_draining(&self) {
        self.draining.send_replace(true);
    }

    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// A receiver whose value turns true when the drain starts.
    pub fn drain_signal(&self) -> watch::Receiver<bool> {
        self.draining.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_drain_signal_reaches_receivers_made_before_and_after_it() {
        let life = Lifecycle::default();
        assert!(!life.is_loaded() && !life.is_draining());
        let mut before = life.drain_signal();
        life.start_draining();
        life.start_draining();
        assert!(life.is_draining());
        before.wait_for(|d| *d).await.expect("sender alive");
        assert!(*life.drain_signal().borrow());
    }

    #[test]
    fn readiness_waits_for_every_link_to_catch_up_until_the_deadline() {
        let life = Lifecycle::default();
        assert!(life.is_caught_up(), "nothing to catch up without links");
        life.expect_catch_up(2, Duration::from_secs(3600));
        assert!(!life.is_caught_up());
        life.caught_up();
        assert!(!life.is_caught_up());
        life.caught_up();
        assert!(life.is_caught_up());
        life.caught_up();
        assert!(life.is_caught_up(), "an extra call does not wrap around");

        let late = Lifecycle::default();
        late.expect_catch_up(1, Duration::ZERO);
        assert!(late.is_caught_up(), "the deadline ends the wait");
    }
}
