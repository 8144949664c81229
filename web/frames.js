// Frames from the server: messages (and acks), receipts, typing, refusals,
// group events; and what a refused send shows (Retry, Remove).

import { hasGap, previewText } from './api.js';
import { notify } from './prefs.js';
import { onPresence, onUpdate } from './actions.js';
import {
  addMessages, isReading, maybeRead, notePreview, queueReceipt, receiptQueue, refreshStatuses, syncAfter,
} from './history.js';
import {
  TYPING_SHOW_MS, announce, chatByConv, chatForMessage, chatTitle, chats, closeConversation, convIndex,
  getChat, isMine, me, msgNodes, mutes, openChat, openKey, outbox, render, sendPending,
  setConvId, startUpload, toast, ui, userName, wantUser,
} from './app.js';
import { refreshChatList } from './chat-list.js';

export function onFrame(f) {
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
export function dropPending(chat, cmid, stored) {
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

export function retrySend(chat, p) {
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
export function discardPending(chat, p) {
  const i = chat.pending.indexOf(p);
  if (i >= 0) chat.pending.splice(i, 1);
  outbox.delete(p.client_msg_id);
  p.file = null;
  p.retry = null;
  render({ list: true, conv: chat.key === openKey });
  if (chat.key === openKey) ui.composer.focus();
}

export function applyGroup(chat, g) {
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

export function removeChat(chat, message) {
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
