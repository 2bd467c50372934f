//! Every metric the server exports, described and registered at start, so `/metrics` lists
//! each one (at zero) before its first event: dashboards and alerts never depend on traffic.
//! Adding a metric means adding it here; a test fails on any `ruvector_` name in the sources
//! that this list lacks.

use metrics::{describe_counter, describe_gauge, describe_histogram};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// (name, kind, help), by name.
pub const METRICS: &[(&str, Kind, &str)] = &[
    (
        "ruvector_build_info",
        Kind::Gauge,
        "Build information (label version); always 1.",
    ),
    (
        "ruvector_cache_lookup_seconds",
        Kind::Histogram,
        "Regional search cache lookup latency.",
    ),
    (
        "ruvector_cache_requests_total",
        Kind::Counter,
        "Regional search cache lookups by result (hit, miss, error).",
    ),
    (
        "ruvector_cache_stores_dropped_total",
        Kind::Counter,
        "Search answers not cached (too large, or too many stores pending).",
    ),
    (
        "ruvector_cache_stores_total",
        Kind::Counter,
        "Search answers stored in the regional cache.",
    ),
    ("ruvector_collections", Kind::Gauge, "Collections loaded."),
    (
        "ruvector_collections_held_back",
        Kind::Gauge,
        "Collections held back at start after damage (see the log; ruvector-streaming repair).",
    ),
    (
        "ruvector_coordination_group_size",
        Kind::Histogram,
        "Coordination changes released by one log sync (group commit).",
    ),
    (
        "ruvector_coordination_loads_total",
        Kind::Counter,
        "Coordinator copies loaded from the region's shared coordination state.",
    ),
    (
        "ruvector_coordination_seconds",
        Kind::Histogram,
        "Coordination request latency by op.",
    ),
    (
        "ruvector_coordination_stale_total",
        Kind::Counter,
        "Coordination proposals answered stale by the shared state (planned again).",
    ),
    (
        "ruvector_coordination_stream_applied_total",
        Kind::Counter,
        "Changes of other instances applied from the coordination stream.",
    ),
    (
        "ruvector_coordination_stream_rejected_total",
        Kind::Counter,
        "Coordination stream entries rejected as malformed.",
    ),
    (
        "ruvector_coordination_stream_up",
        Kind::Gauge,
        "1 while the coordination stream reader is connected.",
    ),
    (
        "ruvector_coordinators_started_total",
        Kind::Counter,
        "Tenant coordinators started.",
    ),
    (
        "ruvector_data_dir_free_bytes",
        Kind::Gauge,
        "Free bytes on the data directory's file system.",
    ),
    (
        "ruvector_data_dir_size_bytes",
        Kind::Gauge,
        "Size of the data directory's file system.",
    ),
    (
        "ruvector_federation_refused_total",
        Kind::Counter,
        "Federation messages refused.",
    ),
    (
        "ruvector_federation_sessions_total",
        Kind::Counter,
        "Federation sessions opened.",
    ),
    (
        "ruvector_http_request_duration_seconds",
        Kind::Histogram,
        "HTTP request latency by route and method.",
    ),
    (
        "ruvector_http_requests_total",
        Kind::Counter,
        "HTTP requests by route, method and status class.",
    ),
    (
        "ruvector_hub_panics_total",
        Kind::Counter,
        "Panics caught in subscription matching.",
    ),
    (
        "ruvector_index_link_seconds",
        Kind::Histogram,
        "Time to link a batch of points into the graph.",
    ),
    (
        "ruvector_index_linked_total",
        Kind::Counter,
        "Points linked into the graph.",
    ),
    (
        "ruvector_index_rebuilds_total",
        Kind::Counter,
        "Graph rebuilds.",
    ),
    (
        "ruvector_mcp_tool_calls_total",
        Kind::Counter,
        "MCP tool calls by tool.",
    ),
    (
        "ruvector_overloaded_total",
        Kind::Counter,
        "Requests refused as overloaded (503) by reason.",
    ),
    (
        "ruvector_process_cpu_ratio",
        Kind::Gauge,
        "Process CPU use as a share of the cores available.",
    ),
    (
        "ruvector_rate_limit_leases_total",
        Kind::Counter,
        "Regional rate-limit lease refills by result.",
    ),
    (
        "ruvector_rate_limited_total",
        Kind::Counter,
        "Requests refused by rate limits (429).",
    ),
    (
        "ruvector_redis_up",
        Kind::Gauge,
        "1 while the region's Redis answers.",
    ),
    (
        "ruvector_region_applied_total",
        Kind::Counter,
        "Replicated changes applied, by peer.",
    ),
    (
        "ruvector_region_conflicts_total",
        Kind::Counter,
        "Concurrent replicated updates (version vectors), by peer.",
    ),
    (
        "ruvector_region_lag_entries",
        Kind::Gauge,
        "Entries of a peer's change stream not yet applied (counted up to 1,000).",
    ),
    (
        "ruvector_region_lag_seconds",
        Kind::Gauge,
        "Age of the newest change applied from a peer.",
    ),
    (
        "ruvector_region_link_up",
        Kind::Gauge,
        "1 while the link to a peer's change stream is connected.",
    ),
    (
        "ruvector_region_published_total",
        Kind::Counter,
        "Local writes appended to this region's change stream.",
    ),
    (
        "ruvector_region_rejected_total",
        Kind::Counter,
        "Replicated changes rejected as invalid, by peer.",
    ),
    (
        "ruvector_region_replication_delay_seconds",
        Kind::Histogram,
        "Origin-to-apply delay of replicated changes, by peer.",
    ),
    (
        "ruvector_region_resyncs_total",
        Kind::Counter,
        "Full resyncs from a peer, by reason.",
    ),
    (
        "ruvector_region_superseded_total",
        Kind::Counter,
        "Replicated changes that lost last-write-wins, by peer.",
    ),
    (
        "ruvector_search_expired_total",
        Kind::Counter,
        "Searches whose deadline passed before they ran.",
    ),
    (
        "ruvector_search_panics_total",
        Kind::Counter,
        "Panics caught in searches.",
    ),
    (
        "ruvector_search_queue_depth",
        Kind::Gauge,
        "Searches waiting for the search pool.",
    ),
    (
        "ruvector_shard_apply_failures_total",
        Kind::Counter,
        "Batches a shard could not apply after logging them.",
    ),
    (
        "ruvector_shard_delete_tombstones",
        Kind::Gauge,
        "Delete tombstones kept for replication, by collection and shard.",
    ),
    (
        "ruvector_shard_loads_total",
        Kind::Counter,
        "Shards loaded at start.",
    ),
    (
        "ruvector_shard_points",
        Kind::Gauge,
        "Live points, by collection and shard.",
    ),
    (
        "ruvector_shard_queue_depth",
        Kind::Gauge,
        "Write requests waiting for a shard's writer.",
    ),
    (
        "ruvector_shard_recoveries_total",
        Kind::Counter,
        "Shards recovered from the log after a failure.",
    ),
    (
        "ruvector_shard_search_seconds",
        Kind::Histogram,
        "One shard's search latency.",
    ),
    (
        "ruvector_shard_tombstones",
        Kind::Gauge,
        "Deleted slots not yet compacted, by collection and shard.",
    ),
    (
        "ruvector_shard_unindexed",
        Kind::Gauge,
        "Acknowledged points not yet linked into the graph (searched exactly).",
    ),
    (
        "ruvector_shard_writes_total",
        Kind::Counter,
        "Write operations applied by shards.",
    ),
    (
        "ruvector_shed_actions_total",
        Kind::Counter,
        "Load-shedding actions taken, by action.",
    ),
    (
        "ruvector_shed_level",
        Kind::Gauge,
        "Current load-shedding level (0 normal to 3).",
    ),
    (
        "ruvector_shed_level_changes_total",
        Kind::Counter,
        "Load-shedding level changes.",
    ),
    (
        "ruvector_shed_load",
        Kind::Gauge,
        "The load figure the shedder decides on (0 to 1+).",
    ),
    (
        "ruvector_snapshot_failures_total",
        Kind::Counter,
        "Snapshots that failed.",
    ),
    (
        "ruvector_snapshot_fallbacks_total",
        Kind::Counter,
        "Starts that fell back to an older snapshot.",
    ),
    (
        "ruvector_snapshot_seconds",
        Kind::Histogram,
        "Snapshot duration.",
    ),
    (
        "ruvector_sse_resets_total",
        Kind::Counter,
        "SSE resumes answered with reset.",
    ),
    (
        "ruvector_stream_abuse_closes_total",
        Kind::Counter,
        "Streams closed for abuse (floods, oversized frames).",
    ),
    (
        "ruvector_stream_closes_total",
        Kind::Counter,
        "Streams closed, by reason.",
    ),
    (
        "ruvector_stream_errors_total",
        Kind::Counter,
        "Error frames sent, by code.",
    ),
    (
        "ruvector_stream_events_sent_total",
        Kind::Counter,
        "Subscription events sent.",
    ),
    (
        "ruvector_stream_first_result_seconds",
        Kind::Histogram,
        "Time to the first streamed search result.",
    ),
    (
        "ruvector_stream_frames_in_total",
        Kind::Counter,
        "Frames received, by type.",
    ),
    (
        "ruvector_stream_frames_out_total",
        Kind::Counter,
        "Frames sent, by type.",
    ),
    (
        "ruvector_stream_outbound_bytes",
        Kind::Gauge,
        "Bytes queued for slow readers.",
    ),
    (
        "ruvector_stream_panics_total",
        Kind::Counter,
        "Panics caught in stream handlers.",
    ),
    (
        "ruvector_stream_read_pauses_total",
        Kind::Counter,
        "Reads paused for backpressure.",
    ),
    (
        "ruvector_stream_search_seconds",
        Kind::Histogram,
        "Streamed search duration.",
    ),
    (
        "ruvector_stream_slow_consumers_total",
        Kind::Counter,
        "Streams closed as slow consumers.",
    ),
    (
        "ruvector_stream_sweep_seconds",
        Kind::Histogram,
        "Idle-stream sweep duration.",
    ),
    (
        "ruvector_streams_open",
        Kind::Gauge,
        "Open streams, by kind.",
    ),
    (
        "ruvector_streams_opened_total",
        Kind::Counter,
        "Streams opened, by kind.",
    ),
    (
        "ruvector_streams_refused_total",
        Kind::Counter,
        "Streams refused at admission, by reason.",
    ),
    (
        "ruvector_subscription_events_total",
        Kind::Counter,
        "Changes delivered to subscriptions.",
    ),
    (
        "ruvector_subscriptions",
        Kind::Gauge,
        "Standing subscriptions.",
    ),
    (
        "ruvector_tombstones_pruned_total",
        Kind::Counter,
        "Delete tombstones pruned after the retention.",
    ),
    (
        "ruvector_wal_batch_ops",
        Kind::Histogram,
        "Operations per log batch (group commit).",
    ),
    (
        "ruvector_wal_damaged_records_total",
        Kind::Counter,
        "Damaged log records found.",
    ),
    (
        "ruvector_wal_fsync_seconds",
        Kind::Histogram,
        "Log fsync latency.",
    ),
    (
        "ruvector_wal_quarantined_records_total",
        Kind::Counter,
        "Log records quarantined by repair.",
    ),
    (
        "ruvector_wal_replayed_records_total",
        Kind::Counter,
        "Log records replayed at start.",
    ),
    (
        "ruvector_wal_truncations_total",
        Kind::Counter,
        "Logs cut at damage by repair.",
    ),
];

/// Describes every metric and registers it (counters and gauges at 0, histograms empty).
pub fn describe_all() {
    for &(name, kind, help) in METRICS {
        match kind {
            Kind::Counter => {
                describe_counter!(name, help);
                metrics::counter!(name).increment(0);
            }
            Kind::Gauge => {
                describe_gauge!(name, help);
                metrics::gauge!(name).increment(0.0);
            }
            Kind::Histogram => {
                describe_histogram!(name, help);
                let _ = metrics::histogram!(name);
            }
        }
    }
}
