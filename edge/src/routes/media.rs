//! Media upload and download. Bytes stream between the client and the object
//! store in bounded parts; the edge never holds a whole file. Metadata and
//! read authorization come from the workers (`msgr.v1.rpc.media.*`).

use std::collections::HashMap;
use std::ops::Range;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use msgr_core::media::{object_key, sniff_image, thumbnail_key};
use msgr_nats::{rpc, subject};
use msgr_schemas::pb::v1 as pb;
use object_store::{GetOptions, ObjectStoreExt as _, WriteMultipart};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::auth::AuthUser;
use crate::error::{ApiError, Path};
use crate::state::EdgeState;

/// Parts in flight per upload: the edge buffers at most this many parts.
const UPLOAD_CONCURRENCY: usize = 2;

fn too_large(max: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("media is limited to {max} bytes"),
    )
}

/// What a client may declare for a non-image: a plain `type/subtype`.
fn declared_type(raw: Option<&str>) -> String {
    let t = raw
        .and_then(|v| v.split(';').next())
        .map(str::trim)
        .unwrap_or_default()
        .to_ascii_lowercase();
    let token = |p: &str| {
        p.bytes().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && p.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"+-.".contains(&c))
    };
    let ok = t.split_once('/').is_some_and(|(a, b)| token(a) && token(b));
    // Never trust a client's claim that something is an image: images are
    // recognised from their bytes instead.
    if ok && !t.starts_with("image/") && is_kept_type(&t) {
        t
    } else {
        "application/octet-stream".to_owned()
    }
}

/// The declared types a download keeps (an allow-list: a deny-list missed
/// `application/ecmascript`, `text/jscript` and the like). Anything else is
/// served as `application/octet-stream`; only sniffed images render inline.
fn is_kept_type(t: &str) -> bool {
    const EXACT: &[&str] = &[
        "text/plain",
        "text/csv",
        "application/pdf",
        "application/zip",
        "application/gzip",
        "application/x-7z-compressed",
        "application/epub+zip",
        "application/msword",
        "application/vnd.ms-excel",
        "application/vnd.ms-powerpoint",
    ];
    const PREFIXES: &[&str] = &[
        "audio/",
        "video/",
        "application/vnd.openxmlformats-officedocument.",
        "application/vnd.oasis.opendocument.",
    ];
    let suspicious = ["script", "html", "xml", "svg"]
        .iter()
        .any(|w| t.contains(w));
    !suspicious && (EXACT.contains(&t) || PREFIXES.iter().any(|p| t.starts_with(p)))
}

/// The `Content-Type` a stored media object is served with: a sniffed image
/// type, or a kept declared type (checked again, for objects stored before
/// the allow-list), else `application/octet-stream`.
fn served_type(stored: &str) -> &str {
    const IMAGES: &[&str] = &["image/png", "image/jpeg", "image/gif", "image/webp"];
    if IMAGES.contains(&stored) || is_kept_type(stored) {
        stored
    } else {
        "application/octet-stream"
    }
}

/// # `POST /media`
/// A raw body with `Content-Type`, or `multipart/form-data` with one file part.
/// → 201 `{"media_id","content_type","size","sha256","url"}`.
/// - 413 `too_large` past `max_media_bytes` (at once from `Content-Length`,
///   otherwise as soon as the stream passes it; nothing is kept).
/// - 400 `empty_media`, `invalid_request` (bad multipart).
pub async fn upload(
    state: State<EdgeState>,
    caller: AuthUser,
    req: Request,
) -> Result<Response, ApiError> {
    let result = upload_inner(state, caller, req).await;
    // Refusals of bad uploads are the client's; failures are ours (alerted on).
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) if e.status == StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        Err(e) if e.status.is_client_error() => "refused",
        Err(_) => "failed",
    };
    metrics::counter!("msgr_edge_media_uploads_total", "outcome" => outcome).increment(1);
    result
}

async fn upload_inner(
    State(state): State<EdgeState>,
    AuthUser(caller): AuthUser,
    req: Request,
) -> Result<Response, ApiError> {
    state.limits.upload(&caller)?;
    let max = state.config.max_media_bytes;
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if length.is_some_and(|l| l > max) {
        return Err(too_large(max));
    }
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let stored = if ct
        .as_deref()
        .is_some_and(|c| c.starts_with("multipart/form-data"))
    {
        let mut mp = axum::extract::Multipart::from_request(req, &())
            .await
            .map_err(|e| ApiError::bad_request("invalid_request", e.body_text()))?;
        let field = mp
            .next_field()
            .await
            .map_err(|e| ApiError::bad_request("invalid_request", e.body_text()))?
            .ok_or_else(|| ApiError::bad_request("empty_media", "the form has no file part"))?;
        let declared = field.content_type().map(str::to_owned);
        store_stream(&state, field, declared.as_deref()).await?
    } else {
        store_stream(&state, req.into_body().into_data_stream(), ct.as_deref()).await?
    };
    let media: pb::Media = rpc::call(
        &state.nats,
        subject::rpc::MEDIA_REGISTER,
        &pb::MediaRegisterRequest {
            media_id: stored.media_id.clone(),
            uploader_id: caller,
            content_type: stored.content_type,
            size: stored.size,
            sha256: stored.sha256,
        },
        state.rpc_timeout(),
    )
    .await?;
    metrics::counter!("msgr_edge_media_uploaded_bytes_total").increment(media.size);
    let body = json!({
        "media_id": media.media_id,
        "content_type": media.content_type,
        "size": media.size,
        "sha256": media.sha256,
        "url": format!("/media/{}", media.media_id),
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

struct Stored {
    media_id: String,
    content_type: String,
    size: u64,
    sha256: String,
}

/// Streams `body` into the object store in parts, hashing and counting as it
/// goes; aborts the upload past the size limit.
async fn store_stream<S, E>(
    state: &EdgeState,
    mut body: S,
    declared: Option<&str>,
) -> Result<Stored, ApiError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let max = state.config.max_media_bytes;
    let media_id = msgr_core::id::new_media_id();
    let store_err = |e: object_store::Error| {
        tracing::error!(error = %e, "media store failed");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "media store unavailable",
        )
    };
    let upload = state
        .media
        .store
        .put_multipart(&object_key(&media_id))
        .await
        .map_err(store_err)?;
    let mut writer =
        WriteMultipart::new_with_chunk_size(upload, state.config.media_part_bytes.max(64 * 1024));
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut head: Vec<u8> = Vec::with_capacity(16);
    let outcome: Result<(), ApiError> = async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::bad_request("invalid_request", format!("upload interrupted: {e}"))
            })?;
            size += chunk.len() as u64;
            if size > max {
                return Err(too_large(max));
            }
            if head.len() < 16 {
                head.extend_from_slice(&chunk[..chunk.len().min(16 - head.len())]);
            }
            hasher.update(&chunk);
            // Bounded buffering: wait while too many parts are in flight.
            writer
                .wait_for_capacity(UPLOAD_CONCURRENCY)
                .await
                .map_err(store_err)?;
            writer.write(&chunk);
        }
        if size == 0 {
            return Err(ApiError::bad_request("empty_media", "the upload is empty"));
        }
        Ok(())
    }
    .await;
    if let Err(e) = outcome {
        let _ = writer.abort().await;
        return Err(e);
    }
    writer.finish().await.map_err(store_err)?;
    let content_type = sniff_image(&head).map_or_else(|| declared_type(declared), str::to_owned);
    Ok(Stored {
        media_id,
        content_type,
        size,
        sha256: hex::encode(hasher.finalize()),
    })
}

async fn authorize(
    state: &EdgeState,
    caller: String,
    media_id: &str,
) -> Result<pb::Media, ApiError> {
    let valid = msgr_core::id::is_media_id(media_id);
    if !valid {
        return Err(ApiError::not_found("not_found", "no such media"));
    }
    Ok(rpc::call(
        &state.nats,
        subject::rpc::MEDIA_AUTHORIZE,
        &pb::MediaAuthorizeRequest {
            caller_id: caller,
            media_id: media_id.to_owned(),
        },
        state.rpc_timeout(),
    )
    .await?)
}

/// # `GET /media/{media_id}`
/// The bytes, with `Content-Type`, `Content-Length` and `Range` (206) support,
/// to the uploader and to members of a conversation it was sent in; 404 for
/// anyone else. Behind S3 with `presign_downloads`, 302 to a presigned URL,
/// unless `?redirect=false` (browsers' fetch cannot follow a redirect to
/// another origin under the web client's CSP): then the edge streams it.
pub async fn download(
    State(state): State<EdgeState>,
    AuthUser(caller): AuthUser,
    Path(media_id): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let media = authorize(&state, caller, &media_id).await?;
    let key = object_key(&media.media_id);
    let may_redirect = query.map_or(true, |Query(q)| {
        q.get("redirect").map(String::as_str) != Some("false")
    });
    if let Some((s3, ttl)) = state.media.presigner.as_ref().filter(|_| may_redirect) {
        use object_store::signer::Signer as _;
        let url = s3
            .signed_url(axum::http::Method::GET, &key, *ttl)
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    e.to_string(),
                )
            })?;
        let location = HeaderValue::from_str(url.as_str()).map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "bad presigned url",
            )
        })?;
        return Ok((StatusCode::FOUND, [(header::LOCATION, location)]).into_response());
    }
    serve(&state, &key, media.size, &media.content_type, &headers).await
}

/// # `GET /media/{media_id}/thumbnail`
/// A JPEG of at most 320 px for images (same access rule); 404 if none.
pub async fn thumbnail(
    State(state): State<EdgeState>,
    AuthUser(caller): AuthUser,
    Path(media_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let media = authorize(&state, caller, &media_id).await?;
    if !media.has_thumbnail {
        return Err(ApiError::not_found(
            "not_found",
            "no thumbnail for this media",
        ));
    }
    let key = thumbnail_key(&media.media_id);
    let meta = state
        .media
        .store
        .head(&key)
        .await
        .map_err(|_| ApiError::not_found("not_found", "no thumbnail for this media"))?;
    serve(&state, &key, meta.size, "image/jpeg", &headers).await
}

/// `Range: bytes=a-b | a- | -n` → the byte range to send; `Err` if unsatisfiable.
/// Anything else (several ranges, other units) is ignored: the whole object.
fn parse_range(raw: Option<&str>, size: u64) -> Result<Option<Range<u64>>, ()> {
    let Some(spec) = raw.and_then(|r| r.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let range = match (a.parse::<u64>().ok(), b.parse::<u64>().ok()) {
        (Some(start), Some(end)) if start <= end => start..end.saturating_add(1).min(size),
        (Some(start), None) if b.is_empty() => start..size,
        (None, Some(n)) if a.is_empty() && n > 0 => size.saturating_sub(n)..size,
        _ => return Err(()),
    };
    if range.start >= size || range.is_empty() {
        return Err(());
    }
    Ok(Some(range))
}

async fn serve(
    state: &EdgeState,
    key: &object_store::path::Path,
    size: u64,
    content_type: &str,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let range = match parse_range(
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        size,
    ) {
        Ok(r) => r,
        Err(()) => {
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{size}"))],
            )
                .into_response());
        }
    };
    let opts = GetOptions {
        range: range.clone().map(Into::into),
        ..GetOptions::default()
    };
    let result = state.media.store.get_opts(key, opts).await.map_err(|e| {
        tracing::error!(error = %e, "media read failed");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "media store unavailable",
        )
    })?;
    let body = Body::from_stream(result.into_stream());
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    let content_type = served_type(content_type);
    let ct = HeaderValue::from_str(content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_TYPE, ct);
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    if !content_type.starts_with("image/") {
        h.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment"),
        );
    }
    match range {
        Some(r) => {
            *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
            let h = resp.headers_mut();
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(r.end - r.start));
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {}-{}/{size}", r.start, r.end - 1))
            {
                h.insert(header::CONTENT_RANGE, v);
            }
        }
        None => {
            resp.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
        }
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110_for_single_ranges() {
        assert_eq!(parse_range(None, 100), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-9"), 100), Ok(Some(0..10)));
        assert_eq!(parse_range(Some("bytes=90-"), 100), Ok(Some(90..100)));
        assert_eq!(parse_range(Some("bytes=-10"), 100), Ok(Some(90..100)));
        assert_eq!(parse_range(Some("bytes=95-200"), 100), Ok(Some(95..100)));
        assert_eq!(parse_range(Some("bytes=100-"), 100), Err(()));
        assert_eq!(parse_range(Some("bytes=5-1"), 100), Err(()));
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), Ok(None));
        assert_eq!(parse_range(Some("items=0-1"), 100), Ok(None));
    }

    #[test]
    fn declared_types_never_render_inline() {
        assert_eq!(declared_type(Some("application/pdf")), "application/pdf");
        assert_eq!(
            declared_type(Some("text/plain; charset=utf-8")),
            "text/plain"
        );
        assert_eq!(declared_type(Some("text/html")), "application/octet-stream");
        assert_eq!(declared_type(Some("image/png")), "application/octet-stream");
        assert_eq!(declared_type(Some("../../x")), "application/octet-stream");
        assert_eq!(declared_type(None), "application/octet-stream");
        for script in [
            "application/ecmascript",
            "application/javascript",
            "text/jscript",
            "text/javascript",
            "text/ecmascript",
            "application/x-javascript",
            "text/vbscript",
            "application/xhtml+xml",
            "image/svg+xml",
            "text/xsl",
            "application/wasm",
            "text/css",
            "audio/x-script",
            "video/svg+xml",
            "multipart/x-mixed-replace",
        ] {
            assert_eq!(
                declared_type(Some(script)),
                "application/octet-stream",
                "{script}"
            );
            assert_eq!(served_type(script), "application/octet-stream", "{script}");
        }
        assert_eq!(declared_type(Some("audio/ogg")), "audio/ogg");
        assert_eq!(declared_type(Some("video/mp4")), "video/mp4");
        assert_eq!(served_type("image/png"), "image/png");
        assert_eq!(served_type("image/svg+xml"), "application/octet-stream");
        assert_eq!(served_type("text/plain"), "text/plain");
    }
}
