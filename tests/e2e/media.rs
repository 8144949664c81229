use std::time::Duration;

use bytes::Bytes;
use msgr_tests::{http_get_raw, http_stream, s3::TestS3, RawResponse, TestApp, TestUser};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::T;

fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 90])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .expect("png");
    out.into_inner()
}

fn jpeg(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(y % 256) as u8, 40, (x % 256) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg)
        .expect("jpeg");
    out.into_inner()
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn auth(u: &TestUser) -> (&'static str, String) {
    ("authorization", format!("Bearer {}", u.token))
}

async fn upload_raw(
    addr: std::net::SocketAddr,
    u: &TestUser,
    bytes: Vec<u8>,
    content_type: &str,
) -> RawResponse {
    let len = bytes.len().to_string();
    http_stream(
        addr,
        "POST",
        "/media",
        &[
            auth(u),
            ("content-type", content_type.to_owned()),
            ("content-length", len),
        ],
        futures_util::stream::iter([Bytes::from(bytes)]),
    )
    .await
}

fn json_of(r: &RawResponse) -> Value {
    serde_json::from_slice(&r.body).unwrap_or(Value::Null)
}

/// Polls until the thumbnail exists; returns its bytes.
async fn thumbnail(addr: std::net::SocketAddr, u: &TestUser, media_id: &str) -> Vec<u8> {
    for _ in 0..100 {
        let r = http_get_raw(addr, &format!("/media/{media_id}/thumbnail"), &[auth(u)]).await;
        if r.status == 200 {
            return r.body.to_vec();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no thumbnail for {media_id} within 10 s");
}

/// Upload → send → download by the recipient, ranges, strangers, traversal,
/// thumbnails: the same checks for every media store.
async fn media_round_trip(app: &TestApp) {
    let (alice, bob, eve) = (
        app.user("alice").await,
        app.user("bob").await,
        app.user("eve").await,
    );

    // A PNG declared as something else is recognised from its bytes.
    let picture = png(800, 600);
    let r = upload_raw(
        app.addr,
        &alice,
        picture.clone(),
        "application/octet-stream",
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", json_of(&r));
    let up = json_of(&r);
    let media_id = up["media_id"].as_str().expect("media_id").to_owned();
    assert_eq!(up["content_type"], "image/png");
    assert_eq!(up["size"], picture.len());
    assert_eq!(up["sha256"], sha(&picture));
    assert_eq!(up["url"], format!("/media/{media_id}"));

    // Not readable by others before it is sent.
    assert_eq!(
        http_get_raw(app.addr, up["url"].as_str().expect("url"), &[auth(&bob)])
            .await
            .status,
        404
    );

    // Send it with a caption; bob receives the media object.
    let mut wa = app.ws(&alice.token).await;
    let mut wb = app.ws(&bob.token).await;
    wa.send_json(&json!({"type":"send","client_msg_id":"pic","to_user":bob.user_id,"text":"look","media_id":media_id})).await;
    wa.expect("ack", T).await;
    let m = wb.expect("message", T).await;
    assert_eq!(m["message"]["media"]["media_id"], media_id.as_str());
    assert_eq!(m["message"]["media"]["content_type"], "image/png");
    assert_eq!(m["message"]["media"]["size"], picture.len());
    assert_eq!(m["message"]["text"], "look");

    // Bob downloads identical bytes.
    let r = http_get_raw(app.addr, &format!("/media/{media_id}"), &[auth(&bob)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(sha(&r.body), sha(&picture));
    assert_eq!(r.headers["content-type"], "image/png");
    assert_eq!(
        r.headers["content-length"],
        picture.len().to_string().as_str()
    );
    // Ranges.
    let r = http_get_raw(
        app.addr,
        &format!("/media/{media_id}"),
        &[auth(&bob), ("range", "bytes=0-9".to_owned())],
    )
    .await;
    assert_eq!(r.status, 206);
    assert_eq!(&r.body[..], &picture[..10]);
    assert_eq!(
        r.headers["content-range"],
        format!("bytes 0-9/{}", picture.len()).as_str()
    );
    let r = http_get_raw(
        app.addr,
        &format!("/media/{media_id}"),
        &[auth(&bob), ("range", "bytes=-16".to_owned())],
    )
    .await;
    assert_eq!(
        (r.status, &r.body[..]),
        (206, &picture[picture.len() - 16..])
    );
    let r = http_get_raw(
        app.addr,
        &format!("/media/{media_id}"),
        &[auth(&bob), ("range", format!("bytes={}-", picture.len()))],
    )
    .await;
    assert_eq!(r.status, 416);

    // Strangers, unknown and malformed ids all get 404.
    for (who, path) in [
        (&eve, format!("/media/{media_id}")),
        (&eve, format!("/media/{media_id}/thumbnail")),
        (
            &alice,
            "/media/md00000000000000000000000000000000".to_owned(),
        ),
        (&alice, "/media/..%2F..%2Fetc%2Fpasswd".to_owned()),
        (&alice, "/media/md..%2F..%2Fmsgr.sqlite3".to_owned()),
        (&alice, "/media/%2E%2E".to_owned()),
    ] {
        let r = http_get_raw(app.addr, &path, &[auth(who)]).await;
        assert_eq!(r.status, 404, "{path}");
    }
    assert_eq!(
        http_get_raw(app.addr, &format!("/media/{media_id}"), &[])
            .await
            .status,
        401
    );

    // A thumbnail of at most 320 px appears, for PNG and JPEG alike.
    let t = thumbnail(app.addr, &bob, &media_id).await;
    let img = image::load_from_memory_with_format(&t, image::ImageFormat::Jpeg)
        .expect("thumbnail is a JPEG");
    assert!(
        img.width() <= 320 && img.height() <= 320 && img.width() == 320,
        "{}x{}",
        img.width(),
        img.height()
    );
    let (_, h) = app
        .get(
            &format!("/messages/{}/{}", bob.user_id, alice.user_id),
            &bob.token,
        )
        .await;
    assert_eq!(
        h["messages"][0]["media"]["thumbnail_url"],
        format!("/media/{media_id}/thumbnail")
    );
    let photo = jpeg(400, 900);
    let r = upload_raw(app.addr, &alice, photo.clone(), "image/jpeg").await;
    let jpeg_id = json_of(&r)["media_id"].as_str().expect("id").to_owned();
    assert_eq!(json_of(&r)["content_type"], "image/jpeg");
    let t = thumbnail(app.addr, &alice, &jpeg_id).await;
    let img = image::load_from_memory(&t).expect("thumbnail");
    assert_eq!((img.height(), img.width() <= 320), (320, true));

    // A non-image never renders inline and has no thumbnail, whatever its claim.
    let page = b"<html><script>alert(1)</script></html>".to_vec();
    let r = upload_raw(app.addr, &alice, page.clone(), "text/html").await;
    let doc = json_of(&r);
    assert_eq!(doc["content_type"], "application/octet-stream");
    let doc_id = doc["media_id"].as_str().expect("id").to_owned();
    let r = http_get_raw(app.addr, &format!("/media/{doc_id}"), &[auth(&alice)]).await;
    assert_eq!((r.status, &r.body[..]), (200, &page[..]));
    assert_eq!(r.headers["content-disposition"], "attachment");
    assert_eq!(r.headers["x-content-type-options"], "nosniff");
    // Script types of every spelling are served as opaque attachments: the
    // kept types are an allow-list. An ordinary document keeps its type.
    for (claim, served) in [
        ("application/ecmascript", "application/octet-stream"),
        ("text/jscript", "application/octet-stream"),
        ("text/vbscript", "application/octet-stream"),
        ("application/wasm", "application/octet-stream"),
        ("application/pdf", "application/pdf"),
    ] {
        let r = upload_raw(app.addr, &alice, b"alert(1)".to_vec(), claim).await;
        let id = json_of(&r)["media_id"].as_str().expect("id").to_owned();
        let r = http_get_raw(app.addr, &format!("/media/{id}"), &[auth(&alice)]).await;
        assert_eq!(r.status, 200, "{claim}");
        assert_eq!(r.headers["content-type"], served, "{claim}");
        assert_eq!(r.headers["content-disposition"], "attachment", "{claim}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        http_get_raw(
            app.addr,
            &format!("/media/{doc_id}/thumbnail"),
            &[auth(&alice)]
        )
        .await
        .status,
        404
    );

    // Multipart with one file part.
    let boundary = "msgrboundary";
    let mut form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"notes.txt\"\r\nContent-Type: text/plain\r\n\r\n"
    )
    .into_bytes();
    form.extend_from_slice(b"plain notes");
    form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let r = http_stream(
        app.addr,
        "POST",
        "/media",
        &[
            auth(&alice),
            (
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            ),
        ],
        futures_util::stream::iter([Bytes::from(form)]),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", json_of(&r));
    assert_eq!(
        (
            json_of(&r)["content_type"].as_str(),
            json_of(&r)["size"].as_u64()
        ),
        (Some("text/plain"), Some(11))
    );

    // Sending media one may not read is refused, and nothing is stored.
    let mut we = app.ws(&eve.token).await;
    we.send_json(
        &json!({"type":"send","client_msg_id":"steal","to_user":bob.user_id,"media_id":media_id}),
    )
    .await;
    assert_eq!(we.expect("error", T).await["code"], "unknown_media");
    let (_, h) = app
        .get(
            &format!("/messages/{}/{}", eve.user_id, bob.user_id),
            &eve.token,
        )
        .await;
    assert_eq!(h["messages"].as_array().map(Vec::len), Some(0));
    // Empty uploads are refused.
    assert_eq!(
        upload_raw(app.addr, &alice, Vec::new(), "text/plain")
            .await
            .status,
        400
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_round_trip_on_the_local_file_system() {
    let app = TestApp::spawn().await;
    media_round_trip(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_round_trip_on_s3_with_presigned_downloads() {
    let s3 = TestS3::start();
    let (edge_media, worker_media) = (s3.media_config(false), s3.media_config(false));
    let app = TestApp::spawn_with(|e| e.media = edge_media, |w| w.media = worker_media).await;
    media_round_trip(&app).await;

    // An edge configured to presign answers 302; the URL serves the bytes.
    let presign = s3.media_config(true);
    let (addr, _edge) = app.extra_edge(|e| e.media = presign).await;
    let alice = app.user("alice").await;
    let bytes = png(64, 64);
    let r = upload_raw(addr, &alice, bytes.clone(), "image/png").await;
    assert_eq!(r.status, 201);
    let id = json_of(&r)["media_id"].as_str().expect("id").to_owned();
    let r = http_get_raw(addr, &format!("/media/{id}"), &[auth(&alice)]).await;
    assert_eq!(r.status, 302);
    let location = r.headers["location"].to_str().expect("location").to_owned();
    assert!(location.contains("X-Amz-Signature"), "{location}");
    let url = location.strip_prefix("http://").expect("http url");
    let (host, path) = url.split_once('/').expect("path");
    let r = http_get_raw(host.parse().expect("addr"), &format!("/{path}"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(sha(&r.body), sha(&bytes));
    // Browsers' fetch cannot follow that redirect under the web client's CSP:
    // `?redirect=false` makes the edge stream the bytes itself.
    let r = http_get_raw(
        addr,
        &format!("/media/{id}?redirect=false"),
        &[auth(&alice)],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(sha(&r.body), sha(&bytes));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_uploads_get_413_and_nothing_is_kept() {
    let app = TestApp::spawn_with_edge(|e| e.max_media_bytes = 1024 * 1024).await;
    let alice = app.user("alice").await;
    // Declared too large: refused before the body is read.
    let r = upload_raw(
        app.addr,
        &alice,
        vec![7u8; 2 * 1024 * 1024],
        "application/octet-stream",
    )
    .await;
    // 413, or (racing the client's write) the connection closed before the body was taken.
    assert!(matches!(r.status, 413 | 0), "status {}", r.status);
    if r.status == 413 {
        assert_eq!(json_of(&r)["error"]["code"], "too_large");
    }

    // Chunked, no length: refused once it passes the limit.
    let chunks = futures_util::stream::iter((0..40).map(|_| Bytes::from(vec![1u8; 64 * 1024])));
    let r = http_stream(
        app.addr,
        "POST",
        "/media",
        &[
            auth(&alice),
            ("content-type", "application/octet-stream".to_owned()),
        ],
        chunks,
    )
    .await;
    // 413, or (racing the client's write) the connection closed before the body was taken.
    assert!(matches!(r.status, 413 | 0), "status {}", r.status);
    let media_dir = app.data.path().join("media");
    let kept: Vec<_> = walk(&media_dir)
        .into_iter()
        .filter(|p| p.metadata().map(|m| m.len() > 0).unwrap_or(false))
        .collect();
    assert!(kept.is_empty(), "aborted uploads left {kept:?}");
    // The limit itself is fine.
    assert_eq!(
        upload_raw(
            app.addr,
            &alice,
            vec![3u8; 1024 * 1024],
            "application/octet-stream"
        )
        .await
        .status,
        201
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// The edge process streams a 64 MiB upload (and its download) with parts of
/// 1 MiB, two at a time: its memory grows by far less than the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_streams_files_much_larger_than_its_buffers() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let (mut edge, addr) = app
        .edge_process(
            env!("CARGO_BIN_EXE_msgr-test-edge"),
            &[("MSGR_MEDIA_PART_BYTES", (1024 * 1024).to_string())],
        )
        .await;
    let pid = edge.id();
    let total: usize = 64 * 1024 * 1024;
    let chunk = 256 * 1024;
    let gen = move |i: usize| {
        Bytes::from(
            (0..chunk)
                .map(|j| ((i * 31 + j * 7) % 251) as u8)
                .collect::<Vec<u8>>(),
        )
    };
    let mut hasher = Sha256::new();
    for i in 0..total / chunk {
        hasher.update(gen(i));
    }
    let expected = hex::encode(hasher.finalize());

    let baseline = msgr_tests::rss_kib(pid);
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(baseline));
    let watcher = {
        let peak = std::sync::Arc::clone(&peak);
        tokio::spawn(async move {
            loop {
                peak.fetch_max(
                    msgr_tests::rss_kib(pid),
                    std::sync::atomic::Ordering::Relaxed,
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let body = futures_util::stream::iter((0..total / chunk).map(gen));
    let r = http_stream(
        addr,
        "POST",
        "/media",
        &[
            auth(&alice),
            ("content-type", "application/octet-stream".to_owned()),
        ],
        body,
    )
    .await;
    assert_eq!(r.status, 201);
    let up = json_of(&r);
    assert_eq!(
        (up["size"].as_u64(), up["sha256"].as_str()),
        (Some(total as u64), Some(expected.as_str()))
    );
    let down = http_get_raw(
        addr,
        &format!("/media/{}", up["media_id"].as_str().expect("id")),
        &[auth(&alice)],
    )
    .await;
    assert_eq!(sha(&down.body), expected);
    watcher.abort();
    let grew_mib = peak
        .load(std::sync::atomic::Ordering::Relaxed)
        .saturating_sub(baseline)
        / 1024;
    eprintln!(
        "edge RSS: baseline {} MiB, peak growth {grew_mib} MiB for a 64 MiB upload + download",
        baseline / 1024
    );
    assert!(
        grew_mib < 24,
        "the edge grew by {grew_mib} MiB while streaming 64 MiB"
    );
    let _ = edge.kill();
    let _ = edge.wait();
}
