//! Media storage: where uploaded files live (the local file system by default,
//! any S3-compatible service in production), shared by the edge (uploads,
//! downloads) and the workers (thumbnails), through the `object_store` crate.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::local::LocalFileSystem;
use object_store::ObjectStore;
use serde::{Deserialize, Serialize};

/// Which object store holds media.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "backend", rename_all = "snake_case")]
pub enum MediaStoreConfig {
    /// A directory (default `<data_dir>/media`).
    Local {
        #[serde(default)]
        path: Option<PathBuf>,
    },
    /// An S3-compatible service (SeaweedFS, MinIO, Garage, AWS S3).
    S3 {
        bucket: String,
        /// e.g. `http://127.0.0.1:8333`; empty for AWS.
        #[serde(default)]
        endpoint: String,
        #[serde(default = "default_region")]
        region: String,
        access_key_id: String,
        secret_access_key: String,
        /// Answer downloads with 302 to a presigned URL instead of streaming.
        #[serde(default)]
        presign_downloads: bool,
        #[serde(default = "default_presign_ttl")]
        presign_ttl_secs: u64,
    },
}

fn default_region() -> String {
    "us-east-1".to_owned()
}

fn default_presign_ttl() -> u64 {
    300
}

impl Default for MediaStoreConfig {
    fn default() -> Self {
        Self::Local { path: None }
    }
}

/// An opened media store.
#[derive(Clone)]
pub struct MediaStore {
    pub store: Arc<dyn ObjectStore>,
    /// Set when downloads should redirect to presigned URLs.
    pub presigner: Option<(Arc<AmazonS3>, Duration)>,
}

impl std::fmt::Debug for MediaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MediaStore({})", self.store)
    }
}

/// Opens the configured store; `data_dir` anchors the local default.
///
/// # Errors
/// An unusable directory or S3 settings.
pub fn open(config: &MediaStoreConfig, data_dir: &Path) -> Result<MediaStore, String> {
    match config {
        MediaStoreConfig::Local { path } => {
            let dir = path.clone().unwrap_or_else(|| data_dir.join("media"));
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("creating {}: {e}", dir.display()))?;
            let fs = LocalFileSystem::new_with_prefix(&dir).map_err(|e| e.to_string())?;
            Ok(MediaStore {
                store: Arc::new(fs),
                presigner: None,
            })
        }
        MediaStoreConfig::S3 {
            bucket,
            endpoint,
            region,
            access_key_id,
            secret_access_key,
            presign_downloads,
            presign_ttl_secs,
        } => {
            let mut b = AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_region(region)
                .with_access_key_id(access_key_id)
                .with_secret_access_key(secret_access_key);
            if !endpoint.is_empty() {
                b = b
                    .with_endpoint(endpoint)
                    .with_allow_http(endpoint.starts_with("http://"))
                    .with_virtual_hosted_style_request(false);
            }
            let s3 = Arc::new(b.build().map_err(|e| e.to_string())?);
            let presigner = presign_downloads
                .then(|| (Arc::clone(&s3), Duration::from_secs(*presign_ttl_secs)));
            Ok(MediaStore {
                store: s3,
                presigner,
            })
        }
    }
}

/// The object key of a media id's bytes.
#[must_use]
pub fn object_key(media_id: &str) -> object_store::path::Path {
    object_store::path::Path::from(format!("media/{media_id}"))
}

/// The object key of a media id's thumbnail.
#[must_use]
pub fn thumbnail_key(media_id: &str) -> object_store::path::Path {
    object_store::path::Path::from(format!("media/{media_id}.thumb.jpg"))
}

/// The image type of `bytes` from its magic number, if it is one we serve inline.
#[must_use]
pub fn sniff_image(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_recognised_by_their_bytes_not_their_names() {
        assert_eq!(sniff_image(b"\x89PNG\r\n\x1a\n...."), Some("image/png"));
        assert_eq!(sniff_image(&[0xFF, 0xD8, 0xFF, 0xE0]), Some("image/jpeg"));
        assert_eq!(sniff_image(b"RIFF\0\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(sniff_image(b"<html><script>"), None);
        assert_eq!(sniff_image(b""), None);
    }
}
