//! The blocking HTTP client every command of this crate uses (60 s timeout), in one place below
//! the commands so none of them imports another for it.

use std::time::Duration;

pub fn http_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap_or_default()
}
