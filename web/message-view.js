// One message on screen: its bubble (sender, quote, media, text or the
// deleted marker, edited mark, time, ticks, upload progress and errors), its
// reactions, and its menu (react, reply, edit, delete). Updated in place:
// a render only touches what changed.

import { formatMessageTime, tickState } from './api.js';
import { QUICK_REACTIONS, canDelete, canEdit, myReaction, quoteText } from './changes.js';
import { $, el, icon } from './dom.js';
import { mediaNode } from './media.js';

/** What the view needs of the app: set once by `configure`. */
let deps = null;

/**
 * @param {{me: () => {user_id}, userName: (id: string) => string,
 *   onReceiptInfo, onRetry, onDiscard, onReact, onCompose, onDelete, onJump}} d
 */
export function configure(d) {
  deps = d;
}

/** Whether a message menu is open. */
export function actionsOpen() {
  return actionsMenu !== null;
}

/** A day separator or the "unread messages" divider. */
export function createSeparator(s) {
  return el('li', { class: `sep sep-${s.sep}`, 'data-testid': s.sep === 'day' ? 'day-separator' : 'unread-divider', role: 'separator' },
    el('span', { text: s.label }));
}

export function createMessage(chat, m) {
  const mine = (m.sender_id === deps.me().user_id);
  const li = el('li', { class: `msg ${mine ? 'mine' : 'theirs'}`, 'data-testid': 'message', 'data-mine': String(mine) });
  const bubble = el('div', { class: 'bubble' });
  // Who wrote it, for screen readers ("You:" / "Alice:"); the visible group
  // sender line is hidden from them instead of being read twice.
  bubble.append(el('span', { class: 'sr-only who' }));
  if (chat.kind === 'group' && !mine) bubble.append(el('div', { class: 'sender', 'data-testid': 'message-sender', 'aria-hidden': 'true' }));
  bubble.append(el('button', { type: 'button', class: 'quote', 'data-testid': 'message-quote', hidden: true, onclick: (e) => deps.onJump(chat, Number(e.currentTarget.dataset.seq)) },
    el('span', { class: 'quote-who' }), el('span', { class: 'quote-text' })));
  if (m.media && !m.deleted_at) bubble.append(mediaNode(m));
  bubble.append(el('div', { class: 'text', 'data-testid': 'message-text', hidden: true }));
  bubble.append(el('div', { class: 'deleted-text', 'data-testid': 'message-deleted', hidden: true }, 'This message was deleted'));
  const meta = el('div', { class: 'meta' }, el('span', { class: 'edited', 'data-testid': 'message-edited', hidden: true }, 'edited'), el('time', {}));
  if (mine) meta.append(el('span', { class: 'ticks', 'data-testid': 'ticks', role: 'img' }));
  bubble.append(meta);
  bubble.append(el('button', {
    type: 'button', class: 'actions-btn', 'data-testid': 'message-actions', title: 'Reply, react, edit or delete', 'aria-haspopup': 'menu',
    onclick: (e) => { e.stopPropagation(); openActions(chat, li); },
  }, '⋯'));
  li.append(bubble);
  li.append(el('div', { class: 'reactions', 'data-testid': 'reactions', hidden: true }));
  if (mine && chat.kind === 'group') {
    // Own group messages open the per-member receipt panel (click or keyboard).
    li.tabIndex = 0;
    li.title = 'Message info';
    li.addEventListener('click', (e) => {
      if (!e.target.closest('a, button')) deps.onReceiptInfo(chat, li.dataset.seq);
    });
    li.addEventListener('keydown', (e) => {
      if ((e.key === 'Enter' || e.key === ' ') && e.target === li) {
        e.preventDefault();
        deps.onReceiptInfo(chat, li.dataset.seq);
      }
    });
  }
  return li;
}

export const TICK_TEXT = { pending: '', sent: '✓', delivered: '✓✓', read: '✓✓' };
const CLOCK = 'M12 2a10 10 0 1 0 0 20 10 10 0 0 0 0-20zm0 18a8 8 0 1 1 0-16 8 8 0 0 1 0 16zm.5-13H11v6l5.2 3.1.8-1.2-4.5-2.7z';

export const TICK_LABEL = { pending: 'Sending', sent: 'Sent', delivered: 'Delivered', read: 'Read' };

export function updateMessage(chat, li, m) {
  const mine = (m.sender_id === deps.me().user_id);
  const s = mine ? tickState(m, chat.kind === 'direct' ? chat.peerWm : undefined) : '';
  const name = chat.kind === 'group' && !mine ? deps.userName(m.sender_id) : '';
  const who = mine ? 'You' : name || deps.userName(m.sender_id);
  const when = m.sent_at || m.created_at;
  const canRetry = !!(m.retry || m.file);
  // Every render visits every message: skip the ones that did not change.
  const sig = [m.seq, s, name, who, when, m.progress, m.error, canRetry, new Date().toDateString(),
    m.text, m.deleted_at, m.edited_at, JSON.stringify(m.reactions || []), JSON.stringify(m.reply_to || null),
    m.reply_to ? deps.userName(m.reply_to.sender_id) : ''].join('|');
  if (li.sig === sig) return;
  li.sig = sig;
  renderBody(chat, li, m);
  li.dataset.seq = m.seq ? String(m.seq) : '';
  const whoNode = $('.who', li);
  if (whoNode) whoNode.textContent = `${who}: `;
  const sender = $('.sender', li);
  if (sender) sender.textContent = name;
  const time = $('time', li);
  time.textContent = formatMessageTime(when);
  time.dateTime = when || '';
  time.title = when ? new Date(when).toLocaleString() : '';
  const ticks = $('[data-testid="ticks"]', li);
  if (ticks) {
    ticks.dataset.status = s;
    if (s === 'pending') ticks.replaceChildren(icon(CLOCK));
    else ticks.textContent = TICK_TEXT[s];
    ticks.setAttribute('aria-label', s === 'pending' && m.error ? 'Not sent' : TICK_LABEL[s]);
  }
  // Upload progress while the file goes up.
  let prog = $('[data-testid="upload-progress"]', li);
  if (m.progress != null) {
    if (!prog) {
      prog = el('progress', { 'data-testid': 'upload-progress', max: '1', 'aria-label': 'Upload progress' });
      $('.who', li).after(prog);
    }
    prog.value = m.progress;
  } else if (prog) {
    prog.remove();
  }
  // A refused send or a failed upload: the reason, Retry and Remove.
  let err = $('.msg-error', li);
  if (m.error) {
    if (!err) {
      err = el('div', { class: 'msg-error', role: 'alert' }, el('span', { class: 'msg-error-text' }),
        el('button', { type: 'button', class: 'text-btn retry', onclick: () => deps.onRetry(chat, m) }, 'Retry'),
        el('button', { type: 'button', class: 'text-btn remove', onclick: () => deps.onDiscard(chat, m) }, 'Remove'));
      $('.bubble', li).append(err);
    }
    $('.msg-error-text', err).textContent = m.error;
    $('.retry', err).hidden = !canRetry;
    $('.remove', err).hidden = !!m.seq;
  } else if (err) {
    err.remove();
  }
}

/** The parts of a message that edits, deletes and reactions change. */
function renderBody(chat, li, m) {
  const deleted = !!m.deleted_at;
  li.classList.toggle('deleted', deleted);
  const text = $('.text', li);
  text.textContent = deleted ? '' : m.text || '';
  text.hidden = deleted || !m.text;
  $('.deleted-text', li).hidden = !deleted;
  $('.edited', li).hidden = deleted || !m.edited_at;
  if (deleted) $('.media-btn, .file', li)?.remove();
  const q = $('.quote', li);
  q.hidden = !m.reply_to;
  if (m.reply_to) {
    q.dataset.seq = String(m.reply_to.seq);
    $('.quote-who', q).textContent = m.reply_to.sender_id === deps.me().user_id ? 'You' : deps.userName(m.reply_to.sender_id);
    $('.quote-text', q).textContent = quoteText(m.reply_to);
  }
  const box = $('.reactions', li);
  const list = deleted ? [] : m.reactions || [];
  box.hidden = !list.length;
  const mine = myReaction(m, deps.me().user_id);
  box.replaceChildren(...list.map((r) => el('button', {
    type: 'button', class: `reaction${r.emoji === mine ? ' mine' : ''}`, 'data-testid': 'reaction', 'data-emoji': r.emoji,
    title: (r.user_ids || []).map((u) => (u === deps.me().user_id ? 'You' : deps.userName(u))).join(', '),
    'aria-label': `${r.emoji} ${r.count}: ${(r.user_ids || []).map((u) => (u === deps.me().user_id ? 'you' : deps.userName(u))).join(', ')}`,
    onclick: () => deps.onReact(chat, m.seq, r.emoji === mine ? null : r.emoji),
  }, `${r.emoji} `, el('span', { class: 'count', text: String(r.count) }))));
  const actions = $('.actions-btn', li);
  actions.hidden = !m.seq || deleted;
}

/** The held message of `li` (by its seq), or null. */
function messageOf(chat, li) {
  return chat.msgs.get(Number(li.dataset.seq)) || null;
}

let actionsMenu = null;
export function closeActions() {
  actionsMenu?.remove();
  actionsMenu = null;
}

/** The small menu of one message: reactions, Reply, Edit, Delete. */
export function openActions(chat, li) {
  const wasOpen = actionsMenu?.parentNode === li;
  closeActions();
  const m = messageOf(chat, li);
  if (wasOpen || !m || m.deleted_at) return;
  const mine = myReaction(m, deps.me().user_id);
  const item = (testid, label, fn) => el('button', { type: 'button', role: 'menuitem', 'data-testid': testid, onclick: () => { closeActions(); fn(); } }, label);
  actionsMenu = el('div', { class: 'actions-menu', role: 'menu', 'data-testid': 'actions-menu' },
    el('div', { class: 'react-row' }, ...QUICK_REACTIONS.map((e) => el('button', {
      type: 'button', role: 'menuitem', class: `react-option${e === mine ? ' mine' : ''}`, 'data-testid': 'react-option', 'data-emoji': e,
      'aria-label': e === mine ? `Remove ${e}` : `React ${e}`,
      onclick: () => { closeActions(); deps.onReact(chat, m.seq, e === mine ? null : e); },
    }, e))),
    item('action-reply', 'Reply', () => deps.onCompose(chat, 'reply', m)),
    canEdit(m, deps.me().user_id) ? item('action-edit', 'Edit', () => deps.onCompose(chat, 'edit', m)) : null,
    canDelete(m, deps.me().user_id) ? item('action-delete', 'Delete for everyone', () => deps.onDelete(chat, m)) : null);
  li.append(actionsMenu);
  actionsMenu.querySelector('button')?.focus();
}
