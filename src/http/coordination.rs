//! The coordination REST mirror (PROTOCOL.md §Agent coordination): the frames' bodies and
//! answers as JSON under `/api/v1/coordination/…`, the path's fields added to the body; every
//! answer carries its reply `type` (`task_assigned` or `no_task`, …).

use std::future::Future;
use std::pin::Pin;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::read_json;
use super::guard::Caller;
use crate::error::ApiError;
use crate::service::coordination::{self, reply_json};
use crate::state::AppState;

type ApiResult = Result<HttpResponse, ApiError>;

/// Adds the path's fields to a body object.
fn with(mut body: Value, fields: &[(&str, &str)]) -> Value {
    if let Some(o) = body.as_object_mut() {
        for (k, v) in fields {
            o.insert((*k).into(), Value::from(*v));
        }
    }
    body
}

async fn serve(app: &AppState, caller: &Caller, kind: &str, body: Value) -> ApiResult {
    let op = coordination::parse(kind, body)?;
    let reply = coordination::call(app, caller, op, None).await?;
    Ok(HttpResponse::Ok().json(reply_json(&reply)))
}

/// The matched route's path parameters, by name.
fn params(req: &HttpRequest) -> Vec<(String, String)> {
    req.match_info()
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn fields(p: &[(String, String)]) -> Vec<(&str, &str)> {
    p.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// A handler for a request with a JSON body: the body plus the path's parameters is the frame
/// of type `kind`.
pub fn with_body(
    kind: &'static str,
) -> impl Fn(
    web::Data<AppState>,
    Caller,
    HttpRequest,
    web::Payload,
) -> Pin<Box<dyn Future<Output = ApiResult>>>
       + Clone
       + 'static {
    move |app, caller, req, payload| {
        Box::pin(async move {
            let path = params(&req);
            let (body, _busy): (Value, _) = read_json(&app, payload).await?;
            serve(&app, &caller, kind, with(body, &fields(&path))).await
        })
    }
}

/// A handler for a request without a body: the path's parameters are the frame of type `kind`.
pub fn from_path(
    kind: &'static str,
) -> impl Fn(web::Data<AppState>, Caller, HttpRequest) -> Pin<Box<dyn Future<Output = ApiResult>>>
       + Clone
       + 'static {
    move |app, caller, req| {
        Box::pin(async move {
            let path = params(&req);
            serve(&app, &caller, kind, with(json!({}), &fields(&path))).await
        })
    }
}

#[derive(Deserialize)]
pub struct AgentsQuery {
    swarm: Option<String>,
    status: Option<String>,
}

pub async fn agents(
    app: web::Data<AppState>,
    caller: Caller,
    q: web::Query<AgentsQuery>,
) -> ApiResult {
    let q = q.into_inner();
    serve(
        &app,
        &caller,
        "agents",
        json!({"swarm": q.swarm, "status": q.status}),
    )
    .await
}

#[derive(Deserialize)]
pub struct LastQuery {
    last: Option<usize>,
}

pub async fn topic_messages(
    app: web::Data<AppState>,
    caller: Caller,
    topic: web::Path<String>,
    q: web::Query<LastQuery>,
) -> ApiResult {
    let body = json!({"topic": *topic, "last": q.last.unwrap_or(10)});
    serve(&app, &caller, "topic_messages", body).await
}
