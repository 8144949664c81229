//! Media: recording uploads and authorizing downloads (request/reply), and the
//! thumbnail worker that consumes `msgr.v1.evt.media.uploaded`.
//!
//! The edge streams bytes into the object store itself; workers only see
//! metadata, except the thumbnail worker, which reads images back (bounded
//! in size) to make a JPEG of at most 320 px on its longer side.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt;
use msgr_core::id;
use msgr_core::media::{object_key, thumbnail_key};
use msgr_core::store::{MediaRecord, StoreError};
use msgr_nats::stream::{MEDIA_STREAM, THUMBNAIL_CONSUMER};
use msgr_nats::subject::{self, rpc};
use msgr_schemas::pb::v1 as pb;
use object_store::ObjectStoreExt as _;
use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::context::WorkerContext;
use crate::convert;
use crate::rpc::{decode, serve, Refusal};

/// Longest side of a thumbnail, in pixels.
const THUMBNAIL_PX: u32 = 320;
/// Larger images are not decoded for thumbnails (memory bound per decode).
const MAX_THUMBNAIL_SOURCE_BYTES: u64 = 32 * 1024 * 1024;
/// Nor are images with more pixels than this (decompression bombs).
const MAX_THUMBNAIL_SOURCE_PIXELS: u64 = 40_000_000;

/// Runs the media role: `media.register` and `media.authorize`.
pub async fn run(ctx: Arc<WorkerContext>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let c = Arc::clone(&ctx);
    let register = serve(
        ctx.nats.clone(),
        rpc::MEDIA_REGISTER,
        64,
        shutdown.clone(),
        move |b| {
            let ctx = Arc::clone(&c);
            async move {
                let req: pb::MediaRegisterRequest = decode(&b)?;
                if !id::is_media_id(&req.media_id) {
                    return Err(Refusal::new("invalid_request", "bad media id"));
                }
                let record = MediaRecord {
                    media_id: req.media_id.clone(),
                    uploader_id: req.uploader_id.clone(),
                    content_type: req.content_type.clone(),
                    size: req.size,
                    sha256: req.sha256,
                    has_thumbnail: false,
                    created_at_ms: msgr_core::time::now_ms(),
                };
                match ctx.store.create_media(record.clone()).await {
                    Ok(()) | Err(StoreError::Conflict(_)) => {}
                    Err(e) => return Err(Refusal::internal(e)),
                }
                let event = pb::MediaUploaded {
                    media_id: req.media_id,
                    uploader_id: req.uploader_id,
                    content_type: req.content_type,
                    size: req.size,
                };
                // Durable: the thumbnail is made even if no thumbnail worker runs right now.
                let ack = ctx
                    .js
                    .publish(subject::MEDIA_UPLOADED, event.encode_to_vec().into())
                    .await
                    .map_err(Refusal::internal)?;
                ack.await.map_err(Refusal::internal)?;
                Ok(convert::media(&record).encode_to_vec().into())
            }
        },
    );
    let c = Arc::clone(&ctx);
    let authorize = serve(
        ctx.nats.clone(),
        rpc::MEDIA_AUTHORIZE,
        256,
        shutdown.clone(),
        move |b| {
            let ctx = Arc::clone(&c);
            async move {
                let req: pb::MediaAuthorizeRequest = decode(&b)?;
                let found = if id::is_media_id(&req.media_id) {
                    ctx.store
                        .media_for(&req.media_id, &req.caller_id)
                        .await
                        .map_err(Refusal::internal)?
                } else {
                    None
                };
                // Unknown and forbidden look the same: media ids are not probeable.
                let m = found.ok_or_else(|| Refusal::new("not_found", "no such media"))?;
                Ok(convert::media(&m).encode_to_vec().into())
            }
        },
    );
    tokio::try_join!(register, authorize)?;
    Ok(())
}

/// Runs the thumbnail worker until `shutdown`.
pub async fn run_thumbnails(
    ctx: Arc<WorkerContext>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Re-opened whenever it dies (the bus lost the stream or consumer and
    // the keeper re-creates them): this role never stops the worker.
    let mut messages: Option<jetstream::consumer::pull::Stream> = None;
    loop {
        let stream = match messages.as_mut() {
            Some(m) => m,
            None => match open_thumbnail_stream(&ctx).await {
                Ok(m) => {
                    ctx.health.clear("thumbnails");
                    messages.insert(m)
                }
                Err(e) => {
                    ctx.bus_check.notify_one();
                    ctx.health.set("thumbnails", e.to_string());
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(()),
                        () = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    }
                }
            },
        };
        let msg = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            m = stream.next() => match m {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    use jetstream::consumer::pull::MessagesErrorKind as K;
                    tracing::warn!(error = %e, "thumbnail pull error");
                    if matches!(e.kind(), K::ConsumerDeleted | K::NoResponders) {
                        messages = None;
                    }
                    continue;
                }
                None => {
                    messages = None;
                    continue;
                }
            },
        };
        let outcome = match pb::MediaUploaded::decode(msg.payload.clone()) {
            Ok(ev) => thumbnail(&ctx, &ev).await,
            Err(_) => Err(Permanent("undecodable event".to_owned()).into()),
        };
        let ack = match outcome {
            Ok(()) => AckKind::Ack,
            Err(ThumbError::Permanent(p)) => {
                tracing::info!(reason = %p.0, "no thumbnail");
                AckKind::Term
            }
            Err(ThumbError::Retry(e)) => {
                tracing::warn!(error = %e, "thumbnail failed; will retry");
                AckKind::Nak(Some(Duration::from_secs(2)))
            }
        };
        if let Err(e) = msg.ack_with(ack).await {
            tracing::warn!(error = %e, "thumbnail ack failed");
        }
    }
}

async fn open_thumbnail_stream(
    ctx: &WorkerContext,
) -> anyhow::Result<jetstream::consumer::pull::Stream> {
    let consumer: jetstream::consumer::PullConsumer = ctx
        .js
        .get_consumer_from_stream(THUMBNAIL_CONSUMER, MEDIA_STREAM)
        .await
        .map_err(|e| anyhow::anyhow!("consumer {THUMBNAIL_CONSUMER}: {e}"))?;
    consumer
        .stream()
        .max_messages_per_batch(4)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(10))
        .messages()
        .await
        .map_err(|e| anyhow::anyhow!("pulling {THUMBNAIL_CONSUMER}: {e}"))
}

struct Permanent(String);

enum ThumbError {
    Permanent(Permanent),
    Retry(String),
}

impl From<Permanent> for ThumbError {
    fn from(p: Permanent) -> Self {
        Self::Permanent(p)
    }
}

async fn thumbnail(ctx: &WorkerContext, ev: &pb::MediaUploaded) -> Result<(), ThumbError> {
    let format = match ev.content_type.as_str() {
        "image/png" => image::ImageFormat::Png,
        "image/jpeg" => image::ImageFormat::Jpeg,
        "image/gif" => image::ImageFormat::Gif,
        "image/webp" => image::ImageFormat::WebP,
        other => return Err(Permanent(format!("{other} is not an image")).into()),
    };
    if ev.size > MAX_THUMBNAIL_SOURCE_BYTES {
        return Err(Permanent("image too large to thumbnail".to_owned()).into());
    }
    let bytes = ctx
        .media
        .store
        .get(&object_key(&ev.media_id))
        .await
        .map_err(|e| ThumbError::Retry(e.to_string()))?
        .bytes()
        .await
        .map_err(|e| ThumbError::Retry(e.to_string()))?;
    let jpeg = tokio::task::spawn_blocking(move || make_thumbnail(&bytes, format))
        .await
        .map_err(|e| ThumbError::Retry(e.to_string()))??;
    ctx.media
        .store
        .put(&thumbnail_key(&ev.media_id), jpeg.into())
        .await
        .map_err(|e| ThumbError::Retry(e.to_string()))?;
    ctx.store
        .set_thumbnail(&ev.media_id)
        .await
        .map_err(|e| ThumbError::Retry(e.to_string()))?;
    metrics::counter!("msgr_worker_thumbnails_total").increment(1);
    Ok(())
}

/// Removes a media object and its thumbnail (a message deleted for everyone
/// was the last to reference it), in the background: the sequencer does not
/// wait on the object store. The removal was recorded in the same
/// transaction as the delete, so one that fails here (or a worker that dies
/// first) is done later by [`run_removals`].
pub(crate) fn remove_object(ctx: &WorkerContext, media_id: &str) {
    let (media, store) = (Arc::clone(&ctx.media.store), Arc::clone(&ctx.store));
    let media_id = media_id.to_owned();
    tokio::spawn(async move { remove_bytes(&*media, &*store, &media_id).await });
}

/// Deletes the bytes of `media_id`, then its recorded removal.
async fn remove_bytes(
    media: &dyn object_store::ObjectStore,
    store: &dyn msgr_core::store::Store,
    media_id: &str,
) -> bool {
    for key in [object_key(media_id), thumbnail_key(media_id)] {
        match media.delete(&key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => {
                tracing::warn!(error = %e, %media_id, "could not remove media bytes; retrying later");
                return false;
            }
        }
    }
    if let Err(e) = store.media_removed(media_id).await {
        tracing::warn!(error = %e, %media_id, "media bytes removed, its record not yet");
        return false;
    }
    metrics::counter!("msgr_worker_media_removed_total").increment(1);
    true
}

/// How often recorded removals are looked for (and at start).
const REMOVALS_EVERY: Duration = Duration::from_secs(60);

/// Removes the bytes of media deleted for everyone whose removal did not
/// happen right after the commit (object store down, worker died), at start
/// and every [`REMOVALS_EVERY`], until `shutdown`.
pub async fn run_removals(
    ctx: Arc<WorkerContext>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut every = tokio::time::interval(REMOVALS_EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = every.tick() => {}
        }
        let Ok(ids) = ctx.store.media_removals(100).await else {
            continue;
        };
        for id in ids {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            remove_bytes(&*ctx.media.store, &*ctx.store, &id).await;
        }
    }
}

/// Decodes an image (bounded) and encodes a JPEG thumbnail of it.
fn make_thumbnail(bytes: &[u8], format: image::ImageFormat) -> Result<Vec<u8>, ThumbError> {
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_THUMBNAIL_SOURCE_PIXELS * 4);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| Permanent(format!("undecodable image: {e}")))?;
    if u64::from(img.width()) * u64::from(img.height()) > MAX_THUMBNAIL_SOURCE_PIXELS {
        return Err(Permanent("image has too many pixels".to_owned()).into());
    }
    let thumb = img.thumbnail(THUMBNAIL_PX, THUMBNAIL_PX).to_rgb8();
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80)
        .encode_image(&thumb)
        .map_err(|e| Permanent(format!("encoding thumbnail: {e}")))?;
    Ok(out)
}
