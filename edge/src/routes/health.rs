//! Health and metrics.

use axum::response::IntoResponse;

/// # `GET /healthz`
/// 200 once the edge serves (it only starts serving after bootstrap).
pub async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ready"}))
}

/// # `GET /metrics`
/// Prometheus text format.
pub async fn metrics() -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        msgr_core::telemetry::prometheus().render(),
    )
}
