//! The data directory's file system, sampled every 10 s into `ruvector_data_dir_free_bytes` and
//! `ruvector_data_dir_size_bytes`: a full disk stops every write (the log cannot append), so it
//! is something to alert on before it happens (deploy/prometheus/alerts.yaml).

use std::path::PathBuf;
use std::time::Duration;

/// Starts the sampler on the current runtime.
pub fn spawn_sampler(data_dir: PathBuf) {
    actix_web::rt::spawn(async move {
        let mut logged = false;
        loop {
            match rustix::fs::statvfs(&data_dir) {
                Ok(s) => {
                    let block = s.f_frsize.max(1) as f64;
                    metrics::gauge!("ruvector_data_dir_free_bytes").set(s.f_bavail as f64 * block);
                    metrics::gauge!("ruvector_data_dir_size_bytes").set(s.f_blocks as f64 * block);
                }
                Err(e) if !logged => {
                    logged = true;
                    tracing::warn!(error = %e, dir = %data_dir.display(), "cannot read the data directory's free space");
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
    });
}
