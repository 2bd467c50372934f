//! The bounded pool every shard search runs on, so searches never occupy HTTP I/O threads or
//! actor mailboxes. A full queue refuses the job (`overloaded`) instead of growing.

use crossbeam_channel::{Sender, TrySendError};

use crate::error::{EngineError, Result};

pub type Job = Box<dyn FnOnce() + Send + 'static>;

pub struct SearchPool {
    tx: Sender<Job>,
}

impl SearchPool {
    /// Starts `threads` workers behind a queue of `queue` jobs.
    pub fn new(threads: usize, queue: usize) -> std::io::Result<SearchPool> {
        let (tx, rx) = crossbeam_channel::bounded::<Job>(queue);
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("search-{i}"))
                .spawn(move || {
                    for job in rx {
                        // A panicking search must not take the worker down with it.
                        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                            metrics::counter!("ruvector_search_panics_total").increment(1);
                            tracing::error!("a search panicked; the worker continues");
                        }
                    }
                })?;
        }
        Ok(SearchPool { tx })
    }

    /// How full the queue is, 0..=1 (a load signal for admission).
    pub fn fullness(&self) -> f64 {
        match self.tx.capacity() {
            Some(c) if c > 0 => self.tx.len() as f64 / c as f64,
            _ => 0.0,
        }
    }

    pub fn submit(&self, job: Job) -> Result<()> {
        let r = self.tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => {
                metrics::counter!("ruvector_overloaded_total", "reason" => "search_pool")
                    .increment(1);
                EngineError::Overloaded("search pool queue is full".into())
            }
            TrySendError::Disconnected(_) => EngineError::Overloaded("search pool stopped".into()),
        });
        metrics::gauge!("ruvector_search_queue_depth").set(self.tx.len() as f64);
        r
    }
}
