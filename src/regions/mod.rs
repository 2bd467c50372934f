//! Regions: active-active replication between regions, and between the instances of one
//! region, over Redis Streams.
//!
//! - `publisher`: appends every write acknowledged here to `ruvector:changes:{region}` in this
//!   region's Redis (the shard logs are the outbox; nothing lost while Redis is down, nothing
//!   twice).
//! - `link`: one per peer region and one for this region's own stream (the writes of its other
//!   instances): tails the stream and applies each entry as a replicated write, which takes
//!   effect only if its version wins (last-write-wins on (time, region, instance); version
//!   vectors count the concurrent ones).
//! - `entry`: the stream entry format; `offset`: a link's durable place; `resync`: a full copy
//!   from a peer over HTTP when a link's place is lost; `drops`: collection deletes (a durable
//!   outbox and the collections' tombstones); `apply`: the one write path of replicated changes.
//!
//! Without Redis configured none of it runs.

mod apply;
mod drops;
mod entry;
pub mod keys;
mod link;
mod offset;
mod publisher;
mod resync;

use std::time::Duration;

use actix::prelude::*;
use ruvector_actors::{Catalogue, Router};

use crate::lifecycle::Lifecycle;
use crate::settings::Settings;

pub use drops::Drops;

/// The collection-delete record of this instance, when replication runs (Redis configured).
pub fn drops(settings: &Settings) -> std::io::Result<Option<std::sync::Arc<Drops>>> {
    if !settings.redis.enabled() {
        return Ok(None);
    }
    Drops::open(
        &settings.storage.data_dir,
        &settings.server.region,
        &settings.server.instance_id,
    )
    .map(Some)
}

/// The actor that owns the publisher and the links: stopping it stops them all.
pub struct Replication {
    tasks: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>>,
}

impl Actor for Replication {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        for task in self.tasks.drain(..) {
            ctx.spawn(actix::fut::wrap_future(task));
        }
    }
}

/// Starts publishing and one link per peer plus one for this region's other instances, each
/// holding readiness back until it has read its backlog (`regions.catch_up_wait_s` at most);
/// `None` without Redis.
pub fn start(
    settings: &Settings,
    catalogue: Catalogue,
    router: Addr<Router>,
    drops: Option<std::sync::Arc<Drops>>,
    lifecycle: &std::sync::Arc<Lifecycle>,
) -> std::io::Result<Option<Addr<Replication>>> {
    let Some(drops) = drops else {
        return Ok(None);
    };
    let redis = &settings.redis;
    let regions = &settings.regions;
    let region = settings.server.region.clone();
    let instance = settings.server.instance_id.clone();
    let command_timeout = Duration::from_millis(redis.command_timeout_ms);
    let connect_timeout = Duration::from_millis(redis.connect_timeout_ms);
    let client = redis::Client::open(redis.url.as_str()).map_err(std::io::Error::other)?;
    let mut tasks: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>> = Vec::new();
    let publisher = publisher::Publisher::new(
        publisher::PublisherConfig {
            client,
            region: region.clone(),
            instance: instance.clone(),
            maxlen: regions.stream_maxlen,
            command_timeout,
            connect_timeout,
            interval: Duration::from_millis(regions.publish_interval_ms),
            batch: regions.batch as usize,
            retention_ns: regions.tombstone_retention_s.saturating_mul(1_000_000_000),
        },
        catalogue,
        drops.clone(),
    );
    tasks.push(Box::pin(publisher.run()));
    let own = std::iter::once((region.clone(), redis.url.clone(), String::new()));
    let peers = regions
        .peers
        .iter()
        .map(|p| (p.name.clone(), p.redis_url.clone(), p.http_url.clone()));
    lifecycle.expect_catch_up(
        1 + regions.peers.len(),
        Duration::from_secs(regions.catch_up_wait_s),
    );
    for (peer, redis_url, http_url) in own.chain(peers) {
        let link = link::Link::new(
            link::LinkConfig {
                peer,
                redis_url,
                http_url,
                instance: instance.clone(),
                data_dir: settings.storage.data_dir.clone(),
                block: Duration::from_millis(regions.block_ms),
                count: regions.batch as usize,
                command_timeout,
                connect_timeout,
            },
            router.clone(),
            drops.clone(),
            lifecycle.clone(),
        )?;
        tasks.push(Box::pin(link.run()));
    }
    Ok(Some(Replication { tasks }.start()))
}
