//! The bundled web client (`web/`): compiled into the binary so `/` works with
//! no install step; `web_dir` serves the same files from disk instead, for
//! editing the client without rebuilding the edge.

use std::path::PathBuf;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::error::ApiError;
use crate::state::EdgeState;

/// Every file of the client: (URL name, content type, embedded bytes).
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../../web/index.html"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../../web/style.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/api.js"),
    ),
    (
        "dom.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/dom.js"),
    ),
    (
        "changes.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/changes.js"),
    ),
    (
        "prefs.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/prefs.js"),
    ),
    (
        "outbox.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/outbox.js"),
    ),
    (
        "media.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/media.js"),
    ),
    (
        "users.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/users.js"),
    ),
    (
        "message-view.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/message-view.js"),
    ),
    (
        "actions.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/actions.js"),
    ),
    (
        "history.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/history.js"),
    ),
    (
        "frames.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/frames.js"),
    ),
    (
        "groups-view.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/groups-view.js"),
    ),
    (
        "chat-list.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/chat-list.js"),
    ),
    (
        "icon.svg",
        "image/svg+xml",
        include_bytes!("../../web/icon.svg"),
    ),
];

/// Scripts, styles and images only from this origin; media previews are blob
/// URLs. Blocks injected scripts should a message ever reach the DOM as HTML.
const CSP: &str = "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; \
                   connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; \
                   frame-ancestors 'none'; form-action 'self'";

/// Adds `/` and one route per client file.
pub fn routes(mut app: Router<EdgeState>, dir: Option<PathBuf>) -> Router<EdgeState> {
    for &(name, content_type, bytes) in ASSETS {
        let dir = dir.clone();
        let handler = get(move || serve(name, content_type, bytes, dir));
        if name == "index.html" {
            app = app.route("/", handler.clone());
        }
        app = app.route(&format!("/{name}"), handler);
    }
    app
}

async fn serve(
    name: &'static str,
    content_type: &'static str,
    embedded: &'static [u8],
    dir: Option<PathBuf>,
) -> Response {
    let body = match dir {
        None => axum::body::Bytes::from_static(embedded),
        Some(d) => match tokio::fs::read(d.join(name)).await {
            Ok(b) => b.into(),
            Err(_) => {
                return ApiError::not_found("not_found", "web client file missing").into_response()
            }
        },
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Small files; always revalidate so an upgraded edge serves the new client.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}
