//! A session speaking agentic-flow's federation dialect: the first frame must be its `auth`
//! (token checked when authentication is on; a credential bound to a tenant may only use that
//! `tenantId`; scope `coordinate`), then `pull` and `push` go to the tenant's coordinator, one at
//! a time so the replies keep the requests' order. Errors are `{type:"error", error}` frames;
//! a refused `auth` closes the stream.

use std::sync::Arc;

use actix::prelude::*;
use ruvector_actors::validate_collection_name;
use serde_json::Value;

use super::Session;
use crate::auth::{Principal, Scope};
use crate::error::ApiError;
use crate::service::coordination;
use crate::stream::federation::{self, FedRequest};
use crate::stream::wire::{self, close};
use crate::supervise::Class;

impl Session {
    fn fed_send(&mut self, v: &Value) {
        let kind = if v["type"] == "error" {
            "fed_error"
        } else {
            "fed_reply"
        };
        self.enqueue(wire::text_frame(v), kind);
    }

    fn fed_refuse(&mut self, message: &str, ctx: &mut Context<Self>) {
        metrics::counter!("ruvector_federation_refused_total").increment(1);
        self.fed_send(&federation::error(message));
        self.close(close::POLICY, "federation authentication failed", ctx);
    }

    pub(super) fn on_federation_text(&mut self, text: &[u8], ctx: &mut Context<Self>) {
        let req = federation::parse(text);
        let Some(principal) = self.principal.clone() else {
            match req {
                FedRequest::Auth {
                    agent_id,
                    tenant_id,
                    token,
                } => self.fed_auth(agent_id, tenant_id, token, ctx),
                FedRequest::Bad(why) => self.fed_refuse(&why, ctx),
                FedRequest::Pull { .. } | FedRequest::Push { .. } | FedRequest::Unknown(_) => {
                    self.fed_refuse("Authentication required", ctx)
                }
            }
            return;
        };
        let tenant = self.fed.as_ref().and_then(|f| f.tenant_id.clone());
        let other_tenant = |t: &Option<String>| t.is_some() && *t != tenant;
        match req {
            FedRequest::Auth { .. } => self.fed_send(&federation::ack()),
            FedRequest::Bad(why) => self.fed_send(&federation::error(&why)),
            FedRequest::Unknown(t) => {
                self.fed_send(&federation::error(&format!("Unknown message type: {t}")))
            }
            FedRequest::Pull { tenant_id, .. } | FedRequest::Push { tenant_id, .. }
                if other_tenant(&tenant_id) =>
            {
                self.fed_send(&federation::error(
                    "tenantId differs from the authenticated one",
                ))
            }
            FedRequest::Pull { clock, .. } => {
                if let Err(e) = self.app.supervisor.admit(&principal, Class::Read) {
                    return self.fed_send(&federation::error(&e.to_string()));
                }
                let app = self.app.clone();
                self.fed_later(ctx, async move {
                    let (data, clock) = coordination::fed_pull(&app, &principal, clock).await?;
                    Ok(federation::pulled(data, &clock))
                });
            }
            FedRequest::Push { clock, data, .. } => {
                if let Err(e) = self.app.supervisor.admit(&principal, Class::Write) {
                    return self.fed_send(&federation::error(&e.to_string()));
                }
                let (Some(stream), Some(agent)) = (
                    self.registration.as_ref().map(|r| r.id()),
                    self.fed.as_ref().and_then(|f| f.agent_id.clone()),
                ) else {
                    return;
                };
                let app = self.app.clone();
                self.fed_later(ctx, async move {
                    coordination::fed_push(&app, &principal, stream, agent, clock, data).await?;
                    Ok(federation::ack())
                });
            }
        }
    }

    /// Serves one request; its reply (or `error` frame) is sent when it is done.
    fn fed_later<F>(&mut self, ctx: &mut Context<Self>, fut: F)
    where
        F: std::future::Future<Output = Result<Value, ApiError>> + 'static,
    {
        self.begin();
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
            match res {
                Ok(v) => act.fed_send(&v),
                Err(e) => act.fed_send(&federation::error(&e.to_string())),
            }
            act.end(ctx);
            act.flush(ctx);
        }));
    }

    fn fed_auth(
        &mut self,
        agent_id: String,
        tenant_id: String,
        token: String,
        ctx: &mut Context<Self>,
    ) {
        let peer = self.conn.sock.peer_addr().ok().map(|a| a.ip());
        let base = if self.app.auth.enabled() {
            match self.app.auth.authenticate(Some(&token), peer) {
                Ok(p) => p,
                Err(e) => return self.fed_refuse(&e.to_string(), ctx),
            }
        } else {
            Principal::anonymous(peer)
        };
        if let Err(e) = base.require(Scope::Coordinate) {
            return self.fed_refuse(&e.to_string(), ctx);
        }
        if base.tenant.as_deref().is_some_and(|t| t != tenant_id) {
            return self.fed_refuse("the credential is not valid for this tenantId", ctx);
        }
        if validate_collection_name(&tenant_id).is_err() {
            return self.fed_refuse(
                "tenantId must be a plain name (letters, digits, - and _)",
                ctx,
            );
        }
        let mut p = base;
        p.tenant = Some(Arc::from(tenant_id.as_str()));
        let principal = Arc::new(p);
        let Some(sink) = self.stream_sink(ctx) else {
            return;
        };
        if let Some(f) = self.fed.as_mut() {
            f.agent_id = Some(agent_id);
            f.tenant_id = Some(tenant_id);
        }
        self.principal = Some(principal.clone());
        let app = self.app.clone();
        self.begin();
        ctx.spawn(
            async move { coordination::fed_join(&app, &principal, sink).await }
                .into_actor(self)
                .map(|res, act, ctx| {
                    act.end(ctx);
                    match res {
                        Ok(()) => {
                            metrics::counter!("ruvector_federation_sessions_total").increment(1);
                            act.fed_send(&federation::ack());
                            act.flush(ctx);
                        }
                        Err(e) => act.fed_refuse(&e.to_string(), ctx),
                    }
                }),
        );
    }
}
