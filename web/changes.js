// Replies, edits, deletes for everyone, reactions and presence: the pure
// rules and state changes (no DOM), shared by the client and its unit tests.

import { maxStatus } from './api.js';

/** How long the server lets a sender edit / delete (its defaults). */
export const EDIT_WINDOW_MS = 15 * 60 * 1000;
export const DELETE_WINDOW_MS = 24 * 3600 * 1000;

/** The reaction picker's choices. */
export const QUICK_REACTIONS = ['👍', '❤️', '😂', '😮', '😢', '🙏'];

const age = (m, now) => now - Date.parse(m.sent_at || 0);

/** Whether `me` may still edit message `m` (own, stored, with text, in the window). */
export function canEdit(m, me, now = Date.now()) {
  return !!m.seq && m.sender_id === me && !m.deleted_at && !!m.text && age(m, now) < EDIT_WINDOW_MS;
}

/** Whether `me` may still delete message `m` for everyone. */
export function canDelete(m, me, now = Date.now()) {
  return !!m.seq && m.sender_id === me && !m.deleted_at && age(m, now) < DELETE_WINDOW_MS;
}

/** `me`'s reaction to `m`, or null. */
export function myReaction(m, me) {
  return (m.reactions || []).find((r) => (r.user_ids || []).includes(me))?.emoji ?? null;
}

/**
 * Applies a changed message (a `message_update`, or one from
 * `/conversations/{id}/changes`) to the messages held by seq: it replaces the
 * held copy (the status of my own messages only moves forward), and a
 * deletion empties the quotes of it in replies, as the server did. Returns
 * the message now held, or null when that seq is not held.
 */
export function applyChange(msgs, updated) {
  const old = msgs.get(updated.seq);
  if (!old) return null;
  const merged = { ...updated, status: maxStatus(old.status, updated.status) };
  if (!merged.status) delete merged.status;
  // A late or repeated event must not undo a newer state.
  if ((old.rev || 0) > (updated.rev || 0)) return old;
  if (old.media?.name && merged.media) merged.media = { ...merged.media, name: old.media.name };
  msgs.set(updated.seq, merged);
  if (merged.deleted_at) {
    for (const [seq, m] of msgs) {
      if (m.reply_to?.seq === merged.seq && !m.reply_to.deleted) {
        msgs.set(seq, { ...m, reply_to: { seq: m.reply_to.seq, sender_id: m.reply_to.sender_id, deleted: true } });
      }
    }
  }
  return merged;
}

/** The quote a reply shows: "text", "📎 media", or a deleted marker. */
export function quoteText(q) {
  if (!q) return '';
  if (q.deleted) return 'This message was deleted';
  if (q.text) return q.has_media ? `📎 ${q.text}` : q.text;
  return q.has_media ? '📎 Media' : '';
}

/** What a reply quotes of a message held here (as the server will store it). */
export function quoteOf(m) {
  const text = m.text ? (Array.from(m.text).length > 100 ? `${Array.from(m.text).slice(0, 100).join('')}…` : m.text) : undefined;
  return { seq: m.seq, sender_id: m.sender_id, text, has_media: !!m.media || undefined };
}

function dayKey(iso) {
  const d = new Date(iso);
  return `${d.getFullYear()}-${d.getMonth() + 1}-${d.getDate()}`;
}

/** "Today", "Yesterday", or a date, for a day separator. */
export function dayLabel(iso, now = new Date()) {
  const d = new Date(iso);
  const start = (x) => new Date(x.getFullYear(), x.getMonth(), x.getDate()).getTime();
  const days = Math.round((start(now) - start(d)) / 864e5);
  if (days === 0) return 'Today';
  if (days === 1) return 'Yesterday';
  const sameYear = d.getFullYear() === now.getFullYear();
  return d.toLocaleDateString([], { weekday: days < 7 ? 'long' : undefined, day: 'numeric', month: 'long', year: sameYear ? undefined : 'numeric' });
}

/**
 * Messages with a separator before the first message of each day and an
 * "unread messages" divider before `firstUnread` (a seq, or 0 for none).
 * Separators are `{sep: 'day'|'unread', key, label}`.
 */
export function withSeparators(list, firstUnread = 0, now = new Date()) {
  const out = [];
  let day = null;
  for (const m of list) {
    const when = m.sent_at || m.created_at;
    const k = when ? dayKey(when) : day;
    if (k && k !== day) {
      out.push({ sep: 'day', key: `d:${k}`, label: dayLabel(when, now) });
      day = k;
    }
    if (firstUnread && m.seq === firstUnread) out.push({ sep: 'unread', key: 'unread', label: 'Unread messages' });
    out.push(m);
  }
  return out;
}

/** The presence line of a chat header: "online", "last seen …", or "". */
export function presenceText(p, now = new Date()) {
  if (!p) return '';
  if (p.online) return 'online';
  if (!p.last_seen) return '';
  const d = new Date(p.last_seen);
  const time = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  const label = dayLabel(p.last_seen, now);
  if (label === 'Today') return `last seen today at ${time}`;
  if (label === 'Yesterday') return `last seen yesterday at ${time}`;
  return `last seen ${label} at ${time}`;
}
