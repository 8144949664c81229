// The msgr web client: plain ES modules, no build step. This module holds the
// state (a few Maps below) and wires the parts together; rendering is keyed
// (DOM nodes are reused and only updated), and user data only ever reaches
// the page through textContent / attributes.
//
// Modules: api.js (REST, the WebSocket, pure helpers), dom.js (element
// helpers), outbox.js (unacknowledged sends), users.js (names), media.js
// (media fetching and display), message-view.js (one message on screen),
// changes.js (replies, edits, deletes, reactions, presence: the rules),
// prefs.js (mutes, notifications).

import {
  Api, ApiError, Socket, maxStatus, contiguousHigh, hasGap, isImage, previewText, formatTime, parseUsernames,
  utf8Length,
} from './api.js';
import { $, el, reconcile } from './dom.js';
import { Outbox } from './outbox.js';
import { Directory } from './users.js';
import {
  TICK_LABEL, TICK_TEXT, actionsOpen, closeActions, configure as configureView, createMessage, createSeparator,
  updateMessage,
} from './message-view.js';
import {
  cacheMedia, configure as configureMedia, mediaNode, revokeMedia,
} from './media.js';
import {
  applyChange, presenceText, quoteOf, quoteText, withSeparators,
} from './changes.js';
import { Mutes, askNotifications, notificationState, notify } from './prefs.js';

const STORE_KEY = 'msgr.session';
const FLASH_KEY = 'msgr.flash';
const PAGE = 50; // history page when scrolling back
const SYNC_PAGE = 200; // pages fetched to fill gaps
const TYPING_SEND_MS = 3000;
const TYPING_SHOW_MS = 4000;
const MAX_TEXT_BYTES = 65536;

const ui = {
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

let me = null; // {user_id, username, display_name, token, expires_at}
let socket = null;
const api = new Api({ onUnauthorized: () => logout('Your session has expired. Please log in again.') });

/**
 * Chats keyed by a stable local key: `u:<peer_id>` (direct) or `g:<group_id>`.
 * A new direct chat has no conversation_id until the server names it, so the
 * key cannot be the conversation id; convIndex maps conversation ids to keys.
 */
const chats = new Map();
const convIndex = new Map();
const directory = new Directory(api, () => me, () => render({ list: true, conv: true, members: true }));
const users = directory.users; // user_id -> {user_id, username, display_name}
const presence = new Map(); // user_id -> {online, last_seen}
let blocked = new Set(); // user ids I block
let mutes = null; // Mutes, once signed in
/** What the composer is doing besides a plain send: {kind: 'reply'|'edit', key, seq}. */
let composing = null;
const outbox = new Outbox( // client_msg_id -> {frame, key, media?, created_at}
  () => me?.user_id,
  (frame) => (frame.to_group ? getChat('group', frame.to_group) : getChat('direct', frame.to_user)),
);
let openKey = null;

const chatNodes = new Map(); // chat key -> <li>
const msgNodes = new Map(); // message key -> <li>, for the open conversation
let atBottom = true;

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

function getChat(kind, id) {
  const key = `${kind === 'group' ? 'g' : 'u'}:${id}`;
  let chat = chats.get(key);
  if (!chat) {
    chat = newChat(kind, id);
    chats.set(key, chat);
  }
  return chat;
}

function setConvId(chat, id) {
  if (!id || chat.conversation_id === id) return;
  chat.conversation_id = id;
  convIndex.set(id, chat.key);
}

const chatByConv = (id) => chats.get(convIndex.get(id));
const openChatObj = () => (openKey ? chats.get(openKey) : null);
const isMine = (m) => m.sender_id === me.user_id;

function chatForMessage(m) {
  if (m.to_group) return getChat('group', m.to_group);
  return getChat('direct', isMine(m) ? m.to_user : m.sender_id);
}

// ---------------------------------------------------------------------------
// Users: names of peers, senders and members (see users.js)

const wantUser = (id) => directory.want(id);
const retryFailedUsers = () => directory.retryFailed();
const userName = (id) => directory.name(id);
const findUsername = (name) => directory.find(name);

function chatTitle(chat) {
  if (chat.kind === 'group') return chat.group?.name || chat.title || 'Group';
  const u = users.get(chat.peer_id);
  return chat.title || (u && (u.display_name || u.username)) || userName(chat.peer_id);
}

// ---------------------------------------------------------------------------
// Rendering (batched: many events in one tick render once)

const dirty = { list: false, conv: false, members: false };
let renderQueued = false;

function render(parts) {
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

function avatarFor(node, chat) {
  const title = chatTitle(chat);
  node.textContent = (title.trim()[0] || '?').toUpperCase();
  let h = 0;
  for (const c of chat.key) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  node.style.backgroundColor = `hsl(${h % 360} 45% 55%)`;
}

function visibleChats() {
  // A direct chat picked from search shows up once it has a message.
  return [...chats.values()]
    .filter((c) => c.kind === 'group' || c.last_seq > 0 || c.pending.length > 0)
    .sort((a, b) => (Date.parse(b.updated_at) || 0) - (Date.parse(a.updated_at) || 0));
}

function renderChatList() {
  const list = visibleChats();
  reconcile(ui.chatList, chatNodes, list, (c) => c.key, createChatItem, updateChatItem);
  ui.emptyList.hidden = list.length > 0;
  const total = list.reduce((n, c) => n + (c.unread_count || 0), 0);
  document.title = total ? `(${total}) msgr` : 'msgr';
}

function createChatItem(chat) {
  const btn = el('button', { type: 'button', class: 'chat-item', 'data-testid': 'chat-item' },
    el('span', { class: 'avatar', 'aria-hidden': 'true' }),
    el('span', { class: 'chat-main' },
      el('span', { class: 'chat-top' },
        el('span', { class: 'chat-title', 'data-testid': 'chat-title' }),
        el('time', { class: 'chat-time' })),
      el('span', { class: 'chat-bottom' },
        el('span', { class: 'chat-preview', 'data-testid': 'chat-preview' }))));
  btn.addEventListener('click', () => openChat(chat.key));
  return el('li', {}, btn);
}

function updateChatItem(li, chat) {
  const btn = li.firstChild;
  btn.dataset.conversationId = chat.conversation_id;
  if (chat.key === openKey) btn.setAttribute('aria-current', 'true');
  else btn.removeAttribute('aria-current');
  avatarFor($('.avatar', btn), chat);
  $('.chat-title', btn).textContent = chatTitle(chat);
  const time = $('.chat-time', btn);
  time.textContent = formatTime(chat.updated_at);
  time.dateTime = chat.updated_at || '';
  const last = chat.pending.at(-1) || chat.last_message;
  $('.chat-preview', btn).textContent = last ? previewText(last) : chat.kind === 'group' ? 'New group' : '';
  let muted = $('[data-testid="muted"]', btn);
  if (mutes?.has(chat.key)) {
    if (!muted) {
      muted = el('span', { class: 'muted-mark', 'data-testid': 'muted', title: 'Muted', 'aria-label': 'Muted' }, '🔕');
      $('.chat-bottom', btn).append(muted);
    }
  } else if (muted) {
    muted.remove();
  }
  let badge = $('[data-testid="unread"]', btn);
  if (chat.unread_count > 0) {
    if (!badge) {
      badge = el('span', { class: 'badge', 'data-testid': 'unread' });
      $('.chat-bottom', btn).append(badge);
    }
    badge.textContent = String(chat.unread_count);
    badge.setAttribute('aria-label', `${chat.unread_count} unread`);
  } else if (badge) {
    badge.remove();
  }
}

/** Messages shown: everything held, in seq order, then my pending sends. */
function shownMessages(chat) {
  const held = [...chat.msgs.values()].sort((a, b) => a.seq - b.seq);
  return held.concat(chat.pending);
}

const msgKey = (m) => (m.seq ? `m:${m.message_id}` : `p:${m.client_msg_id}`);
const itemKey = (m) => (m.sep ? m.key : msgKey(m));

function renderConversation() {
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

/** Reply to or edit `m`: the composer shows what it is doing. */
function startCompose(chat, kind, m) {
  composing = { kind, key: chat.key, seq: m.seq };
  if (kind === 'edit') ui.composer.value = m.text || '';
  autosize();
  renderContext();
  ui.composer.focus();
}

function cancelCompose() {
  if (composing?.kind === 'edit') ui.composer.value = '';
  composing = null;
  autosize();
  renderContext();
}

function renderContext() {
  const chat = openChatObj();
  const m = composing && chat && composing.key === chat.key ? chat.msgs.get(composing.seq) : null;
  if (composing && (!m || m.deleted_at)) composing = null;
  ui.context.hidden = !composing;
  if (!composing) return;
  ui.context.dataset.kind = composing.kind;
  $('.ctx-title', ui.context).textContent = composing.kind === 'edit'
    ? 'Editing'
    : `Replying to ${isMine(m) ? 'yourself' : userName(m.sender_id)}`;
  $('.ctx-text', ui.context).textContent = quoteText(quoteOf(m));
}

/** Sends a change frame; a refusal comes back as an error toast. */
function sendChange(chat, frame) {
  const f = { client_msg_id: crypto.randomUUID(), conversation_id: chat.conversation_id, ...frame };
  if (!socket?.send(f)) toast('You are offline: try again when connected.');
}

function react(chat, seq, emoji) {
  sendChange(chat, { type: 'react', seq, emoji });
}

function deleteMessage(chat, m) {
  // eslint-disable-next-line no-alert
  if (!window.confirm('Delete this message for everyone?')) return;
  sendChange(chat, { type: 'delete', seq: m.seq });
}

/** Scrolls to a held message (a quote's original) and flashes it. */
function jumpTo(chat, seq) {
  const m = chat.msgs.get(seq);
  const node = m && msgNodes.get(msgKey(m));
  if (!node) return;
  node.scrollIntoView({ block: 'center' });
  node.classList.add('flash');
  setTimeout(() => node.classList.remove('flash'), 1200);
}

/** A message changed: edited, deleted for everyone, reacted to. */
function onUpdate(f) {
  const m = f.message;
  if (!m?.seq) return;
  const chat = chatByConv(m.conversation_id);
  if (!chat) return;
  chat.rev = Math.max(chat.rev, m.rev || 0);
  const held = applyChange(chat.msgs, m);
  if (chat.last_message?.seq === m.seq) chat.last_message = held || { ...chat.last_message, ...m };
  if (f.change === 'deleted' && composing?.key === chat.key && composing.seq === m.seq) composing = null;
  render({ list: true, conv: chat.key === openKey });
}

/** Applies what changed in `chat` since its rev (after a reconnect). */
async function syncChanges(chat) {
  if (!chat.loaded || !chat.conversation_id) return;
  try {
    for (let i = 0; i < 20; i++) {
      const r = await api.changes(chat.conversation_id, chat.rev);
      for (const m of r.messages) applyChange(chat.msgs, m);
      const last = r.messages.at(-1);
      chat.rev = Math.max(chat.rev, last?.rev || 0, r.has_more ? 0 : r.rev || 0);
      if (!r.has_more || !last) break;
    }
  } catch {
    return; // the next reconnect tries again
  }
  render({ list: true, conv: chat.key === openKey });
}

/** Asks for the presence of the open direct chat's peer (again after a reconnect). */
function watchPresence() {
  const chat = openChatObj();
  const ids = chat?.kind === 'direct' && !blocked.has(chat.peer_id) ? [chat.peer_id] : [];
  socket?.send({ type: 'presence', user_ids: ids });
}

function onPresence(f) {
  presence.set(f.user_id, { online: !!f.online, last_seen: f.last_seen });
  const chat = openChatObj();
  if (chat?.kind === 'direct' && chat.peer_id === f.user_id) render({ conv: true });
}

async function toggleBlock() {
  const chat = openChatObj();
  if (chat?.kind !== 'direct') return;
  const was = blocked.has(chat.peer_id);
  // eslint-disable-next-line no-alert
  if (!was && !window.confirm(`Block ${chatTitle(chat)}? They will not be able to message you or see when you are online.`)) return;
  try {
    blocked = new Set(await (was ? api.unblock(chat.peer_id) : api.block(chat.peer_id)));
    toast(was ? `${chatTitle(chat)} is unblocked.` : `${chatTitle(chat)} is blocked.`);
  } catch (e) {
    toast(`Could not ${was ? 'unblock' : 'block'}: ${e.message}`);
  }
  watchPresence();
  render({ conv: true });
}

/** The privacy dialog: presence shown to everyone I chat with, or to nobody. */
async function openPrivacy() {
  const box = $('[data-testid="presence-visible"]', ui.privacyDialog);
  const errBox = $('.error', ui.privacyDialog);
  errBox.textContent = '';
  box.disabled = true;
  ui.privacyDialog.showModal();
  try {
    box.checked = (await api.privacy()).presence === 'everyone';
    box.disabled = false;
  } catch (e) {
    errBox.textContent = `Could not load your settings: ${e.message}`;
  }
}

async function setPresenceVisible(visible) {
  const box = $('[data-testid="presence-visible"]', ui.privacyDialog);
  const errBox = $('.error', ui.privacyDialog);
  box.disabled = true;
  try {
    box.checked = (await api.setPrivacy(visible ? 'everyone' : 'nobody')).presence === 'everyone';
    errBox.textContent = '';
    announce(box.checked ? 'Your presence is shown' : 'Your presence is hidden');
  } catch (e) {
    box.checked = !visible;
    errBox.textContent = `Could not save: ${e.message}`;
  } finally {
    box.disabled = false;
  }
}

function toggleMute() {
  const chat = openChatObj();
  if (!chat || !mutes) return;
  const now = mutes.toggle(chat.key);
  announce(now ? 'Chat muted' : 'Chat unmuted');
  render({ list: true, conv: true });
}

function showNotifyButton() {
  const state = notificationState();
  ui.notifyBtn.hidden = state === 'unsupported' || state === 'granted';
  ui.notifyBtn.title = state === 'denied' ? 'Notifications are blocked in this browser' : 'Turn on desktop notifications';
}

// ---------------------------------------------------------------------------
// History: initial page, older pages, gap filling

function fetchHistory(chat, params) {
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
function addMessages(chat, list) {
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

function notePreview(chat, m) {
  chat.last_seq = m.seq;
  chat.last_message = m;
  if (m.sent_at && (!chat.updated_at || m.sent_at > chat.updated_at)) chat.updated_at = m.sent_at;
}

function loadInitial(chat) {
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
async function loadOlder(chat) {
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
      atBottom = false; // render synchronously, then restore the position
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
async function syncAfter(chat) {
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
function refreshStatuses(chat, delay = 400) {
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

const receiptQueue = new Map(); // `${key}|${status}` -> {chat, status, seq}
let receiptTimer = null;

/** Coalesces watermark receipts (many messages in a burst → one frame). */
function queueReceipt(chat, status, seq) {
  if (!chat.conversation_id || !seq || seq <= chat.sentWm[status]) return;
  const k = `${chat.key}|${status}`;
  const q = receiptQueue.get(k);
  if (!q || q.seq < seq) receiptQueue.set(k, { chat, status, seq });
  receiptTimer ??= setTimeout(flushReceipts, 100);
}

function flushReceipts() {
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
function isReading(chat) {
  return chat && chat.key === openKey && chat.loaded && document.visibilityState === 'visible' && atBottom;
}

function maybeRead() {
  const chat = openChatObj();
  if (!isReading(chat)) return;
  const top = chat.known;
  if (top > chat.sentWm.read) queueReceipt(chat, 'read', top);
  if (chat.unread_count) {
    chat.unread_count = Math.max(0, chat.last_seq - top);
    render({ list: true });
  }
}

// ---------------------------------------------------------------------------
// WebSocket frames

function onFrame(f) {
  switch (f.type) {
    case 'ack': return onAck(f);
    case 'message': return onMessage(f.message);
    case 'receipt': return onReceipt(f);
    case 'typing': return onTyping(f);
    case 'error': return onErrorFrame(f);
    case 'group': return onGroupEvent(f);
    case 'message_update': return onUpdate(f);
    case 'presence': return onPresence(f);
    default: return undefined; // pong, presence, future frame types
  }
}

let listRefreshTimer = null;
function refreshChatListSoon() {
  clearTimeout(listRefreshTimer);
  listRefreshTimer = setTimeout(refreshChatList, 300);
}

function onMessage(m) {
  if (!m || !m.seq) return;
  const chat = chatForMessage(m);
  setConvId(chat, m.conversation_id);
  const mine = isMine(m);
  if (mine) outbox.delete(m.client_msg_id);
  const isNew = m.seq > chat.last_seq;
  // Not just the next one: something in between is missing from the list
  // (unread count, preview, and for a new chat its title) — ask the server.
  if (hasGap(chat.last_seq, m.seq) || !chat.listed) refreshChatListSoon();
  if (chat.loaded || chat.loading || chat.key === openKey) {
    addMessages(chat, [m]);
    if (chat.loaded && hasGap(chat.known, m.seq)) syncAfter(chat);
  } else {
    dropPending(chat, m.client_msg_id, m);
  }
  if (isNew) {
    notePreview(chat, m);
    if (mine) chat.unread_count = 0; // sending moves my read watermark
    else if (!isReading(chat)) chat.unread_count += 1;
  }
  if (!mine) {
    chat.typingUntil = 0;
    // Delivered up to the highest seq received (loaded chats: without holes).
    queueReceipt(chat, 'delivered', chat.loaded ? chat.known : m.seq);
    announce(`${chat.kind === 'group' ? `${userName(m.sender_id)} in ${chatTitle(chat)}` : userName(m.sender_id)}: ${previewText(m)}`);
    if (isNew && !mutes?.has(chat.key)) {
      notify(chat.kind === 'group' ? `${userName(m.sender_id)} in ${chatTitle(chat)}` : userName(m.sender_id), previewText(m), chat.key, () => openChat(chat.key));
    }
  }
  render({ list: true, conv: chat.key === openKey });
  maybeRead();
}

function onAck(f) {
  const entry = outbox.get(f.client_msg_id);
  outbox.delete(f.client_msg_id);
  const chat = entry ? chats.get(entry.key) : chatByConv(f.conversation_id);
  if (!chat) return;
  setConvId(chat, f.conversation_id);
  const p = chat.pending.find((x) => x.client_msg_id === f.client_msg_id);
  const m = {
    message_id: f.message_id, client_msg_id: f.client_msg_id, conversation_id: f.conversation_id,
    seq: f.seq, sender_id: me.user_id, sent_at: f.sent_at, status: 'sent',
    ...(chat.kind === 'group' ? { to_group: chat.group_id } : { to_user: chat.peer_id }),
  };
  if (p?.text) m.text = p.text;
  if (p?.media) m.media = { ...p.media };
  if (p?.reply_to) m.reply_to = p.reply_to;
  chat.sentWm.read = Math.max(chat.sentWm.read, f.seq); // the server moved it for us
  if (chat.loaded || chat.loading || chat.key === openKey) {
    addMessages(chat, [m]); // also drops the pending copy, reusing its DOM node
    if (chat.loaded && hasGap(chat.known, f.seq)) syncAfter(chat);
  } else {
    dropPending(chat, f.client_msg_id, m);
  }
  if (f.seq > chat.last_seq) notePreview(chat, chat.msgs.get(f.seq) || m);
  // Sending moved my read watermark to this seq: only what came after it is unread.
  chat.unread_count = Math.max(0, Math.min(chat.unread_count, chat.last_seq - f.seq));
  render({ list: true, conv: chat.key === openKey });
}

/** Removes a pending message; its DOM node is re-keyed to the stored message. */
function dropPending(chat, cmid, stored) {
  if (!cmid) return;
  const i = chat.pending.findIndex((x) => x.client_msg_id === cmid);
  if (i < 0) return;
  const [p] = chat.pending.splice(i, 1);
  outbox.delete(cmid);
  if (stored && p.media && stored.media && !stored.media.name) stored.media.name = p.media.name;
  const node = msgNodes.get(`p:${cmid}`);
  if (node && chat.key === openKey && stored?.message_id) {
    msgNodes.delete(`p:${cmid}`);
    const key = `m:${stored.message_id}`;
    if (msgNodes.has(key)) node.remove(); // the stored copy is on screen already
    else msgNodes.set(key, node);
  }
}

function onReceipt(f) {
  const chat = chatByConv(f.conversation_id);
  if (!chat) return;
  if (f.user_id === me.user_id) {
    // One of my other devices: keep this one's watermarks and badge in step.
    chat.sentWm[f.status] = Math.max(chat.sentWm[f.status], f.up_to_seq);
    if (f.status === 'read') {
      chat.unread_count = Math.max(0, Math.min(chat.unread_count, chat.last_seq - f.up_to_seq));
      render({ list: true });
    }
    return;
  }
  if (chat.kind === 'direct') {
    const wm = chat.peerWm;
    wm.delivered = Math.max(wm.delivered, f.up_to_seq);
    if (f.status === 'read') wm.read = Math.max(wm.read, f.up_to_seq);
    render({ conv: chat.key === openKey });
  } else if (chat.key === openKey) {
    // A group message is "read" once every member read it: ask the server.
    refreshStatuses(chat);
  } else if (chat.loaded) {
    // Not on screen: refresh the ticks when it is opened again.
    chat.statusStale = true;
  }
}

function onTyping(f) {
  const chat = chatByConv(f.conversation_id);
  if (!chat || f.user_id === me.user_id) return;
  chat.typingUntil = Date.now() + TYPING_SHOW_MS;
  chat.typingUser = f.user_id;
  render({ conv: chat.key === openKey });
  setTimeout(() => render({ conv: true }), TYPING_SHOW_MS + 50);
}

function onErrorFrame(f) {
  const entry = f.client_msg_id && outbox.get(f.client_msg_id);
  if (!entry) {
    toast(f.message || f.code || 'The server refused a request');
    return;
  }
  outbox.delete(f.client_msg_id);
  const chat = chats.get(entry.key);
  const p = chat?.pending.find((x) => x.client_msg_id === f.client_msg_id);
  if (p) {
    p.error = f.message || f.code;
    p.retry = { frame: entry.frame };
    render({ conv: chat.key === openKey });
  }
}

function retrySend(chat, p) {
  if (p.file) {
    // The upload failed: send the same file again.
    const file = p.file;
    p.file = null;
    p.error = null;
    startUpload(chat, p, file);
    render({ conv: true });
    return;
  }
  if (!p.retry) return;
  p.error = null;
  p.retry = null;
  sendPending(chat, p); // the same client_msg_id; the outbox entry keeps media and created_at
  render({ conv: true });
}

/** Gives up on a pending message that failed (refused send, failed upload). */
function discardPending(chat, p) {
  const i = chat.pending.indexOf(p);
  if (i >= 0) chat.pending.splice(i, 1);
  outbox.delete(p.client_msg_id);
  p.file = null;
  p.retry = null;
  render({ list: true, conv: chat.key === openKey });
  if (chat.key === openKey) ui.composer.focus();
}

function applyGroup(chat, g) {
  if (!g) return;
  chat.group = { ...chat.group, ...g };
  chat.title = g.name || chat.title;
  setConvId(chat, g.conversation_id); // not necessarily the group_id
  for (const m of g.members || []) wantUser(m.user_id);
  render({ list: true, conv: chat.key === openKey, members: true });
}

function onGroupEvent(f) {
  const aboutMe = f.user_id === me.user_id;
  if (aboutMe && (f.event === 'removed' || f.event === 'left')) {
    const gone = chats.get(`g:${f.group_id}`);
    if (gone) removeChat(gone, f.event === 'left' ? `You left “${chatTitle(gone)}”.` : `You were removed from “${chatTitle(gone)}”.`);
    return;
  }
  const chat = getChat('group', f.group_id);
  applyGroup(chat, f.group);
  setConvId(chat, f.conversation_id);
  if (!chat.updated_at) chat.updated_at = new Date().toISOString();
  if (aboutMe && f.event === 'added') refreshChatListSoon(); // unread counts, last message
  if (chat.key === openKey && !aboutMe && f.event !== 'created') {
    const who = userName(f.user_id);
    toast(f.event === 'added' ? `${who} joined` : f.event === 'left' ? `${who} left` : `${who} was removed`);
  }
  render({ list: true, conv: chat.key === openKey, members: true });
}

function removeChat(chat, message) {
  chats.delete(chat.key);
  convIndex.delete(chat.conversation_id);
  for (const [k, q] of [...receiptQueue]) if (q.chat === chat) receiptQueue.delete(k);
  if (openKey === chat.key) {
    if (ui.membersDialog.open) ui.membersDialog.close();
    if (ui.receiptDialog.open) ui.receiptDialog.close();
    closeConversation({ focusSearch: true });
  }
  if (message) toast(message);
  render({ list: true, conv: true });
}

// ---------------------------------------------------------------------------
// Chat list sync

let listSyncing = null;
let listAgain = false; // asked for while a fetch was in flight: run once more after it

async function refreshChatList() {
  if (listSyncing) {
    listAgain = true;
    return listSyncing;
  }
  listAgain = false;
  listSyncing = (async () => {
    const before = new Set(chats.keys()); // chats made during the fetch are not stale
    try {
      const seen = new Set();
      let cursor;
      let complete = false;
      for (let i = 0; i < 10; i++) {
        const page = await api.chats(me.user_id, { limit: 100, cursor });
        for (const c of page.chats) seen.add(mergeServerChat(c));
        cursor = page.next_cursor;
        if (!cursor) {
          complete = true;
          break;
        }
      }
      // Groups I left or was removed from while away are no longer listed.
      if (complete) {
        for (const chat of [...chats.values()]) {
          if (chat.kind === 'group' && before.has(chat.key) && !seen.has(chat.key)) removeChat(chat);
        }
      }
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 401)) toast(`Could not load chats: ${e.message}`);
    } finally {
      listSyncing = null;
    }
    render({ list: true, conv: true });
    maybeRead();
    if (listAgain) await refreshChatList();
  })();
  return listSyncing;
}

function mergeServerChat(c) {
  const chat = getChat(c.kind === 'group' ? 'group' : 'direct', c.kind === 'group' ? c.group_id : c.peer_id);
  setConvId(chat, c.conversation_id);
  chat.listed = true;
  if (c.title) chat.title = c.title;
  if (c.last_seq >= chat.last_seq) {
    chat.last_seq = c.last_seq;
    if (c.last_message) chat.last_message = c.last_message;
    chat.unread_count = c.unread_count || 0;
  }
  if (!chat.updated_at || (c.updated_at && c.updated_at > chat.updated_at)) chat.updated_at = c.updated_at;
  const lm = c.last_message;
  if (lm && !isMine(lm)) queueReceipt(chat, 'delivered', c.last_seq);
  if (chat.loaded && c.last_seq > chat.known) syncAfter(chat); // missed something
  return chat.key;
}

// ---------------------------------------------------------------------------
// Opening chats

function openChat(key) {
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
    composing = null;
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

function closeConversation({ focusSearch = false } = {}) {
  const key = openKey;
  // Keep what was typed: it is back when the chat is opened again.
  const chat = chats.get(key);
  if (chat) chat.draft = ui.composer.value;
  ui.composer.value = '';
  autosize();
  openKey = null;
  composing = null;
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

function sendPending(chat, p) {
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
    composing = null;
    ui.composer.value = '';
    autosize();
    renderContext();
    if (m && text !== m.text) sendChange(chat, { type: 'edit', seq: m.seq, text });
    return;
  }
  const reply = composing?.key === chat.key && composing.kind === 'reply' ? chat.msgs.get(composing.seq) : null;
  composing = null;
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
function startUpload(chat, p, file) {
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

function autosize() {
  ui.composer.style.height = 'auto';
  ui.composer.style.height = `${Math.min(ui.composer.scrollHeight, 160)}px`;
}

// ---------------------------------------------------------------------------
// Groups: create, members, receipts

async function createGroup(e) {
  e.preventDefault();
  const form = e.target;
  const errBox = $('.error', form);
  const name = form.elements.name.value.trim();
  errBox.textContent = '';
  if (!name) {
    errBox.textContent = 'Give the group a name.';
    return;
  }
  const submit = $('[data-testid="group-create"]', form);
  submit.disabled = true;
  try {
    const names = parseUsernames(form.elements.members.value).filter((n) => n !== me.username.toLowerCase());
    const found = await Promise.all(names.map(findUsername));
    const g = await api.createGroup(name, found.map((u) => u.user_id));
    const chat = getChat('group', g.group_id);
    applyGroup(chat, g);
    chat.updated_at ||= new Date().toISOString();
    form.reset();
    ui.groupDialog.close();
    openChat(chat.key);
  } catch (err) {
    errBox.textContent = err.message;
  } finally {
    submit.disabled = false;
  }
}

const memberNodes = new Map(); // user_id -> <li>, for the group in memberGroupKey
let memberGroupKey = null;

function renderMembers() {
  const chat = openChatObj();
  const list = $('.member-list', ui.membersDialog);
  // Nodes are keyed by user_id only: another group's list starts afresh.
  if (!chat?.group || memberGroupKey !== chat.key) {
    list.replaceChildren();
    memberNodes.clear();
    memberGroupKey = chat?.group ? chat.key : null;
    if (!chat?.group) return;
  }
  const members = chat.group.members || [];
  const iAmAdmin = members.some((m) => m.user_id === me.user_id && m.role === 'admin');
  $('.add-member', ui.membersDialog).hidden = !iAmAdmin;
  const sorted = [...members].sort((a, b) => (a.role === b.role ? userName(a.user_id).localeCompare(userName(b.user_id)) : a.role === 'admin' ? -1 : 1));
  reconcile(list, memberNodes, sorted, (m) => m.user_id, (m) => {
    const li = el('li', { class: 'member', 'data-testid': 'member', 'data-user-id': m.user_id },
      el('span', { class: 'member-name' }), el('span', { class: 'role muted' }));
    if (m.user_id !== me.user_id) {
      // The group is looked up at click time, not captured at first render.
      li.append(el('button', {
        type: 'button', class: 'text-btn danger', 'data-testid': 'remove-member',
        onclick: () => {
          const g = openChatObj();
          if (g?.kind === 'group' && g.key === memberGroupKey) removeMember(g, li.dataset.userId);
        },
      }, 'Remove'));
    }
    return li;
  }, (li, m) => {
    const u = users.get(m.user_id);
    $('.member-name', li).textContent = `${userName(m.user_id)}${m.user_id === me.user_id ? ' (you)' : ''}${u?.username ? ` @${u.username}` : ''}`;
    $('.role', li).textContent = m.role === 'admin' ? 'admin' : '';
    const rm = $('[data-testid="remove-member"]', li);
    if (rm) {
      rm.hidden = !iAmAdmin;
      rm.setAttribute('aria-label', `Remove ${userName(m.user_id)}`);
    }
  });
}

function openMembers() {
  const chat = openChatObj();
  if (!chat || chat.kind !== 'group') return;
  $('.error', ui.membersDialog).textContent = '';
  renderMembers();
  ui.membersDialog.showModal();
  // Refresh from the server: membership may have changed.
  fetchHistory(chat, { limit: 1 }).catch(() => {});
}

async function memberAction(fn) {
  const errBox = $('.error', ui.membersDialog);
  errBox.textContent = '';
  try {
    await fn();
  } catch (e) {
    errBox.textContent = e.message;
  }
}

function removeMember(chat, userId) {
  return memberAction(async () => {
    const g = await api.removeMember(chat.group_id, userId);
    if (userId === me.user_id) {
      ui.membersDialog.close();
      removeChat(chat, `You left “${chatTitle(chat)}”.`); // focus goes to the search box
      return;
    }
    if (g?.members) applyGroup(chat, g);
    else if (chat.group) chat.group.members = chat.group.members.filter((m) => m.user_id !== userId);
    render({ members: true, conv: true });
  });
}

function addMember(e) {
  e.preventDefault();
  const chat = openChatObj();
  const input = $('[data-testid="add-member-input"]', ui.membersDialog);
  const name = input.value.trim().replace(/^@/, '');
  if (!chat || !name) return;
  memberAction(async () => {
    const u = await findUsername(name);
    const g = await api.addMember(chat.group_id, u.user_id);
    if (g?.members) applyGroup(chat, g);
    else fetchHistory(chat, { limit: 1 }).catch(() => {});
    input.value = '';
    render({ members: true });
  });
}

async function openReceiptInfo(chat, seqText) {
  const seq = Number(seqText);
  if (!seq) return; // still pending
  const list = $('.receipt-list', ui.receiptDialog);
  const errBox = $('.error', ui.receiptDialog);
  list.replaceChildren(el('li', { class: 'muted' }, 'Loading…'));
  errBox.textContent = '';
  if (!ui.receiptDialog.open) ui.receiptDialog.showModal();
  try {
    const r = await api.receipts(chat.group_id, seq);
    const members = r.members.filter((m) => m.user_id !== me.user_id);
    members.forEach((m) => wantUser(m.user_id));
    if (directory.wanted.size) await directory.resolve();
    list.replaceChildren(...members.map((m) => {
      const state = m.read ? 'read' : m.delivered ? 'delivered' : 'sent';
      return el('li', { class: 'receipt-member', 'data-testid': 'receipt-member', 'data-user-id': m.user_id, 'data-state': state },
        el('span', { text: userName(m.user_id) }),
        el('span', { class: `ticks ${state}`, 'data-status': state }, `${TICK_TEXT[state] || '–'} ${TICK_LABEL[state]}`));
    }));
    if (!members.length) list.replaceChildren(el('li', { class: 'muted' }, 'No other members.'));
  } catch (e) {
    list.replaceChildren();
    errBox.textContent = e.message;
  }
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
function toast(text) {
  ui.toast.textContent = text;
  ui.toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { ui.toast.hidden = true; }, 5000);
}

function announce(text) {
  ui.announcer.textContent = text;
}

function onScroll() {
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
    blocked = new Set(ids);
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
