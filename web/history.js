// History of the open chats: the first page, older pages while scrolling
// up, gap filling by dense seq, status refreshes; and the watermark
// receipts this device sends (coalesced, queued while offline).

import { ApiError, contiguousHigh, hasGap, maxStatus } from './api.js';
import { applyChange } from './changes.js';
import { applyGroup, dropPending } from './frames.js';
import {
  PAGE, SYNC_PAGE, api, atBottom, chats, isMine, me, onScroll, openChatObj, openKey, render,
  renderConversation, setAtBottom, setConvId, socket, toast, ui,
} from './app.js';

export function fetchHistory(chat, params) {
  if (chat.kind === 'group') {
    return api.group(chat.group_id, params).then((r) => {
      applyGroup(chat, r.group);
      if (!chat.loaded && !chat.rev) chat.rev = r.rev || 0;
      return r;
    });
  }
  return api.direct(me.user_id, chat.peer_id, params).then((r) => {
    setConvId(chat, r.conversation_id);
    return r;
  }).then((r) => {
    // The first page sets where change catch-up starts; later pages may be
    // newer than changes not applied yet, so they never move it.
    if (!chat.loaded && !chat.rev) chat.rev = r.rev || 0;
    return r;
  });
}

/** Adds messages to a chat's cache (deduplicated by seq, statuses only move forward). */
export function addMessages(chat, list) {
  for (const m of list) {
    if (!m || !m.seq) continue;
    setConvId(chat, m.conversation_id);
    const old = chat.msgs.get(m.seq);
    if (old && (m.rev || 0) > (old.rev || 0)) {
      applyChange(chat.msgs, m); // a page read after an edit, delete or reaction
    } else if (old) {
      old.status = maxStatus(old.status, m.status);
      if (m.media?.thumbnail_url && old.media) old.media.thumbnail_url ??= m.media.thumbnail_url;
    } else {
      chat.msgs.set(m.seq, m);
    }
    chat.low = Math.min(chat.low, m.seq);
    if (isMine(m)) {
      // Stored already (e.g. fetched during a resync): the pending copy goes.
      dropPending(chat, m.client_msg_id, chat.msgs.get(m.seq));
      // In a direct chat "read"/"delivered" on one message covers all before it.
      if (chat.kind === 'direct') {
        if (m.status === 'read') chat.peerWm.read = Math.max(chat.peerWm.read, m.seq);
        if (m.status === 'read' || m.status === 'delivered') chat.peerWm.delivered = Math.max(chat.peerWm.delivered, m.seq);
      }
    } else {
      // The server moves a sender's read watermark to each message they send,
      // so a reply means the peer has read everything before it.
      if (chat.kind === 'direct') {
        chat.peerWm.read = Math.max(chat.peerWm.read, m.seq);
        chat.peerWm.delivered = Math.max(chat.peerWm.delivered, m.seq);
      }
      if (chat.typingUntil && m.sent_at) chat.typingUntil = 0;
    }
  }
  chat.known = contiguousHigh(Math.max(chat.known, chat.low === Infinity ? 0 : chat.low - 1), (s) => chat.msgs.has(s));
  const top = chat.msgs.get(chat.known);
  if (top && top.seq >= chat.last_seq) notePreview(chat, top);
}

export function notePreview(chat, m) {
  chat.last_seq = m.seq;
  chat.last_message = m;
  if (m.sent_at && (!chat.updated_at || m.sent_at > chat.updated_at)) chat.updated_at = m.sent_at;
}

export function loadInitial(chat) {
  if (chat.loaded) return Promise.resolve();
  if (chat.loading) return chat.loading;
  chat.loading = (async () => {
    try {
      const r = await fetchHistory(chat, { limit: PAGE });
      if (r.messages.length) chat.known = Math.max(chat.known, r.messages[0].seq - 1);
      addMessages(chat, r.messages);
      chat.hasMoreBefore = !!r.has_more;
      chat.loaded = true;
      chat.statusStale = false; // statuses just came with the page
      // Messages pushed while this page was on its way may sit beyond a hole.
      if (hasGap(chat.known, Math.max(0, ...chat.msgs.keys()))) syncAfter(chat);
      if (chat.known > chat.sentWm.delivered) queueReceipt(chat, 'delivered', chat.known);
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 401)) toast(`Could not load messages: ${e.message}`);
    } finally {
      chat.loading = null;
    }
    render({ conv: true, list: true });
    // Fill the viewport so that scrolling up is possible at all.
    queueMicrotask(() => queueMicrotask(() => fillViewport(chat)));
  })();
  return chat.loading;
}

async function fillViewport(chat) {
  const box = ui.messages;
  if (chat.key === openKey && chat.hasMoreBefore && box.scrollHeight <= box.clientHeight + 50) {
    const low = chat.low;
    await loadOlder(chat);
    if (chat.low < low) fillViewport(chat); // stop on errors instead of looping
  }
}

/** One page older than the lowest seq held, keeping the scroll position. */
export async function loadOlder(chat) {
  if (!chat.loaded || !chat.hasMoreBefore || chat.loadingOlder) return;
  chat.loadingOlder = true;
  try {
    const r = await fetchHistory(chat, { before: chat.low, limit: PAGE });
    const box = ui.messages;
    const fromBottom = box.scrollHeight - box.scrollTop;
    addMessages(chat, r.messages);
    chat.hasMoreBefore = !!r.has_more && r.messages.length > 0;
    if (chat.key === openKey) {
      const wasAtBottom = atBottom;
      setAtBottom(false); // render synchronously, then restore the position
      renderConversation();
      box.scrollTop = wasAtBottom ? box.scrollHeight : box.scrollHeight - fromBottom;
      onScroll();
    }
  } catch (e) {
    toast(`Could not load older messages: ${e.message}`);
  } finally {
    chat.loadingOlder = false;
  }
}

/** Fetches `after=<known>` until nothing is missing (gap filling, catch-up). */
export async function syncAfter(chat) {
  if (!chat.loaded) return;
  if (chat.syncing) {
    chat.resync = true; // run once more when the current pass ends
    return;
  }
  chat.syncing = true;
  try {
    do {
      chat.resync = false;
      for (;;) {
        const before = chat.known;
        const r = await fetchHistory(chat, { after: chat.known, limit: SYNC_PAGE });
        // The page starts above known+1: the seqs in between are invisible to
        // me (sent while I was not a member) and never will be — step over
        // them instead of asking for them forever.
        const first = r.messages.find((m) => m?.seq)?.seq;
        if (first && first > chat.known + 1) chat.known = first - 1;
        addMessages(chat, r.messages);
        if (!r.has_more || chat.known === before) break;
      }
    } while (chat.resync);
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) toast(`Could not sync: ${e.message}`);
  } finally {
    chat.syncing = false;
  }
  queueReceipt(chat, 'delivered', chat.known);
  render({ conv: true, list: true });
  maybeRead();
}

/**
 * Refreshes the `status` of my messages that are not read yet (groups: after a
 * receipt frame; any chat: after a reconnect, when receipts may have been missed).
 */
export function refreshStatuses(chat, delay = 400) {
  clearTimeout(chat.statusTimer);
  chat.statusTimer = setTimeout(async () => {
    // Only the latest page: an old message someone never reads must not make
    // every receipt in a busy group re-download a long stretch of history.
    const floor = Math.max(0, chat.known - SYNC_PAGE);
    const open = [...chat.msgs.values()].filter((m) => isMine(m) && m.status !== 'read' && m.seq > floor).map((m) => m.seq);
    if (!open.length || !chat.loaded) return;
    try {
      addMessages(chat, (await fetchHistory(chat, { after: Math.min(...open) - 1, limit: SYNC_PAGE })).messages);
    } catch {
      return; // next receipt or reconnect tries again
    }
    render({ conv: true });
  }, delay);
}

// ---------------------------------------------------------------------------
// Receipts

export const receiptQueue = new Map(); // `${key}|${status}` -> {chat, status, seq}
let receiptTimer = null;

/** Coalesces watermark receipts (many messages in a burst → one frame). */
export function queueReceipt(chat, status, seq) {
  if (!chat.conversation_id || !seq || seq <= chat.sentWm[status]) return;
  const k = `${chat.key}|${status}`;
  const q = receiptQueue.get(k);
  if (!q || q.seq < seq) receiptQueue.set(k, { chat, status, seq });
  receiptTimer ??= setTimeout(flushReceipts, 100);
}

export function flushReceipts() {
  clearTimeout(receiptTimer);
  receiptTimer = null;
  for (const [k, { chat, status, seq }] of [...receiptQueue]) {
    if (seq <= chat.sentWm[status] || chats.get(chat.key) !== chat) {
      receiptQueue.delete(k);
      continue;
    }
    const ok = socket?.send({ type: 'receipt', conversation_id: chat.conversation_id, status, up_to_seq: seq });
    // Unsent (offline): stays queued until the socket opens again.
    if (!ok) continue;
    chat.sentWm[status] = seq;
    receiptQueue.delete(k);
  }
}

/** The open conversation is being read: visible tab, scrolled to the bottom. */
export function isReading(chat) {
  return chat && chat.key === openKey && chat.loaded && document.visibilityState === 'visible' && atBottom;
}

export function maybeRead() {
  const chat = openChatObj();
  if (!isReading(chat)) return;
  const top = chat.known;
  if (top > chat.sentWm.read) queueReceipt(chat, 'read', top);
  if (chat.unread_count) {
    chat.unread_count = Math.max(0, chat.last_seq - top);
    render({ list: true });
  }
}
