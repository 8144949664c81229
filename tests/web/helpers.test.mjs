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
