//! The server's life: loading → serving → draining. One type, owned by `Running` and shared with
//! everything that behaves differently while loading or draining (probes, stream admission,
//! open streams, keep-alive connections), so there is one flag per fact and one signal to wait on.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

pub struct Lifecycle {
    loaded: AtomicBool,
    /// Becomes true once, when the drain starts; streams and connections wait on it.
    draining: watch::Sender<bool>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            loaded: AtomicBool::new(false),
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
}
