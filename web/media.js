// Media in messages: authorised fetches as blobs shown through object URLs
// (media GETs need the Authorization header, so <img src> cannot fetch them),
// a bounded cache of them, thumbnails, the lightbox and downloads.

import { ApiError, extensionFor, formatSize, isImage } from './api.js';
import { $, el, icon } from './dom.js';

const FILE = 'M14 2H6a2 2 0 0 0-2 2v16a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2V8zm4 18H6V4h7v5h5z';

/** What this module needs of the app: set once by `configure`. */
let deps = null;

/**
 * @param {{api, toast: (s: string) => void, openKey: () => string|null,
 *   atBottom: () => boolean, messages: HTMLElement, lightbox: HTMLDialogElement}} d
 */
export function configure(d) {
  deps = d;
}

/**
 * Object URLs of media shown in the open conversation; revoked when it closes,
 * and at most MEDIA_CACHE of them held (least recently used revoked first).
 */
let mediaUrls = new Map(); // url -> {p: Promise<objectURL>, url?: objectURL once settled}
const MEDIA_CACHE = 200;

export function mediaUrl(url) {
  const hit = mediaUrls.get(url);
  if (hit) {
    mediaUrls.delete(url); // most recently used goes last
    mediaUrls.set(url, hit);
    return hit.p;
  }
  return cacheMedia(url, deps.api.fetchBlob(url).then((b) => URL.createObjectURL(b)));
}

export function cacheMedia(url, p) {
  const entry = { p };
  const map = mediaUrls;
  p.then((u) => { entry.url = u; }, () => {
    if (map.get(url) === entry) map.delete(url); // a later render may retry
  });
  map.delete(url);
  map.set(url, entry);
  // Evict the least recently used settled entries (a pending one is awaited by an <img>).
  if (map.size > MEDIA_CACHE) {
    for (const [k, e] of map) {
      if (map.size <= MEDIA_CACHE) break;
      if (!e.url) continue;
      map.delete(k);
      URL.revokeObjectURL(e.url);
    }
  }
  return p;
}

export function revokeMedia() {
  for (const e of mediaUrls.values()) e.p.then((u) => URL.revokeObjectURL(u), () => {});
  mediaUrls = new Map();
}

export function mediaNode(m) {
  const media = m.media;
  if (isImage(media)) {
    const img = el('img', { 'data-testid': 'message-image', alt: m.text ? 'Photo' : 'Photo (no caption)' });
    const btn = el('button', { type: 'button', class: 'media-btn', title: 'Open photo' }, img);
    btn.addEventListener('click', () => openLightbox(m.media));
    if (media.url) loadThumb(img, media);
    else img.alt = `Uploading ${media.name || 'photo'}`;
    img.addEventListener('load', () => {
      if (deps.atBottom()) deps.messages.scrollTop = deps.messages.scrollHeight;
    });
    return btn;
  }
  const label = `${media.name || media.content_type || 'File'} · ${formatSize(media.size)}`;
  const a = el('a', { class: 'file', 'data-testid': 'message-file', href: media.url || '#' },
    icon(FILE), el('span', { text: label }));
  a.addEventListener('click', (e) => {
    e.preventDefault();
    if (m.media.url) download(m.media);
  });
  return a;
}

/**
 * The thumbnail if it exists (it is made asynchronously, so a freshly pushed
 * message may have no thumbnail_url yet: try `<url>/thumbnail` anyway), the
 * full image only when there is no thumbnail (404).
 */
async function loadThumb(img, media, retried = false) {
  const conv = deps.openKey();
  let src;
  try {
    // Already held in full (my own upload, or opened in the lightbox): no download.
    if (!media.thumbnail_url && mediaUrls.has(media.url)) src = await mediaUrl(media.url);
    else src = await mediaUrl(media.thumbnail_url || `${media.url}/thumbnail`);
  } catch (e) {
    try {
      if (!(e instanceof ApiError && e.status === 404)) throw e;
      src = await mediaUrl(media.url);
    } catch (e2) {
      if (conv !== deps.openKey()) return;
      img.alt = 'Photo unavailable';
      // A network blip or a 5xx: one more try a little later.
      if (!retried && !(e2 instanceof ApiError && (e2.status === 404 || e2.status === 403))) {
        setTimeout(() => { if (conv === deps.openKey() && img.isConnected) loadThumb(img, media, true); }, 3000);
      }
      return;
    }
  }
  if (conv !== deps.openKey()) return;
  if (img.alt === 'Photo unavailable') img.alt = 'Photo';
  img.src = src;
}

export async function openLightbox(media) {
  if (!media.url) return;
  const img = $('img', deps.lightbox);
  img.removeAttribute('src');
  deps.lightbox.showModal();
  try {
    img.src = await mediaUrl(media.url);
  } catch (e) {
    deps.lightbox.close();
    deps.toast(`Could not open the photo: ${e.message}`);
  }
}

export async function download(media) {
  try {
    const blob = await deps.api.fetchBlob(media.url);
    const url = URL.createObjectURL(blob);
    const a = el('a', { href: url, download: media.name || `${media.media_id}.${extensionFor(media.content_type)}` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  } catch (e) {
    deps.toast(`Download failed: ${e.message}`);
  }
}
