// The msgr web client: plain ES modules, no build step. This module holds the
// state (a few Maps below) and wires the parts together; rendering is keyed
// (DOM nodes are reused and only updated), and user data only ever reaches
// the page through textContent / attributes.
//
// Modules: api.js (REST, the WebSocket, pure helpers), dom.js (element
// helpers), outbox.js (unacknowledged sends), users.js (names), media.js
// (media fetching and display), message-view.js (one message on screen),
// changes.js (replies, edits, deletes, reactions, presence: the rules),
// prefs.js (mutes, notifications), history.js (pages, gaps, receipts),
// frames.js (what the server pushes), actions.js (acting on messages and
// people), groups-view.js (group dialogs), chat-list.js (the list of chats
// and its sync). They read this module's state
// through live bindings and change it only through its setters.

import { Api, ApiError, Socket, isImage, utf8Length } from './api.js';
import { $, el, reconcile } from './dom.js';
import { Outbox } from './outbox.js';
import { Directory } from './users.js';
import {
  actionsOpen, closeActions, configure as configureView, createMessage, createSeparator, updateMessage,
} from './message-view.js';
import { cacheMedia, configure as configureMedia, mediaNode, revokeMedia } from './media.js';
import { presenceText, quoteOf, withSeparators } from './changes.js';
import { Mutes, askNotifications } from './prefs.js';
import {
  cancelCompose, deleteMessage, jumpTo, openPrivacy, react, renderContext, sendChange, setPresenceVisible,
  showNotifyButton, startCompose, syncChanges, toggleBlock, toggleMute, watchPresence,
} from './actions.js';
import { discardPending, onFrame, removeChat, retrySend } from './frames.js';
import {
  addMember, createGroup, openMembers, openReceiptInfo, removeMember, renderMembers,
} from './groups-view.js';
import {
  flushReceipts, loadInitial, loadOlder, maybeRead, refreshStatuses, syncAfter,
} from './history.js';
import { avatarFor, chatNodes, refreshChatList, renderChatList } from './chat-list.js';

const STORE_KEY = 'msgr.session';
const FLASH_KEY = 'msgr.flash';
export const PAGE = 50; // history page when scrolling back
export const SYNC_PAGE = 200; // pages fetched to fill gaps
const TYPING_SEND_MS = 3000;
export const TYPING_SHOW_MS = 4000;
const MAX_TEXT_BYTES = 65536;

export const ui = {
  auth: $('#auth-screen'),
  authForm: $('[data-testid="auth-form"]'),
  authError: $('[data-testid="auth-error"]'),
  app: $('#app-screen'),
  me: $('[data-testid="me"]'),
  conn: $('[data-testid="conn-state"]'),
  logout: $('[data-testid="logout"]'),
  search: $('[data-testid="new-chat-input"]'),
  results: $('#user-results'),
  newGroup: $('[data-testid="new-group"]'),
  chatList: $('[data-testid="chat-list"]'),
  emptyList: $('.empty-list'),
  conv: $('[data-testid="conversation"]'),
  placeholder: $('.placeholder'),
  convBody: $('.conv-body'),
  back: $('.back'),
  convAvatar: $('.conv-avatar'),
  convTitle: $('[data-testid="conv-title"]'),
  convSub: $('.conv-sub'),
  typing: $('[data-testid="typing"]'),
  membersBtn: $('[data-testid="members-button"]'),
  muteBtn: $('[data-testid="mute-button"]'),
  blockBtn: $('[data-testid="block-button"]'),
  notifyBtn: $('[data-testid="notify-button"]'),
  context: $('[data-testid="compose-context"]'),
  messages: $('[data-testid="messages"]'),
  jump: $('.jump'),
  composerForm: $('.composer'),
  composer: $('[data-testid="composer"]'),
  attach: $('[data-testid="attach"]'),
  groupDialog: $('#group-dialog'),
  membersDialog: $('#members-dialog'),
  receiptDialog: $('#receipt-dialog'),
  privacyDialog: $('#privacy-dialog'),
  privacyBtn: $('[data-testid="privacy-button"]'),
  lightbox: $('#lightbox'),
  toast: $('#toast'),
  announcer: $('#announcer'),
  connAnnouncer: $('#conn-announcer'),
};

// ---------------------------------------------------------------------------
// State

export let me = null; // {user_id, username, display_name, token, expires_at}
export let socket = null;
export const api = new Api({ onUnauthorized: () => logout('Your session has expired. Please log in again.') });

/**
 * Chats keyed by a stable local key: `u:<peer_id>` (direct) or `g:<group_id>`.
 * A new direct chat has no conversation_id until the server names it, so the
 * key cannot be the conversation id; convIndex maps conversation ids to keys.
 */
export const chats = new Map();
export const convIndex = new Map();
export const directory = new Directory(api, () => me, () => render({ list: true, conv: true, members: true }));
export const users = directory.users; // user_id -> {user_id, username, display_name}
export const presence = new Map(); // user_id -> {online, last_seen}
export const blocked = new Set(); // user ids I block
/** Whom I block now (the server's list). */
export function setBlocked(ids) {
  blocked.clear();
  for (const id of ids) blocked.add(id);
}
export let mutes = null; // Mutes, once signed in
/** What the composer is doing besides a plain send: {kind: 'reply'|'edit', key, seq}. */
export let composing = null;
export function setComposing(v) {
  composing = v;
}
export const outbox = new Outbox( // client_msg_id -> {frame, key, media?, created_at}
  () => me?.user_id,
  (frame) => (frame.to_group ? getChat('group', frame.to_group) : getChat('direct', frame.to_user)),
);
export let openKey = null;

export const msgNodes = new Map(); // message key -> <li>, for the open conversation
export let atBottom = true;
export function setAtBottom(v) {
  atBottom = v;
}

function newChat(kind, id) {
  return {
    key: `${kind === 'group' ? 'g' : 'u'}:${id}`,
    kind,
    peer_id: kind === 'direct' ? id : undefined,
    group_id: kind === 'group' ? id : undefined,
    conversation_id: '',
    title: '',
    listed: false, // seen in a GET /chat answer
    last_message: null,
    last_seq: 0,
    unread_count: 0,
    updated_at: '',
    group: null, // {group_id, name, created_by, members:[{user_id, role}]}
    // Loaded history: msgs by seq; `low` = lowest seq held; `known` = highest
    // seq up to which nothing is missing (gap detection).
    msgs: new Map(),
    low: Infinity,
    known: 0,
    loaded: false,
    loading: null,
    hasMoreBefore: false,
    loadingOlder: false,
    syncing: false,
    resync: false,
    pending: [], // my unacknowledged messages, in send order
    peerWm: { delivered: 0, read: 0 }, // direct chats: the peer's watermarks
    sentWm: { delivered: 0, read: 0 }, // watermarks this device already reported
    typingUntil: 0,
    typingUser: '',
    lastTypingSent: 0,
    rev: 0, // the conversation's change counter as far as this device applied it
    firstUnread: 0, // seq of the first unread message when the chat was opened
    statusTimer: null,
  };
}

export function getChat(kind, id) {
  const key = `${kind === 'group' ? 'g' : 'u'}:${id}`;
  let chat = chats.get(key);
  if (!chat) {
    chat = newChat(kind, id);
    chats.set(key, chat);
  }
  return chat;
}

export function setConvId(chat, id) {
  if (!id || chat.conversation_id === id) return;
  chat.conversation_id = id;
  convIndex.set(id, chat.key);
}

export const chatByConv = (id) => chats.get(convIndex.get(id));
export const openChatObj = () => (openKey ? chats.get(openKey) : null);
export const isMine = (m) => m.sender_id === me.user_id;

export function chatForMessage(m) {
  if (m.to_group) return getChat('group', m.to_group);
  return getChat('direct', isMine(m) ? m.to_user : m.sender_id);
}

// ---------------------------------------------------------------------------
// Users: names of peers, senders and members (see users.js)

export const wantUser = (id) => directory.want(id);
const retryFailedUsers = () => directory.retryFailed();
export const userName = (id) => directory.name(id);
export const findUsername = (name) => directory.find(name);

export function chatTitle(chat) {
  if (chat.kind === 'group') return chat.group?.name || chat.title || 'Group';
  const u = users.get(chat.peer_id);
  return chat.title || (u && (u.display_name || u.username)) || userName(chat.peer_id);
}

// ---------------------------------------------------------------------------
// Rendering (batched: many events in one tick render once)

const dirty = { list: false, conv: false, members: false };
let renderQueued = false;

export function render(parts) {
  Object.assign(dirty, parts);
  if (renderQueued) return;
  renderQueued = true;
  queueMicrotask(() => {
    renderQueued = false;
    if (!me) return;
    const d = { ...dirty };
    dirty.list = dirty.conv = dirty.members = false;
    if (d.list) renderChatList();
    if (d.conv) renderConversation();
    if (d.members && ui.membersDialog.open) renderMembers();
  });
}

/** Messages shown: everything held, in seq order, then my pending sends. */
function shownMessages(chat) {
  const held = [...chat.msgs.values()].sort((a, b) => a.seq - b.seq);
  return held.concat(chat.pending);
}

export const msgKey = (m) => (m.seq ? `m:${m.message_id}` : `p:${m.client_msg_id}`);
const itemKey = (m) => (m.sep ? m.key : msgKey(m));

export function renderConversation() {
  const chat = openChatObj();
  ui.placeholder.hidden = !!chat;
  ui.convBody.hidden = !chat;
  ui.app.classList.toggle('conv-open', !!chat);
  if (!chat) {
    ui.conv.dataset.conversationId = '';
    return;
  }
  ui.conv.dataset.conversationId = chat.conversation_id;
  ui.convTitle.textContent = chatTitle(chat);
  avatarFor(ui.convAvatar, chat);
  const typing = chat.typingUntil > Date.now();
  ui.typing.hidden = !typing;
  ui.typing.textContent = chat.kind === 'group' && chat.typingUser ? `${userName(chat.typingUser)} is typing…` : 'typing…';
  ui.convSub.hidden = typing;
  ui.convSub.textContent = chat.kind === 'group'
    ? (chat.group ? `${chat.group.members.length} members` : '')
    : (blocked.has(chat.peer_id) ? 'blocked' : presenceText(presence.get(chat.peer_id)));
  ui.membersBtn.hidden = chat.kind !== 'group';
  ui.blockBtn.hidden = chat.kind !== 'direct';
  ui.blockBtn.textContent = blocked.has(chat.peer_id) ? 'Unblock' : 'Block';
  const muted = !!mutes?.has(chat.key);
  ui.muteBtn.textContent = muted ? 'Unmute' : 'Mute';
  ui.muteBtn.setAttribute('aria-pressed', String(muted));
  renderContext();

  const box = ui.messages;
  const stick = atBottom;
  reconcile(box, msgNodes, withSeparators(shownMessages(chat), chat.firstUnread), itemKey,
    (m) => (m.sep ? createSeparator(m) : createMessage(chat, m)),
    (n, m) => (m.sep ? undefined : updateMessage(chat, n, m)));
  if (stick) box.scrollTop = box.scrollHeight;
  onScroll();
}

// ---------------------------------------------------------------------------
// Opening chats

export function openChat(key) {
  const chat = chats.get(key);
  if (!chat) return;
  if (openKey !== key) {
    const prev = openChatObj();
    if (prev) prev.draft = ui.composer.value;
    revokeMedia();
    msgNodes.clear();
    ui.messages.replaceChildren();
    openKey = key;
    atBottom = true;
    setComposing(null);
    closeActions();
    // The divider stays where the unread messages started while the chat is open.
    chat.firstUnread = chat.unread_count > 0 ? chat.last_seq - chat.unread_count + 1 : 0;
    ui.composer.value = chat.draft || '';
    autosize();
    if (ui.membersDialog.open) ui.membersDialog.close();
  }
  // Receipts came in while it was not open: its group ticks may be behind.
  if (chat.loaded && chat.statusStale) {
    chat.statusStale = false;
    refreshStatuses(chat, 0);
  }
  render({ list: true, conv: true, members: true });
  watchPresence();
  loadInitial(chat).then(() => {
    if (chat.key === openKey) {
      ui.messages.scrollTop = ui.messages.scrollHeight;
      onScroll();
      maybeRead();
    }
  });
  if (matchMedia('(min-width: 721px)').matches) ui.composer.focus();
  else ui.back.focus();
}

export function closeConversation({ focusSearch = false } = {}) {
  const key = openKey;
  // Keep what was typed: it is back when the chat is opened again.
  const chat = chats.get(key);
  if (chat) chat.draft = ui.composer.value;
  ui.composer.value = '';
  autosize();
  openKey = null;
  setComposing(null);
  closeActions();
  revokeMedia();
  msgNodes.clear();
  ui.messages.replaceChildren();
  watchPresence();
  render({ list: true, conv: true });
  // Back on the list (narrow screens): focus the chat we came from, or the
  // search box when that chat is gone (left the group).
  queueMicrotask(() => {
    const node = !focusSearch && chatNodes.get(key)?.firstChild;
    if (node?.isConnected) node.focus();
    else ui.search.focus();
  });
}

function startDirect(user) {
  users.set(user.user_id, user);
  const chat = getChat('direct', user.user_id);
  if (!chat.title) chat.title = user.display_name || user.username;
  ui.search.value = '';
  showResults([]);
  openChat(chat.key);
}

// ---------------------------------------------------------------------------
// Sending

function newPending(chat, fields) {
  const p = {
    client_msg_id: crypto.randomUUID(), sender_id: me.user_id, conversation_id: chat.conversation_id,
    created_at: new Date().toISOString(), status: 'pending', ...fields,
  };
  chat.pending.push(p);
  if (!chat.updated_at || chat.last_seq === 0) chat.updated_at = p.created_at;
  atBottom = true; // my own send scrolls to the bottom
  render({ list: true, conv: true });
  return p;
}

export function sendPending(chat, p) {
  const frame = { type: 'send', client_msg_id: p.client_msg_id };
  if (chat.kind === 'group') frame.to_group = chat.group_id;
  else frame.to_user = chat.peer_id;
  if (p.text) frame.text = p.text;
  if (p.media?.media_id) frame.media_id = p.media.media_id;
  if (p.reply_to?.seq) frame.reply_to_seq = p.reply_to.seq;
  outbox.set(p.client_msg_id, { frame, key: chat.key, media: p.media, created_at: p.created_at });
  socket.send(frame); // offline: stays in the outbox until the socket reopens
}

function sendText() {
  const chat = openChatObj();
  const text = ui.composer.value.trim();
  if (!chat || !text) return;
  if (utf8Length(text) > MAX_TEXT_BYTES) {
    toast('That message is too long (64 KB at most).');
    return;
  }
  if (composing?.key === chat.key && composing.kind === 'edit') {
    const m = chat.msgs.get(composing.seq);
    setComposing(null);
    ui.composer.value = '';
    autosize();
    renderContext();
    if (m && text !== m.text) sendChange(chat, { type: 'edit', seq: m.seq, text });
    return;
  }
  const reply = composing?.key === chat.key && composing.kind === 'reply' ? chat.msgs.get(composing.seq) : null;
  setComposing(null);
  ui.composer.value = '';
  autosize();
  sendPending(chat, newPending(chat, { text, ...(reply ? { reply_to: quoteOf(reply) } : {}) }));
}

function sendFile(file) {
  const chat = openChatObj();
  if (!chat || !file) return;
  // The composer's text goes along as the caption.
  const text = ui.composer.value.trim();
  ui.composer.value = '';
  autosize();
  const p = newPending(chat, {
    text: text || undefined,
    media: { content_type: file.type || 'application/octet-stream', size: file.size, name: file.name },
  });
  startUpload(chat, p, file);
}

/** Uploads the file of a pending message, then sends it; on failure keeps the File for Retry. */
export function startUpload(chat, p, file) {
  p.progress = 0;
  const repaint = () => render({ conv: chat.key === openKey });
  const up = api.upload(file, (done, total) => {
    p.progress = total ? done / total : 0;
    repaint();
  });
  up.promise.then((r) => {
    p.progress = null;
    if (!chat.pending.includes(p)) return; // removed meanwhile
    p.media = { media_id: r.media_id, content_type: r.content_type, size: r.size, url: r.url || `/media/${r.media_id}`, name: file.name };
    // My own picture needs no download: seed the cache with the local file.
    if (isImage(p.media) && chat.key === openKey) cacheMedia(p.media.url, Promise.resolve(URL.createObjectURL(file)));
    const node = msgNodes.get(`p:${p.client_msg_id}`);
    if (node) {
      const old = $('.media-btn, .file', node);
      old?.replaceWith(mediaNode(p));
    }
    sendPending(chat, p);
    repaint();
  }, (e) => {
    p.progress = null;
    p.error = `Upload failed: ${e.message}`;
    // Worth another try unless the server said the file is too large.
    p.file = e instanceof ApiError && e.status === 413 ? null : file;
    repaint();
  });
}

function onComposerInput() {
  autosize();
  const chat = openChatObj();
  if (!chat || !chat.conversation_id || !ui.composer.value || composing?.kind === 'edit') return;
  const now = Date.now();
  if (now - chat.lastTypingSent > TYPING_SEND_MS) {
    chat.lastTypingSent = now;
    socket.send({ type: 'typing', conversation_id: chat.conversation_id });
  }
}

export function autosize() {
  ui.composer.style.height = 'auto';
  ui.composer.style.height = `${Math.min(ui.composer.scrollHeight, 160)}px`;
}

// ---------------------------------------------------------------------------
// New-chat search

let searchTimer = null;
let searchSeq = 0;

function onSearchInput() {
  clearTimeout(searchTimer);
  const q = ui.search.value.trim().replace(/^@/, '').toLowerCase();
  if (!q) {
    showResults([]);
    return;
  }
  searchTimer = setTimeout(async () => {
    const mySeq = ++searchSeq;
    try {
      const found = await api.searchUsers(q, 20);
      if (mySeq !== searchSeq) return; // a newer search superseded this one
      for (const u of found) users.set(u.user_id, u);
      showResults(found.filter((u) => u.user_id !== me.user_id), q);
    } catch (e) {
      if (mySeq === searchSeq) showResults([], q, e.message);
    }
  }, 200);
}

function showResults(found, q = '', error = '') {
  const items = found.map((u) => el('li', {},
    el('button', { type: 'button', class: 'user-result', 'data-testid': 'user-result', 'data-username': u.username, onclick: () => startDirect(u) },
      el('span', { class: 'user-name', text: u.display_name || u.username }),
      el('span', { class: 'muted', text: `@${u.username}` }))));
  if (q && !found.length) items.push(el('li', { class: 'muted no-results', text: error || 'No one found.' }));
  ui.results.replaceChildren(...items);
  ui.results.hidden = items.length === 0;
}

// ---------------------------------------------------------------------------
// Status: connection, toasts, announcements

const CONN_TEXT = { online: 'Online', connecting: 'Connecting…', offline: 'Offline, reconnecting…' };
let connAnnounced = null; // the last settled state told to screen readers
let connTimer = null;

/**
 * The visible state follows every flip; screen readers hear only settled
 * states: "offline" once it has lasted a moment, "online" once it is back.
 */
function showConn(state) {
  ui.conn.dataset.state = state;
  ui.conn.textContent = CONN_TEXT[state] || state;
  clearTimeout(connTimer);
  if (state === 'online') {
    if (connAnnounced === 'offline') ui.connAnnouncer.textContent = 'Back online.';
    connAnnounced = 'online';
  } else if (connAnnounced !== 'offline') {
    // connecting ↔ offline flips during reconnects are not announced.
    connTimer = setTimeout(() => {
      if (!socket || socket.state === 'online') return;
      connAnnounced = 'offline';
      ui.connAnnouncer.textContent = 'Offline, reconnecting…';
    }, 3000);
  }
}

let toastTimer = null;
export function toast(text) {
  ui.toast.textContent = text;
  ui.toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { ui.toast.hidden = true; }, 5000);
}

export function announce(text) {
  ui.announcer.textContent = text;
}

export function onScroll() {
  const box = ui.messages;
  atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  const chat = openChatObj();
  ui.jump.hidden = atBottom;
  if (chat && !atBottom) {
    $('.jump-text', ui.jump).textContent = chat.unread_count ? `${chat.unread_count} new` : 'Latest';
  }
  if (chat && box.scrollTop < 200) loadOlder(chat);
  maybeRead();
}

// ---------------------------------------------------------------------------
// Session: login, logout, startup

function saveSession() {
  localStorage.setItem(STORE_KEY, JSON.stringify(me));
}

function logout(message) {
  // A deliberate logout ends the session on the server too (an expired or
  // revoked one has nothing left to end).
  if (!message) api.logout();
  localStorage.removeItem(STORE_KEY);
  if (me && !message) outbox.clearStorage(); // a deliberate logout drops unsent messages
  if (message) sessionStorage.setItem(FLASH_KEY, message);
  socket?.stop();
  revokeMedia();
  // A reload is the simplest way to drop every cache, timer and pending request.
  location.reload();
}

async function onAuthSubmit(e) {
  e.preventDefault();
  const register = e.submitter?.dataset.testid === 'register';
  const f = ui.authForm.elements;
  const username = f.username.value.trim();
  const password = f.password.value;
  const display = f.display_name.value.trim();
  ui.authError.textContent = '';
  if (!username || !password) {
    ui.authError.textContent = 'Enter a username and a password.';
    return;
  }
  for (const b of ui.authForm.querySelectorAll('button')) b.disabled = true;
  try {
    let profile = null;
    if (register) profile = await api.register(username, password, display || undefined);
    const s = await api.login(username, password);
    me = {
      user_id: s.user_id, token: s.token, expires_at: s.expires_at,
      username: profile?.username || username.toLowerCase(), display_name: profile?.display_name || '',
    };
    api.token = me.token;
    if (!profile) {
      try {
        const u = await api.user(me.user_id);
        me.username = u.username;
        me.display_name = u.display_name;
      } catch {
        // profile lookup is optional
      }
    }
    saveSession();
    ui.authForm.reset();
    startSession();
  } catch (err) {
    ui.authError.textContent = err.message || 'Something went wrong.';
  } finally {
    for (const b of ui.authForm.querySelectorAll('button')) b.disabled = false;
  }
}

function wsUrl() {
  const proto = location.protocol === 'https:' ? 'wss' : 'ws';
  return `${proto}://${location.host}/messages/send?token=${encodeURIComponent(me.token)}`;
}

function startSession() {
  users.set(me.user_id, { user_id: me.user_id, username: me.username, display_name: me.display_name });
  ui.auth.hidden = true;
  ui.app.hidden = false;
  ui.me.textContent = me.username;
  ui.me.title = me.display_name || me.username;
  mutes = new Mutes(me.user_id);
  showNotifyButton();
  api.blocks().then((ids) => {
    setBlocked(ids);
    render({ conv: true });
  }, () => {});
  outbox.restore();
  render({ list: true, conv: true });

  socket = new Socket(wsUrl);
  socket.addEventListener('state', (e) => showConn(e.detail));
  socket.addEventListener('frame', (e) => onFrame(e.detail));
  socket.addEventListener('open', (e) => {
    // Resend what was never acknowledged; the server dedupes by client_msg_id.
    for (const { frame } of outbox.values()) socket.send(frame);
    // Receipts produced while the socket was down.
    flushReceipts();
    retryFailedUsers();
    // Catch up on what was missed while offline (or between the first list
    // fetch and this socket's subscription).
    refreshChatList();
    const open = openChatObj();
    if (open && !open.loaded) {
      // Its first load failed (or it was dropped): load it now.
      loadInitial(open).then(() => {
        if (open.key !== openKey) return;
        ui.messages.scrollTop = ui.messages.scrollHeight;
        onScroll();
        maybeRead();
      });
    } else if (open) {
      syncAfter(open);
      // Edits, deletions and reactions made while this device was away.
      syncChanges(open);
      if (e.detail.reconnect) refreshStatuses(open, 0);
    }
    watchPresence();
    if (e.detail.reconnect) {
      for (const chat of chats.values()) {
        if (chat.key === openKey || !chat.loaded || chat.loading) continue;
        // Cached history of other chats may be stale: reload on next open.
        chat.loaded = false;
        chat.msgs.clear();
        chat.low = Infinity;
        chat.known = 0;
        chat.statusStale = false;
      }
    }
    maybeRead();
  });
  socket.addEventListener('close', (e) => {
    // A token the server rejects fails the upgrade; only REST can tell us it is a 401.
    if (!e.detail.opened && socket.attempt >= 1) api.chats(me.user_id, { limit: 1 }).catch(() => {});
  });
  showConn('connecting');
  socket.start();
  refreshChatList();
}

function init() {
  configureMedia({
    api, toast, openKey: () => openKey, atBottom: () => atBottom, messages: ui.messages, lightbox: ui.lightbox,
  });
  configureView({
    me: () => me,
    userName,
    onReceiptInfo: openReceiptInfo,
    onRetry: retrySend,
    onDiscard: discardPending,
    onReact: react,
    onCompose: startCompose,
    onDelete: deleteMessage,
    onJump: jumpTo,
  });
  // Static event wiring.
  ui.authForm.addEventListener('submit', onAuthSubmit);
  ui.logout.addEventListener('click', () => logout());
  ui.search.addEventListener('input', onSearchInput);
  ui.search.addEventListener('keydown', (e) => {
    if (e.key === 'ArrowDown') {
      $('button', ui.results)?.focus();
      e.preventDefault();
    } else if (e.key === 'Enter') {
      e.preventDefault();
      const q = ui.search.value.trim().toLowerCase();
      const btns = [...ui.results.querySelectorAll('button')];
      (btns.find((b) => b.dataset.username === q) || (btns.length === 1 && btns[0]))?.click();
    } else if (e.key === 'Escape') {
      ui.search.value = '';
      showResults([]);
    }
  });
  ui.results.addEventListener('keydown', (e) => {
    const btns = [...ui.results.querySelectorAll('button')];
    const i = btns.indexOf(document.activeElement);
    if (e.key === 'ArrowDown') btns[Math.min(i + 1, btns.length - 1)]?.focus();
    else if (e.key === 'ArrowUp') (i <= 0 ? ui.search : btns[i - 1]).focus();
    else return;
    e.preventDefault();
  });
  ui.newGroup.addEventListener('click', () => {
    $('.error', ui.groupDialog).textContent = '';
    ui.groupDialog.showModal();
  });
  $('form', ui.groupDialog).addEventListener('submit', createGroup);
  ui.membersBtn.addEventListener('click', openMembers);
  ui.muteBtn.addEventListener('click', toggleMute);
  ui.privacyBtn.addEventListener('click', openPrivacy);
  $('[data-testid="presence-visible"]', ui.privacyDialog).addEventListener('change', (e) => setPresenceVisible(e.target.checked));
  ui.blockBtn.addEventListener('click', toggleBlock);
  ui.notifyBtn.addEventListener('click', async () => {
    const state = await askNotifications();
    if (state === 'denied') toast('Notifications are blocked in this browser’s site settings.');
    showNotifyButton();
  });
  $('[data-testid="compose-cancel"]', ui.context).addEventListener('click', () => {
    cancelCompose();
    ui.composer.focus();
  });
  document.addEventListener('click', (e) => {
    if (actionsOpen() && !e.target.closest('.actions-menu, .actions-btn')) closeActions();
  });
  $('.add-member', ui.membersDialog).addEventListener('submit', addMember);
  $('[data-testid="leave-group"]', ui.membersDialog).addEventListener('click', () => {
    const chat = openChatObj();
    if (chat?.kind === 'group') removeMember(chat, me.user_id);
  });
  for (const d of [ui.groupDialog, ui.membersDialog, ui.receiptDialog, ui.privacyDialog, ui.lightbox]) {
    d.addEventListener('click', (e) => {
      // [data-close] buttons, and a click on the backdrop (outside the content).
      if (e.target.closest('[data-close]') || e.target === d) d.close();
    });
  }
  ui.back.addEventListener('click', closeConversation);
  ui.messages.addEventListener('scroll', onScroll, { passive: true });
  ui.jump.addEventListener('click', () => {
    ui.messages.scrollTop = ui.messages.scrollHeight;
    onScroll();
    ui.composer.focus();
  });
  ui.composerForm.addEventListener('submit', (e) => {
    e.preventDefault();
    sendText();
  });
  ui.composer.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      sendText();
    }
  });
  ui.composer.addEventListener('input', onComposerInput);
  ui.attach.addEventListener('change', () => {
    const files = [...ui.attach.files];
    ui.attach.value = '';
    for (const f of files) sendFile(f);
  });
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') {
      socket?.reconnectNow();
      maybeRead();
    }
  });
  window.addEventListener('online', () => socket?.reconnectNow());
  window.addEventListener('resize', () => { if (atBottom) ui.messages.scrollTop = ui.messages.scrollHeight; });
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && actionsOpen()) {
      closeActions();
      return;
    }
    if (e.key === 'Escape' && composing && document.activeElement === ui.composer) {
      cancelCompose();
      return;
    }
    // Escape leaves the conversation on narrow screens (dialogs handle their own Escape).
    if (e.key === 'Escape' && openKey && !document.querySelector('dialog[open]') && matchMedia('(max-width: 720px)').matches) {
      closeConversation();
    }
  });
  setInterval(() => render({ list: true }), 60_000); // "Yesterday", weekday labels age

  // Restore the session, if any.
  const flash = sessionStorage.getItem(FLASH_KEY);
  sessionStorage.removeItem(FLASH_KEY);
  try {
    me = JSON.parse(localStorage.getItem(STORE_KEY) || 'null');
  } catch {
    me = null;
  }
  if (me && me.expires_at && Date.parse(me.expires_at) < Date.now()) {
    me = null;
    localStorage.removeItem(STORE_KEY);
  }
  if (me?.token && me.user_id) {
    api.token = me.token;
    startSession();
  } else {
    me = null;
    ui.app.hidden = true;
    ui.auth.hidden = false;
    if (flash) ui.authError.textContent = flash;
    ui.authForm.elements.username.focus();
  }
}

init();
