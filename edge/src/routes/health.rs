//! Health and metrics.

use axum::response::IntoResponse;

/// # `GET /healthz`
/// 200 `{"status":"ready"}` while the edge can serve (it only starts serving
/// after bootstrap); 503 `{"status":"unhealthy","problems":[…]}` while it
/// cannot (no NATS link), so a load balancer sends clients elsewhere.
pub async fn healthz(
    axum::extract::State(state): axum::extract::State<crate::state::EdgeState>,
) -> impl IntoResponse {
    let (status, body) = state.health.report();
    (
        axum::http::StatusCode::from_u16(status)
            .unwrap_or(axum::http::StatusCode::SERVICE_UNAVAILABLE),
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
}

/// # `GET /metrics`
/// Prometheus text format.
pub async fn metrics() -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        msgr_core::telemetry::render(),
    )
}

/// The REST reference, compiled in: client authors can point their tools at
/// a running server.
const OPENAPI: &str = include_str!("../../../schemas/openapi.yaml");

/// # `GET /openapi.yaml`
/// The OpenAPI document of this server's REST API.
pub async fn openapi() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/yaml")],
        OPENAPI,
    )
}
