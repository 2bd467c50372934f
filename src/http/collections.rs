//! REST handlers for collections (PROTOCOL.md §Collections): parse, call `service::collections`,
//! answer.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::body::read_json;
use super::guard::Caller;
use crate::error::ApiError;
use crate::service::collections::{self, CreateBody};
use crate::state::AppState;

type ApiResult = Result<HttpResponse, ApiError>;

pub async fn create_collection(
    state: web::Data<AppState>,
    caller: Caller,
    name: web::Path<String>,
    payload: web::Payload,
) -> ApiResult {
    let (body, _busy): (CreateBody, _) = read_json(&state, payload).await?;
    let (info, created) = collections::create(&state, &caller, &name, body).await?;
    Ok(if created {
        HttpResponse::Created().json(info)
    } else {
        HttpResponse::Ok().json(info)
    })
}

pub async fn list_collections(state: web::Data<AppState>, caller: Caller) -> ApiResult {
    let list = collections::list(&state, &caller).await?;
    Ok(HttpResponse::Ok().json(json!({ "collections": list })))
}

pub async fn get_collection(
    state: web::Data<AppState>,
    caller: Caller,
    name: web::Path<String>,
) -> ApiResult {
    Ok(HttpResponse::Ok().json(collections::get(&state, &caller, &name).await?))
}

pub async fn delete_collection(
    state: web::Data<AppState>,
    caller: Caller,
    name: web::Path<String>,
) -> ApiResult {
    collections::delete(&state, &caller, &name).await?;
    Ok(HttpResponse::NoContent().finish())
}
