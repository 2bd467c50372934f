//! Who may do what: a request's credential to a principal, its scope checked, and its
//! admission (shedding, rate limits) — one decision shared by the HTTP route gate, the lean SSE
//! server and every stream frame, so no transport can decide differently.

use std::net::IpAddr;
use std::sync::Arc;

use crate::auth::{Principal, Scope};
use crate::error::ApiError;
use crate::state::AppState;
use crate::supervise::Class;

/// Authenticates `token` (from `Authorization: Bearer` or `?token=`), requires `scope` and
/// admits one request of `class`.
pub fn admit_request(
    app: &AppState,
    token: Option<&str>,
    peer: Option<IpAddr>,
    scope: Scope,
    class: Class,
) -> Result<Arc<Principal>, ApiError> {
    let principal = Arc::new(app.auth.authenticate(token, peer)?);
    admit(app, &principal, Some(scope), class)?;
    Ok(principal)
}

/// Requires `scope` (when the request needs one) of a known principal and admits one request
/// of `class`.
pub fn admit(
    app: &AppState,
    principal: &Principal,
    scope: Option<Scope>,
    class: Class,
) -> Result<(), ApiError> {
    if let Some(scope) = scope {
        principal.require(scope)?;
    }
    app.supervisor.admit(principal, class)
}
