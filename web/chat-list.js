// The chat list: one keyed item per chat (avatar, title, time, preview,
// mute mark, unread badge), newest activity first, and its sync with the
// server's list (`GET /chat/{user_id}`, paged), which also finds groups
// left or lost while away.

import { ApiError, formatTime, previewText } from './api.js';
import { $, el, reconcile } from './dom.js';
import {
  api, chatTitle, chats, getChat, isMine, me, mutes, openChat, openKey, render, setConvId, toast, ui,
} from './app.js';
import { removeChat } from './frames.js';
import { maybeRead, queueReceipt, syncAfter } from './history.js';

export const chatNodes = new Map(); // chat key -> <li>

export function avatarFor(node, chat) {
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

export function renderChatList() {
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

// ---------------------------------------------------------------------------
// Chat list sync

let listSyncing = null;
let listAgain = false; // asked for while a fetch was in flight: run once more after it

export async function refreshChatList() {
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
