//! `/health/startup|live|ready` (from the server's `Lifecycle` — loaded, caught up with the
//! regions, draining — and the shed level) and
//! `/metrics` (the Prometheus exposition, without series of deleted collections).

use std::collections::HashSet;

use actix_web::{web, HttpResponse};
use ruvector_actors::ListCollections;
use serde_json::json;

use crate::state::AppState;

fn answer(state: &AppState, ok: bool, status: &str) -> HttpResponse {
    let body = json!({
        "status": status,
        "region": state.settings.server.region,
        "instance": state.settings.server.instance_id,
        "version": env!("CARGO_PKG_VERSION"),
    });
    if ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "1"))
            .json(body)
    }
}

pub async fn startup(state: web::Data<AppState>) -> HttpResponse {
    let loaded = state.lifecycle.is_loaded();
    answer(&state, loaded, if loaded { "started" } else { "loading" })
}

pub async fn live(state: web::Data<AppState>) -> HttpResponse {
    answer(&state, true, "alive")
}

pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let h = &state.lifecycle;
    let status = if h.is_draining() {
        "draining"
    } else if !h.is_loaded() {
        "loading"
    } else if !h.is_caught_up() {
        "catching_up"
    } else if state.supervisor.rejecting() {
        "shedding"
    } else {
        "ready"
    };
    answer(&state, status == "ready", status)
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let Some(p) = &state.prometheus else {
        return HttpResponse::NotFound()
            .json(json!({"error": {"code": "not_found", "message": "metrics are disabled"}}));
    };
    let text = p.render();
    // The exporter cannot forget a series: those of deleted collections are left out here.
    let live = state
        .router
        .send(ListCollections)
        .await
        .ok()
        .and_then(Result::ok)
        .map(|list| {
            list.into_iter()
                .map(|c| c.name)
                .collect::<HashSet<String>>()
        });
    let body = match live {
        Some(live) => without_deleted_collections(&text, &live),
        None => text,
    };
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(body)
}

/// The exposition without the lines labelled with a collection that no longer exists.
fn without_deleted_collections(text: &str, live: &HashSet<String>) -> String {
    const LABEL: &str = "collection=\"";
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let keep = match line.find(LABEL) {
            Some(i) => {
                let rest = &line[i + LABEL.len()..];
                rest.find('"').is_none_or(|end| live.contains(&rest[..end]))
            }
            None => true,
        };
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}
