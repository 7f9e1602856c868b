//! `POST /api/v1/llm/feedback/batch`: many submits in one request, one result per item.
//!
//! Each item is the body `POST /feedback` takes, plus an optional `idempotency_key` (the
//! per-item counterpart of the `Idempotency-Key` header). Items are parsed and validated
//! one by one: a malformed or invalid item gets its own 400 (a reused key with another
//! body its 409) in the results and the others are stored. The answer comes once every
//! stored item is durable (one sync for the whole batch) and visible in reads.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::AppState;
use super::auth::Role;
use super::error::{ApiError, ErrorBody};
use super::extract::{Caller, RawBody, parse_json};
use super::feedback::SubmitResponse;
use crate::model::NewFeedback;
use crate::service::batch::BatchItem;
use crate::store::{IdempotencyKey, stable_hash};

/// The body of `POST /feedback/batch`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// The items, each the body of `POST /feedback` with an optional `idempotency_key`
    /// (a string of 1 to 255 printable characters). Each item is checked on its own, so
    /// any JSON value is accepted here and a bad one is reported in its result. At most
    /// `batch.max_items` (default 1000).
    #[schema(value_type = Vec<Value>, min_items = 1, max_items = 1000)]
    items: Vec<Value>,
}

/// The result of one item of a batch.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchItemResult {
    /// The item's position in the request, from 0.
    index: usize,
    /// 201 stored (or replayed), 400 invalid, 409 idempotency key used with another body.
    status: u16,
    /// The item's idempotency key, as sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<String>,
    /// True when the key had been used before with the same body: the stored item is
    /// answered and nothing new is stored.
    replayed: bool,
    /// The stored item, as `POST /feedback` answers it (on success).
    #[serde(skip_serializing_if = "Option::is_none")]
    feedback: Option<SubmitResponse>,
    /// The error category, as in `{error, details}` (on failure).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    error: Option<&'static str>,
    /// What is wrong with the item (on failure).
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<String>,
}

/// The answer of `POST /feedback/batch`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchResponse {
    /// Items in the request.
    count: usize,
    /// Items stored by this request.
    created: usize,
    /// Items whose key had been used before with the same body (nothing stored).
    replayed: usize,
    /// Items refused (400 or 409).
    failed: usize,
    /// One result per item, in request order.
    results: Vec<BatchItemResult>,
}

/// Reads one item: a JSON object with the submit fields and an optional key.
fn parse_item(value: Value) -> Result<(Option<String>, BatchItem), (Option<String>, ApiError)> {
    let Value::Object(mut map) = value else {
        return Err((
            None,
            ApiError::BadRequest(
                "each item must be a JSON object (the body of POST /feedback)".into(),
            ),
        ));
    };
    let key = match map.remove("idempotency_key") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) => Some(k),
        Some(_) => {
            return Err((
                None,
                ApiError::BadRequest("'idempotency_key' must be a string".into()),
            ));
        }
    };
    // The key is bound to the item's content: the same key with other content is a 409.
    let hash = serde_json::to_vec(&map)
        .map(|b| stable_hash(&b))
        .map_err(|e| (key.clone(), ApiError::Internal(e.to_string())))?;
    let new: NewFeedback = serde_json::from_value(Value::Object(map)).map_err(|e| {
        (
            key.clone(),
            ApiError::BadRequest(format!("invalid item: {e}")),
        )
    })?;
    Ok((
        key.clone(),
        BatchItem {
            new,
            key: key.map(|key| IdempotencyKey {
                key,
                request_hash: hash,
            }),
        },
    ))
}

fn failure(index: usize, key: Option<String>, e: &ApiError) -> BatchItemResult {
    BatchItemResult {
        index,
        status: e.status().as_u16(),
        idempotency_key: key,
        replayed: false,
        feedback: None,
        error: Some(e.category()),
        details: Some(e.to_string()),
    }
}

/// `POST /feedback/batch {items}`: validate and store each item; one result per item.
#[utoipa::path(
    post,
    path = "/api/v1/llm/feedback/batch",
    tag = "feedback",
    request_body = BatchRequest,
    responses(
        (status = 200, description = "Per-item results; every stored item is durable", body = BatchResponse),
        (status = 400, description = "No items, more than batch.max_items, or a malformed \
                                      body; nothing stored", body = ErrorBody),
    )
)]
pub async fn submit_batch(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Json<BatchResponse>, ApiError> {
    caller.require(Role::User)?;
    let req: BatchRequest = parse_json(&headers, &body)?;
    let count = req.items.len();
    if count == 0 {
        return Err(ApiError::BadRequest(
            "'items' is empty: a batch holds 1 or more items".into(),
        ));
    }
    if count > state.batch_max_items {
        return Err(ApiError::BadRequest(format!(
            "the batch holds {count} items; at most {} are allowed (batch.max_items): \
             split it, nothing was stored",
            state.batch_max_items
        )));
    }
    let service = state.service()?;
    // Parse every item; the good ones go to the service, the bad ones keep their slot.
    let mut results: Vec<Option<BatchItemResult>> = Vec::with_capacity(count);
    let mut keys = Vec::new();
    let mut items = Vec::new();
    for (index, value) in req.items.into_iter().enumerate() {
        match parse_item(value) {
            Ok((key, item)) => {
                results.push(None);
                keys.push((index, key));
                items.push(item);
            }
            Err((key, e)) => results.push(Some(failure(index, key, &e))),
        }
    }
    let actor = caller.actor();
    let outcomes = service.submit_batch(&actor, items).await?;
    let (mut created, mut replayed) = (0, 0);
    for ((index, key), outcome) in keys.into_iter().zip(outcomes) {
        let result = match outcome {
            Ok(stored) => {
                if stored.replay {
                    replayed += 1;
                } else {
                    created += 1;
                    state
                        .telemetry
                        .submit(&actor.org, stored.feedback.validation_status.as_str());
                }
                BatchItemResult {
                    index,
                    status: 201,
                    idempotency_key: key,
                    replayed: stored.replay,
                    feedback: Some(SubmitResponse::from(stored.feedback)),
                    error: None,
                    details: None,
                }
            }
            Err(e) => failure(index, key, &ApiError::from(e)),
        };
        if let Some(slot) = results.get_mut(index) {
            *slot = Some(result);
        }
    }
    let results: Vec<BatchItemResult> = results.into_iter().flatten().collect();
    if results.len() != count {
        return Err(ApiError::Internal(format!(
            "the batch answered {} of {count} items",
            results.len()
        )));
    }
    Ok(Json(BatchResponse {
        count,
        created,
        replayed,
        failed: count - created - replayed,
        results,
    }))
}
