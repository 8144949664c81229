// REST + WebSocket wrapper for the msgr edge, plus the pure helpers the UI
// uses (tick computation, gap detection, formatting). Nothing in here touches
// the DOM, so it can be imported and tested on its own (node or a browser).

/** A non-2xx REST answer: `{"error":{"code","message"}}` from the server. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code || 'http_error';
  }
}

/** `{limit: 50, before: undefined}` → `?limit=50` (skips empty values). */
export function qs(params = {}) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') p.set(k, String(v));
  }
  const s = p.toString();
  return s ? `?${s}` : '';
}

async function errorFrom(res) {
  let code;
  let message;
  try {
    const body = await res.json();
    code = body?.error?.code;
    message = body?.error?.message;
  } catch {
    // not JSON (a proxy's HTML page, say): fall back to the status line
  }
  return new ApiError(res.status, code, message || res.statusText);
}

export class Api {
  /**
   * @param {{onUnauthorized?: () => void}} opts  called on any 401 from an
   *   authenticated request (expired/revoked token): the app goes back to login.
   */
  constructor({ onUnauthorized } = {}) {
    this.token = null;
    this.onUnauthorized = onUnauthorized || (() => {});
  }

  headers(extra = {}) {
    return this.token ? { ...extra, Authorization: `Bearer ${this.token}` } : extra;
  }

  async request(method, path, body, { auth = true } = {}) {
    const init = { method, headers: auth ? this.headers() : {} };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, 'network_error', 'Cannot reach the server');
    }
    if (!res.ok) {
      const err = await errorFrom(res);
      if (res.status === 401 && auth) this.onUnauthorized(err);
      throw err;
    }
    if (res.status === 204) return null;
    return res.json();
  }

  // --- accounts and users ---------------------------------------------------
  register(username, password, display_name) {
    const body = { username, password };
    if (display_name) body.display_name = display_name;
    return this.request('POST', '/user/register', body, { auth: false });
  }
  login(username, password) {
    return this.request('POST', '/user/login', { username, password }, { auth: false });
  }
  /** Ends this session on the server (its token stops working everywhere). */
  logout() {
    if (!this.token) return Promise.resolve();
    // keepalive: the page reloads right after.
    return fetch('/user/logout', { method: 'POST', headers: this.headers(), keepalive: true })
      .catch(() => {});
  }
  searchUsers(prefix, limit = 20) {
    return this.request('GET', `/users${qs({ query: prefix, limit })}`).then((r) => r.users || []);
  }
  usersByIds(ids) {
    return this.request('GET', `/users${qs({ ids: ids.join(',') })}`).then((r) => r.users || []);
  }
  user(id) {
    return this.request('GET', `/users/${encodeURIComponent(id)}`);
  }

  // --- chats and history ------------------------------------------------------
  chats(userId, params) {
    return this.request('GET', `/chat/${encodeURIComponent(userId)}${qs(params)}`);
  }
  direct(userId, peerId, params) {
    const p = `/messages/${encodeURIComponent(userId)}/${encodeURIComponent(peerId)}`;
    return this.request('GET', p + qs(params));
  }

  /** Messages of a conversation changed (edited, deleted, reacted to) after `rev`. */
  changes(conversationId, after, limit = 200) {
    return this.request('GET', `/conversations/${encodeURIComponent(conversationId)}/changes${qs({ after, limit })}`);
  }

  // --- blocking and privacy ---------------------------------------------------
  blocks() {
    return this.request('GET', '/user/blocks').then((r) => r.user_ids || []);
  }
  block(userId) {
    return this.request('POST', '/user/blocks', { user_id: userId }).then((r) => r.user_ids || []);
  }
  unblock(userId) {
    return this.request('DELETE', `/user/blocks/${encodeURIComponent(userId)}`).then((r) => r.user_ids || []);
  }
  privacy() {
    return this.request('GET', '/user/privacy');
  }
  setPrivacy(presence) {
    return this.request('PUT', '/user/privacy', { presence });
  }

  // --- groups -----------------------------------------------------------------
  group(groupId, params) {
    return this.request('GET', `/groups/${encodeURIComponent(groupId)}${qs(params)}`);
  }
  createGroup(name, members) {
    return this.request('POST', '/groups/create', { name, members });
  }
  addMember(groupId, userId) {
    return this.request('POST', `/groups/${encodeURIComponent(groupId)}/add`, { user_id: userId });
  }
  removeMember(groupId, userId) {
    return this.request('DELETE', `/groups/${encodeURIComponent(groupId)}/remove`, { user_id: userId });
  }
  receipts(groupId, seq) {
    return this.request('GET', `/groups/${encodeURIComponent(groupId)}/messages/${seq}/receipts`);
  }

  // --- media ------------------------------------------------------------------
  /**
   * Uploads a File/Blob as the raw body. XMLHttpRequest rather than fetch
   * because only XHR reports upload progress.
   * @returns {{promise: Promise<object>, abort: () => void}}
   */
  upload(file, onProgress) {
    const xhr = new XMLHttpRequest();
    const promise = new Promise((resolve, reject) => {
      xhr.open('POST', '/media');
      xhr.setRequestHeader('Authorization', `Bearer ${this.token}`);
      xhr.setRequestHeader('Content-Type', file.type || 'application/octet-stream');
      xhr.responseType = 'json';
      xhr.upload.onprogress = (e) => {
        if (e.lengthComputable && onProgress) onProgress(e.loaded, e.total);
      };
      xhr.onload = () => {
        if (xhr.status >= 200 && xhr.status < 300) return resolve(xhr.response);
        const e = xhr.response?.error || {};
        const err = new ApiError(xhr.status, e.code, e.message || (xhr.status === 413 ? 'File too large' : ''));
        if (xhr.status === 401) this.onUnauthorized(err);
        reject(err);
      };
      // A 413 may arrive as a dropped connection while the body is still going up.
      xhr.onerror = () => reject(new ApiError(0, 'network_error', 'Upload failed (file too large or connection lost)'));
      xhr.onabort = () => reject(new ApiError(0, 'aborted', 'Upload cancelled'));
      xhr.send(file);
    });
    return { promise, abort: () => xhr.abort() };
  }

  /**
   * Media GETs need the Authorization header, so <img src> cannot fetch them.
   * `redirect=false` makes the edge stream the bytes itself instead of a 302
   * to a presigned bucket URL, which the page's CSP (connect-src 'self') blocks.
   */
  async fetchBlob(url) {
    let res;
    try {
      res = await fetch(noRedirect(url), { headers: this.headers() });
    } catch {
      throw new ApiError(0, 'network_error', 'Cannot reach the server');
    }
    if (!res.ok) {
      const err = await errorFrom(res);
      if (res.status === 401) this.onUnauthorized(err);
      throw err;
    }
    return res.blob();
  }
}

/** `/media/x` → `/media/x?redirect=false` (keeps any query already there). */
export function noRedirect(url) {
  const s = String(url);
  if (/[?&]redirect=/.test(s)) return s;
  return `${s}${s.includes('?') ? '&' : '?'}redirect=false`;
}

// --- WebSocket ---------------------------------------------------------------

/** Reconnect delay: 0.5 s doubling up to 15 s, with "equal jitter" (50–100 %). */
export function backoffDelay(attempt, random = Math.random) {
  const base = Math.min(15000, 500 * 2 ** Math.min(attempt, 10));
  return Math.round(base / 2 + (random() * base) / 2);
}

/**
 * One socket that keeps itself connected. Events: `state` (detail: state),
 * `open` (detail: {reconnect}), `frame` (detail: parsed server frame).
 * state is 'connecting' | 'online' | 'offline'.
 */
export class Socket extends EventTarget {
  /**
   * @param {{pingMs?: number, pongTimeoutMs?: number, connectTimeoutMs?: number, stableMs?: number}} opts
   *   connectTimeoutMs: a connection attempt that has not opened by then is
   *   abandoned and retried; stableMs: a socket must stay up this long before
   *   the backoff starts again from its shortest delay (a server that accepts
   *   and at once closes must not be hammered).
   */
  constructor(urlFn, { pingMs = 25000, pongTimeoutMs = 10000, connectTimeoutMs = 10000, stableMs = 10000 } = {}) {
    super();
    this.urlFn = urlFn;
    this.pingMs = pingMs;
    this.pongTimeoutMs = pongTimeoutMs;
    this.connectTimeoutMs = connectTimeoutMs;
    this.stableMs = stableMs;
    this.ws = null;
    this.state = 'offline';
    this.attempt = 0;
    this.opens = 0;
    this.stopped = true;
    this.retryTimer = null;
    this.pingTimer = null;
    this.deadTimer = null;
    this.connectTimer = null;
    this.stableTimer = null;
    this.retryAt = 0;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.connectTimer);
    clearTimeout(this.stableTimer);
    this.stopTimers();
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.onclose = ws.onmessage = ws.onopen = ws.onerror = null;
      ws.close(1000, 'bye');
    }
    this.setState('offline');
  }

  /** Skip the backoff wait (browser came back online, tab became visible). */
  reconnectNow() {
    if (this.stopped || this.ws) return;
    clearTimeout(this.retryTimer);
    this.connect();
  }

  setState(s) {
    if (this.state === s) return;
    this.state = s;
    this.dispatchEvent(new CustomEvent('state', { detail: s }));
  }

  connect() {
    this.setState('connecting');
    let ws;
    try {
      ws = new WebSocket(this.urlFn());
    } catch {
      this.scheduleRetry(false);
      return;
    }
    this.ws = ws;
    let opened = false;
    // No open within the timeout (a black-holed SYN, a stuck proxy): give up
    // on this attempt and retry with backoff.
    clearTimeout(this.connectTimer);
    this.connectTimer = setTimeout(() => {
      if (opened || this.ws !== ws) return;
      try {
        ws.close();
      } catch {
        // already closing
      }
      this.dropped(ws, false);
    }, this.connectTimeoutMs);
    ws.onopen = () => {
      opened = true;
      clearTimeout(this.connectTimer);
      // Only a connection that stays up resets the backoff.
      clearTimeout(this.stableTimer);
      this.stableTimer = setTimeout(() => { this.attempt = 0; }, this.stableMs);
      this.opens += 1;
      this.setState('online');
      this.startTimers();
      this.dispatchEvent(new CustomEvent('open', { detail: { reconnect: this.opens > 1 } }));
    };
    ws.onmessage = (e) => {
      clearTimeout(this.deadTimer); // any frame proves the connection alive
      let frame;
      try {
        frame = JSON.parse(e.data);
      } catch {
        return;
      }
      this.dispatchEvent(new CustomEvent('frame', { detail: frame }));
    };
    ws.onerror = () => {}; // a close event always follows
    ws.onclose = () => this.dropped(ws, opened);
  }

  /** The connection is gone (closed, or declared dead by the ping watchdog). */
  dropped(ws, opened) {
    if (this.ws !== ws) return;
    this.ws = null;
    ws.onclose = ws.onmessage = ws.onopen = ws.onerror = null;
    clearTimeout(this.connectTimer);
    clearTimeout(this.stableTimer);
    this.stopTimers();
    this.dispatchEvent(new CustomEvent('close', { detail: { opened } }));
    if (!this.stopped) this.scheduleRetry(opened);
  }

  scheduleRetry() {
    const delay = backoffDelay(this.attempt++);
    this.retryAt = Date.now() + delay;
    this.setState('offline');
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  startTimers() {
    this.stopTimers();
    this.pingTimer = setInterval(() => {
      if (!this.send({ type: 'ping' })) return;
      // No frame at all within the timeout: a half-open TCP connection
      // (laptop sleep, NAT drop) that would otherwise never close.
      clearTimeout(this.deadTimer);
      const ws = this.ws;
      this.deadTimer = setTimeout(() => {
        try {
          ws.close(4000, 'ping timeout');
        } catch {
          // already closing
        }
        this.dropped(ws, true);
      }, this.pongTimeoutMs);
    }, this.pingMs);
  }

  stopTimers() {
    clearInterval(this.pingTimer);
    clearTimeout(this.deadTimer);
  }

  /** Sends a frame if connected; false means the caller must retry later. */
  send(obj) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    try {
      this.ws.send(JSON.stringify(obj));
    } catch {
      return false;
    }
    return true;
  }
}

// --- pure helpers --------------------------------------------------------------

const RANK = { pending: 0, sent: 1, delivered: 2, read: 3 };

/** The better of two statuses (statuses only ever move forward). */
export function maxStatus(a, b) {
  return (RANK[b] ?? -1) > (RANK[a] ?? -1) ? b : a;
}

/**
 * Tick state of one of my messages. `wm` holds the peer's watermarks in a
 * direct chat ({delivered, read} seqs, 0 if unknown); for groups pass none and
 * rely on the per-message `status` from history (all members, sender excluded).
 */
export function tickState(msg, wm = { delivered: 0, read: 0 }) {
  if (!msg.seq) return 'pending';
  let s = msg.status && RANK[msg.status] ? msg.status : 'sent';
  if (wm.delivered >= msg.seq) s = maxStatus(s, 'delivered');
  if (wm.read >= msg.seq) s = maxStatus(s, 'read'); // read implies delivered
  return s;
}

/**
 * Gap detection: the highest seq reachable from `known` without a hole.
 * `has(seq)` says whether a message is held. A message whose seq is greater
 * than the result + 1 means seqs in between exist and must be fetched
 * (`after=<result>`).
 */
export function contiguousHigh(known, has) {
  let k = known;
  while (has(k + 1)) k += 1;
  return k;
}

/** True when a newly seen seq leaves a hole above `known`. */
export function hasGap(known, seq) {
  return seq > known + 1;
}

export function isImage(media) {
  return !!media && /^image\//i.test(media.content_type || '');
}

/** Chat-list preview of a message. */
export function previewText(msg) {
  if (!msg) return '';
  if (msg.deleted_at) return 'This message was deleted';
  if (msg.media) {
    const icon = isImage(msg.media) ? '🖼' : '📎';
    return msg.text ? `${icon} ${msg.text}` : `${icon} ${isImage(msg.media) ? 'photo' : 'file'}`;
  }
  return msg.text || '';
}

export function formatSize(bytes) {
  if (!Number.isFinite(bytes)) return '';
  const units = ['B', 'KB', 'MB', 'GB'];
  let n = bytes;
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)} ${units[i]}`;
}

function startOfDay(d) {
  return new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime();
}

/** Chat list time: "14:05" today, "Yesterday", a weekday this week, else a date. */
export function formatTime(iso, now = new Date()) {
  const d = new Date(iso);
  if (!iso || Number.isNaN(d.getTime())) return '';
  const days = Math.round((startOfDay(now) - startOfDay(d)) / 864e5);
  if (days <= 0) return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  if (days === 1) return 'Yesterday';
  if (days < 7) return d.toLocaleDateString([], { weekday: 'short' });
  const sameYear = d.getFullYear() === now.getFullYear();
  return d.toLocaleDateString([], { day: 'numeric', month: 'short', year: sameYear ? undefined : 'numeric' });
}

/** Message bubble time: "14:05" today, else "3 Mar, 14:05". */
export function formatMessageTime(iso, now = new Date()) {
  const d = new Date(iso);
  if (!iso || Number.isNaN(d.getTime())) return '';
  const time = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  if (startOfDay(d) === startOfDay(now)) return time;
  return `${d.toLocaleDateString([], { day: 'numeric', month: 'short' })}, ${time}`;
}

/** "bob, Carol ,,dave" → ["bob", "carol", "dave"] (deduplicated, lower case). */
export function parseUsernames(s) {
  const seen = new Set();
  for (const part of String(s).split(/[\s,;]+/)) {
    const u = part.trim().replace(/^@/, '').toLowerCase();
    if (u) seen.add(u);
  }
  return [...seen];
}

/** Byte length in UTF-8 (the server limits text to 65,536 bytes). */
export function utf8Length(s) {
  return new TextEncoder().encode(s).length;
}

/** File extension for a download name when only the content type is known. */
export function extensionFor(contentType = '') {
  const map = {
    'text/plain': 'txt', 'application/pdf': 'pdf', 'image/png': 'png', 'image/jpeg': 'jpg',
    'image/gif': 'gif', 'image/webp': 'webp', 'application/zip': 'zip', 'audio/mpeg': 'mp3',
    'video/mp4': 'mp4', 'application/json': 'json', 'text/csv': 'csv',
  };
  return map[contentType.split(';')[0].trim().toLowerCase()] || 'bin';
}
