// Acting on messages and people: reply and edit (the composer's context),
// reactions, delete for everyone, applying `message_update` frames and the
// change catch-up, presence watches, block / unblock, mute, privacy and the
// notifications button.

import { applyChange, quoteOf, quoteText } from './changes.js';
import { $ } from './dom.js';
import { notificationState } from './prefs.js';
import {
  announce, api, autosize, blocked, chatByConv, chatTitle, composing, isMine, msgKey, msgNodes, mutes,
  openChatObj, openKey, presence, render, setBlocked, setComposing, socket, toast, ui, userName,
} from './app.js';

/** Reply to or edit `m`: the composer shows what it is doing. */
export function startCompose(chat, kind, m) {
  setComposing({ kind, key: chat.key, seq: m.seq });
  if (kind === 'edit') ui.composer.value = m.text || '';
  autosize();
  renderContext();
  ui.composer.focus();
}

export function cancelCompose() {
  if (composing?.kind === 'edit') ui.composer.value = '';
  setComposing(null);
  autosize();
  renderContext();
}

export function renderContext() {
  const chat = openChatObj();
  const m = composing && chat && composing.key === chat.key ? chat.msgs.get(composing.seq) : null;
  if (composing && (!m || m.deleted_at)) setComposing(null);
  ui.context.hidden = !composing;
  if (!composing) return;
  ui.context.dataset.kind = composing.kind;
  $('.ctx-title', ui.context).textContent = composing.kind === 'edit'
    ? 'Editing'
    : `Replying to ${isMine(m) ? 'yourself' : userName(m.sender_id)}`;
  $('.ctx-text', ui.context).textContent = quoteText(quoteOf(m));
}

/** Sends a change frame; a refusal comes back as an error toast. */
export function sendChange(chat, frame) {
  const f = { client_msg_id: crypto.randomUUID(), conversation_id: chat.conversation_id, ...frame };
  if (!socket?.send(f)) toast('You are offline: try again when connected.');
}

export function react(chat, seq, emoji) {
  sendChange(chat, { type: 'react', seq, emoji });
}

export function deleteMessage(chat, m) {
  // eslint-disable-next-line no-alert
  if (!window.confirm('Delete this message for everyone?')) return;
  sendChange(chat, { type: 'delete', seq: m.seq });
}

/** Scrolls to a held message (a quote's original) and flashes it. */
export function jumpTo(chat, seq) {
  const m = chat.msgs.get(seq);
  const node = m && msgNodes.get(msgKey(m));
  if (!node) return;
  node.scrollIntoView({ block: 'center' });
  node.classList.add('flash');
  setTimeout(() => node.classList.remove('flash'), 1200);
}

/** A message changed: edited, deleted for everyone, reacted to. */
export function onUpdate(f) {
  const m = f.message;
  if (!m?.seq) return;
  const chat = chatByConv(m.conversation_id);
  if (!chat) return;
  chat.rev = Math.max(chat.rev, m.rev || 0);
  const held = applyChange(chat.msgs, m);
  if (chat.last_message?.seq === m.seq) chat.last_message = held || { ...chat.last_message, ...m };
  if (f.change === 'deleted' && composing?.key === chat.key && composing.seq === m.seq) setComposing(null);
  render({ list: true, conv: chat.key === openKey });
}

/** Applies what changed in `chat` since its rev (after a reconnect). */
export async function syncChanges(chat) {
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
export function watchPresence() {
  const chat = openChatObj();
  const ids = chat?.kind === 'direct' && !blocked.has(chat.peer_id) ? [chat.peer_id] : [];
  socket?.send({ type: 'presence', user_ids: ids });
}

export function onPresence(f) {
  presence.set(f.user_id, { online: !!f.online, last_seen: f.last_seen });
  const chat = openChatObj();
  if (chat?.kind === 'direct' && chat.peer_id === f.user_id) render({ conv: true });
}

export async function toggleBlock() {
  const chat = openChatObj();
  if (chat?.kind !== 'direct') return;
  const was = blocked.has(chat.peer_id);
  // eslint-disable-next-line no-alert
  if (!was && !window.confirm(`Block ${chatTitle(chat)}? They will not be able to message you or see when you are online.`)) return;
  try {
    setBlocked(await (was ? api.unblock(chat.peer_id) : api.block(chat.peer_id)));
    toast(was ? `${chatTitle(chat)} is unblocked.` : `${chatTitle(chat)} is blocked.`);
  } catch (e) {
    toast(`Could not ${was ? 'unblock' : 'block'}: ${e.message}`);
  }
  watchPresence();
  render({ conv: true });
}

/** The privacy dialog: presence shown to everyone I chat with, or to nobody. */
export async function openPrivacy() {
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

export async function setPresenceVisible(visible) {
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

export function toggleMute() {
  const chat = openChatObj();
  if (!chat || !mutes) return;
  const now = mutes.toggle(chat.key);
  announce(now ? 'Chat muted' : 'Chat unmuted');
  render({ list: true, conv: true });
}

export function showNotifyButton() {
  const state = notificationState();
  ui.notifyBtn.hidden = state === 'unsupported' || state === 'granted';
  ui.notifyBtn.title = state === 'denied' ? 'Notifications are blocked in this browser' : 'Turn on desktop notifications';
}
