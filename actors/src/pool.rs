//! The bounded pool shard searches run on, so long searches never occupy HTTP I/O threads or
//! actor mailboxes (small unfiltered graph searches run inline: see `index.inline_search_max_ef`).
//! A full queue refuses the job (`overloaded`) instead of growing. It lives
//! beside (not inside) the router and the shards because both use it.
//!
//! The pool also keeps the engine's **queueing delay**: how long work waited behind *other
//! requests' work* for a search slot here, and for a shard writer (recorded by the writers).
//! That wait — not how busy the CPUs are — is what clients feel when the server is overloaded,
//! so it is a shed signal. Work that found its queue empty counts as no wait even if it then
//! waited for background work (a graph-view refresh, a snapshot): background work alone must
//! never throttle callers, and a lone client's bulk load is not an overload.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};

use crate::error::{EngineError, Overload, Result};

pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// A queued search: when it was queued and until when its requester waits for it.
struct Queued {
    enqueued: Instant,
    /// Whether other searches were queued ahead of it.
    behind_others: bool,
    deadline: Instant,
    job: Job,
}

/// Mean queueing delay over a window (read and reset by the shedder).
#[derive(Debug, Default)]
pub struct QueueWait {
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl QueueWait {
    /// Records one unit of work's wait; `behind_others`: whether other requests' work was
    /// queued ahead of it (if not, it counts as no wait: see the module's doc).
    pub fn record(&self, waited: Duration, behind_others: bool) {
        let waited = if behind_others {
            waited
        } else {
            Duration::ZERO
        };
        self.sum_us
            .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The mean wait (ms) since the last call, and resets the window.
    pub fn take_mean_ms(&self) -> f64 {
        let sum = self.sum_us.swap(0, Ordering::Relaxed);
        let n = self.count.swap(0, Ordering::Relaxed);
        if n == 0 {
            0.0
        } else {
            sum as f64 / n as f64 / 1000.0
        }
    }
}

pub struct SearchPool {
    tx: Sender<Queued>,
    wait: Arc<QueueWait>,
}

impl SearchPool {
    /// Starts `threads` workers behind a queue of `queue` jobs.
    pub fn new(threads: usize, queue: usize) -> std::io::Result<SearchPool> {
        let (tx, rx) = crossbeam_channel::bounded::<Queued>(queue);
        let wait = Arc::new(QueueWait::default());
        metrics::gauge!("ruvector_search_queue_depth").set(0.0);
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let wait = wait.clone();
            std::thread::Builder::new()
                .name(format!("search-{i}"))
                .spawn(move || {
                    for q in rx {
                        let now = Instant::now();
                        wait.record(now.duration_since(q.enqueued), q.behind_others);
                        if now >= q.deadline {
                            // Its requester has given up (timeout): the work would be wasted.
                            metrics::counter!("ruvector_search_expired_total").increment(1);
                            continue;
                        }
                        // A panicking search must not take the worker down with it.
                        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(q.job)).is_err() {
                            metrics::counter!("ruvector_search_panics_total").increment(1);
                            tracing::error!("a search panicked; the worker continues");
                        }
                    }
                })?;
        }
        Ok(SearchPool { tx, wait })
    }

    /// How full the queue is, 0..=1 (a load signal for admission).
    pub fn fullness(&self) -> f64 {
        match self.tx.capacity() {
            Some(c) if c > 0 => self.tx.len() as f64 / c as f64,
            _ => 0.0,
        }
    }

    /// The engine's queueing delay (search slots and shard writers).
    pub fn queue_wait(&self) -> &Arc<QueueWait> {
        &self.wait
    }

    /// Queues `job`; it is skipped if it has not started by `deadline`.
    pub fn submit(&self, job: Job, deadline: Instant) -> Result<()> {
        let q = Queued {
            enqueued: Instant::now(),
            behind_others: !self.tx.is_empty(),
            deadline,
            job,
        };
        let r = self.tx.try_send(q).map_err(|e| match e {
            TrySendError::Full(_) => {
                metrics::counter!("ruvector_overloaded_total", "reason" => "search_pool")
                    .increment(1);
                EngineError::Overloaded(Overload::SearchPoolFull)
            }
            TrySendError::Disconnected(_) => EngineError::Overloaded(Overload::Stopping),
        });
        metrics::gauge!("ruvector_search_queue_depth").set(self.tx.len() as f64);
        r
    }
}
