//! The shared tier: this region's Redis, used for what one server alone cannot do (a regional
//! cache, rate limits shared by a region's instances, the change log other regions tail, the
//! agent coordination state a region's instances share: `coordination`, `coord_tail`). Redis
//! is optional and never on the path of local serving: with none configured nothing here runs;
//! with one configured but down, callers get `TierError::Down` at once (no waiting on a dead
//! socket), `ruvector_redis_up` is 0, and the health task brings everything back by itself.

mod cache;
mod client;
mod coord_scripts;
mod coord_tail;
mod coordination;
mod limits;

pub use cache::SearchCache;
pub use client::{dedicated_connection, RedisTier, TierError};
pub use coord_tail::CoordTail;
pub use coordination::RedisCoord;
pub use limits::{Budget, Regional, RegionalLimits};
