// Unit tests of the web client's pure helpers (web/api.js), in Node.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  backoffDelay, contiguousHigh, formatSize, hasGap, maxStatus, parseUsernames, previewText, tickState, utf8Length,
} from '../../web/api.js';

test('ticks: pending before the ack, then the best of status and peer watermarks', () => {
  assert.equal(tickState({ seq: 0 }), 'pending');
  assert.equal(tickState({ seq: 5 }), 'sent');
  assert.equal(tickState({ seq: 5 }, { delivered: 5, read: 0 }), 'delivered');
  assert.equal(tickState({ seq: 5 }, { delivered: 4, read: 6 }), 'read', 'read implies delivered');
  assert.equal(tickState({ seq: 5, status: 'read' }, { delivered: 0, read: 0 }), 'read', 'never goes back');
  assert.equal(maxStatus('delivered', 'sent'), 'delivered');
});

test('gap detection from dense seqs', () => {
  const held = new Set([1, 2, 3, 5]);
  assert.equal(contiguousHigh(0, (s) => held.has(s)), 3);
  assert.equal(hasGap(3, 4), false);
  assert.equal(hasGap(3, 5), true);
});

test('reconnect backoff grows, is jittered, and is capped at 15 s', () => {
  assert.equal(backoffDelay(0, () => 0), 250);
  assert.equal(backoffDelay(0, () => 1), 500);
  assert.ok(backoffDelay(3, () => 1) > backoffDelay(1, () => 1));
  assert.equal(backoffDelay(50, () => 1), 15000);
});

test('small text helpers', () => {
  assert.deepEqual(parseUsernames(' @Bob, carol;bob  dave '), ['bob', 'carol', 'dave']);
  assert.equal(utf8Length('é☕'), 5);
  assert.match(previewText({ media: { content_type: 'image/png' } }), /photo/);
  assert.match(previewText({ text: 'hi', media: { content_type: 'application/pdf' } }), /hi/);
  assert.match(formatSize(2048), /2(\.0)? KB/);
});

test('a change replaces the held message, empties quotes of a deleted one, and never goes back', async () => {
  const { applyChange, canEdit, canDelete, myReaction, withSeparators, quoteOf } = await import('../../web/changes.js');
  const msgs = new Map([
    [1, { seq: 1, sender_id: 'ua', text: 'hi', sent_at: new Date().toISOString(), status: 'read' }],
    [2, { seq: 2, sender_id: 'ub', text: 'yo', reply_to: { seq: 1, sender_id: 'ua', text: 'hi' } }],
  ]);
  const edited = applyChange(msgs, { seq: 1, sender_id: 'ua', text: 'hello', rev: 2, edited_at: 'x' });
  assert.equal(edited.text, 'hello');
  assert.equal(edited.status, 'read', 'my message keeps its status');
  assert.equal(applyChange(msgs, { seq: 1, text: 'old', rev: 1 }).text, 'hello', 'an older change is ignored');
  applyChange(msgs, { seq: 1, sender_id: 'ua', rev: 3, deleted_at: 'y' });
  assert.deepEqual(msgs.get(2).reply_to, { seq: 1, sender_id: 'ua', deleted: true });
  assert.equal(applyChange(msgs, { seq: 9, rev: 4 }), null, 'a message not held is left alone');
  assert.equal(previewText(msgs.get(1)), 'This message was deleted');

  const now = Date.now();
  const fresh = { seq: 3, sender_id: 'ua', text: 't', sent_at: new Date(now - 60_000).toISOString() };
  assert.equal(canEdit(fresh, 'ua', now), true);
  assert.equal(canEdit(fresh, 'ub', now), false, "someone else's");
  assert.equal(canEdit({ ...fresh, sent_at: new Date(now - 16 * 60_000).toISOString() }, 'ua', now), false, 'too late');
  assert.equal(canDelete({ ...fresh, sent_at: new Date(now - 16 * 60_000).toISOString() }, 'ua', now), true);
  assert.equal(myReaction({ reactions: [{ emoji: '👍', user_ids: ['ub', 'ua'] }] }, 'ua'), '👍');
  assert.equal(quoteOf({ seq: 4, sender_id: 'ua', text: 'x'.repeat(150) }).text.length, 101);

  const day1 = '2026-01-01T10:00:00Z';
  const day2 = '2026-01-02T10:00:00Z';
  const items = withSeparators([{ seq: 1, sent_at: day1 }, { seq: 2, sent_at: day1 }, { seq: 3, sent_at: day2 }], 2);
  assert.deepEqual(items.map((i) => i.sep || i.seq), ['day', 1, 'unread', 2, 'day', 3]);
});
