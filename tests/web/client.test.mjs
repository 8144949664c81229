// The web client in a real browser (Debian's Chromium via playwright-core)
// against a real stack: sign up, direct chat with live ticks, history paging
// and reload, a group of three, media, and reconnect after an edge restart.
// Tests run in order and share their users; a failure saves a screenshot of
// every open page to tests/web/artifacts/.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { Stack, artifacts, chromiumPath } from './stack.mjs';
import { launchBrowser, openChat, sel, send, signUp as signUpAs } from './ui.mjs';

const WAIT = 15_000;
let stack;
let browser;
const pages = new Map(); // user name -> page
const users = {}; // alice, bob, carol -> { username, display }

before(async () => {
  // Check the browser first: it is the one thing a fresh machine may lack.
  chromiumPath();
  stack = await Stack.start();
  browser = await launchBrowser();
  for (const who of ['alice', 'bob', 'carol']) {
    const username = `${who}_${randomBytes(4).toString('hex')}`;
    users[who] = { username, display: `${who[0].toUpperCase()}${who.slice(1)} Test` };
  }
});

after(async () => {
  await browser?.close();
  await stack?.stop();
});

/** A test whose failure leaves screenshots of every open page behind. */
function it(name, fn) {
  test(name, async () => {
    try {
      await fn();
    } catch (e) {
      mkdirSync(artifacts, { recursive: true });
      const slug = name.replace(/[^a-z0-9]+/gi, '-').slice(0, 60);
      for (const [who, page] of pages) {
        await page.screenshot({ path: path.join(artifacts, `${slug}-${who}.png`), fullPage: true }).catch(() => {});
      }
      throw e;
    }
  });
}

/** Opens `who`'s browser (own context: own storage) on edge `edge`. */
async function open(who, edge) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 800 } });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  page.on('pageerror', (e) => console.error(`[${who}] page error: ${e.message}`));
  await page.goto(stack.edges[edge]);
  pages.set(who, page);
  return page;
}

async function signUp(page, who) {
  await signUpAs(page, users[who].username, users[who].display);
}

/** The message bubble holding exactly `text`. */
function message(page, text) {
  return page.locator(sel('message')).filter({ has: page.locator(sel('message-text'), { hasText: text }) });
}

async function ticks(page, text, status) {
  await message(page, text).locator(sel('ticks', `[data-status="${status}"]`)).waitFor();
}

/** seqs of the messages shown, in DOM order. */
async function shownSeqs(page) {
  return page.locator(sel('message')).evaluateAll((els) => els.map((e) => Number(e.dataset.seq)));
}

it('two people sign up on different edges, chat live, and see the ticks turn', async () => {
  const alice = await open('alice', 0);
  const bob = await open('bob', 1);
  await signUp(alice, 'alice');
  await signUp(bob, 'bob');

  // Alice finds Bob by username and writes first.
  await alice.locator(sel('new-chat-input')).fill(users.bob.username.slice(0, 8));
  await alice.click(sel('user-result', `[data-username="${users.bob.username}"]`));
  await alice.locator(sel('conv-title')).filter({ hasText: users.bob.display }).waitFor();
  await send(alice, 'hello bob');
  await message(alice, 'hello bob').waitFor();
  // Bob's client is connected: it acknowledges delivery on its own.
  await ticks(alice, 'hello bob', 'delivered');

  // Bob sees the new chat with an unread badge, opens it, and Alice's ticks turn read.
  const item = bob.locator(sel('chat-item')).filter({ hasText: users.alice.display });
  await item.locator(sel('unread')).filter({ hasText: '1' }).waitFor();
  await item.locator(sel('chat-preview')).filter({ hasText: 'hello bob' }).waitFor();
  await openChat(bob, users.alice.display);
  await message(bob, 'hello bob').waitFor();
  await ticks(alice, 'hello bob', 'read');
  assert.equal(await item.locator(sel('unread')).count(), 0, 'opening the chat clears the badge');

  // Typing shows up on the other side, then the reply arrives live.
  await bob.locator(sel('composer')).pressSequentially('hi al');
  await alice.locator(sel('typing')).waitFor({ state: 'visible' });
  await bob.locator(sel('composer')).pressSequentially('ice');
  await bob.locator(sel('composer')).press('Enter');
  await message(alice, 'hi alice').waitFor();
  assert.equal(await message(alice, 'hi alice').getAttribute('data-mine'), 'false');
  await ticks(bob, 'hi alice', 'read');
  assert.deepEqual(await shownSeqs(alice), [1, 2]);
});

it('history survives a reload and older pages load when scrolling up', async () => {
  const alice = pages.get('alice');
  const bob = pages.get('bob');
  // 60 more messages: more than one page (50) of history.
  for (let i = 1; i <= 60; i++) await send(alice, `bulk ${i}`);
  await ticks(alice, 'bulk 60', 'read');

  await bob.reload();
  await bob.locator(sel('conn-state', '[data-state="online"]')).waitFor();
  await openChat(bob, users.alice.display);
  await message(bob, 'bulk 60').waitFor();
  // Scroll to the top until the first message is there.
  const box = bob.locator(sel('messages'));
  for (let i = 0; i < 20 && (await message(bob, 'hello bob').count()) === 0; i++) {
    await box.evaluate((e) => { e.scrollTop = 0; e.dispatchEvent(new Event('scroll')); });
    await bob.waitForTimeout(300);
  }
  await message(bob, 'hello bob').waitFor();
  const seqs = await shownSeqs(bob);
  assert.deepEqual(seqs, Array.from({ length: 62 }, (_, i) => i + 1), 'every message once, in order');

  await alice.reload();
  await openChat(alice, users.bob.display);
  await message(alice, 'bulk 60').waitFor();
  await ticks(alice, 'bulk 60', 'read');
});

it('a group of three: create, talk, see members and who read a message', async () => {
  const alice = pages.get('alice');
  const bob = pages.get('bob');
  const carol = await open('carol', 1);
  await signUp(carol, 'carol');

  await alice.click(sel('new-group'));
  await alice.locator(sel('group-name')).fill('Trio');
  await alice.locator(sel('group-members')).fill(`${users.bob.username}, ${users.carol.username}`);
  await alice.click(sel('group-create'));
  await alice.locator(sel('conv-title')).filter({ hasText: 'Trio' }).waitFor();
  await send(alice, 'welcome to trio');
  await ticks(alice, 'welcome to trio', 'delivered');

  for (const page of [bob, carol]) {
    await openChat(page, 'Trio');
    await message(page, 'welcome to trio').locator(sel('message-sender')).filter({ hasText: users.alice.display }).waitFor();
  }
  await ticks(alice, 'welcome to trio', 'read');
  await send(carol, 'hello from carol');
  await message(alice, 'hello from carol').locator(sel('message-sender')).filter({ hasText: users.carol.display }).waitFor();
  await message(bob, 'hello from carol').waitFor();

  // Per-member read state of Alice's message.
  await message(alice, 'welcome to trio').click();
  const info = alice.locator(sel('receipt-info'));
  await info.waitFor();
  for (const who of ['bob', 'carol']) {
    await info.locator(sel('receipt-member', '[data-state="read"]')).filter({ hasText: users[who].display }).waitFor();
  }
  await alice.keyboard.press('Escape');

  // Members: three; the admin removes Carol, who then stops getting messages.
  await alice.click(sel('members-button'));
  const members = alice.locator(sel('members'));
  await members.waitFor();
  await alice.waitForFunction((s) => document.querySelectorAll(s).length === 3, `${sel('members')} ${sel('member')}`);
  await members.locator(sel('member')).filter({ hasText: users.carol.display }).locator(sel('remove-member')).click();
  await alice.waitForFunction((s) => document.querySelectorAll(s).length === 2, `${sel('members')} ${sel('member')}`);
  await alice.keyboard.press('Escape');
  await send(alice, 'just us now');
  await message(bob, 'just us now').waitFor();
  await bob.waitForTimeout(500);
  assert.equal(await message(carol, 'just us now').count(), 0, 'a removed member gets nothing new');
});

it('an image is shown inline from its thumbnail and a file can be downloaded', async () => {
  const alice = pages.get('alice');
  const bob = pages.get('bob');
  await openChat(alice, users.bob.display);
  await openChat(bob, users.alice.display);
  // A real PNG: a screenshot of Alice's own page.
  const png = await alice.screenshot({ clip: { x: 0, y: 0, width: 400, height: 300 } });
  const before = await alice.locator(sel('message')).count();
  await alice.locator(sel('attach')).setInputFiles({ name: 'screen.png', mimeType: 'image/png', buffer: png });
  await alice.waitForFunction(
    ([s, n]) => document.querySelectorAll(s).length > n, [sel('message'), before],
  );
  const img = bob.locator(`${sel('message')} img${sel('message-image')}`).last();
  await img.waitFor();
  await bob.waitForFunction((e) => e.complete && e.naturalWidth > 0, await img.elementHandle());
  const last = alice.locator(sel('message')).last();
  await last.locator(sel('ticks', '[data-status="read"]')).waitFor();

  // A plain file: Bob downloads the same bytes.
  const bytes = Buffer.from('minutes of the meeting\n'.repeat(100));
  await alice.locator(sel('attach')).setInputFiles({ name: 'notes.txt', mimeType: 'text/plain', buffer: bytes });
  const link = bob.locator(`a${sel('message-file')}`).last();
  await link.waitFor();
  const [download] = await Promise.all([bob.waitForEvent('download'), link.click()]);
  const file = path.join(artifacts, 'downloaded.txt');
  await download.saveAs(file);
  assert.deepEqual(readFileSync(file), bytes);
});

it('the client reconnects after its edge restarts and catches up on what it missed', async () => {
  const alice = pages.get('alice');
  const bob = pages.get('bob');
  await openChat(alice, users.bob.display);
  await openChat(bob, users.alice.display);

  await stack.killEdge(0);
  await alice.locator(sel('conn-state', ':not([data-state="online"])')).waitFor();
  // Alice writes while offline: it waits in her outbox.
  await send(alice, 'sent while offline');
  await ticks(alice, 'sent while offline', 'pending');
  // Bob (other edge) writes meanwhile.
  await send(bob, 'missed 1');
  await send(bob, 'missed 2');
  await ticks(bob, 'missed 2', 'sent');

  await stack.startEdge(0);
  await alice.locator(sel('conn-state', '[data-state="online"]')).waitFor({ timeout: 40_000 });
  await message(alice, 'missed 1').waitFor();
  await message(alice, 'missed 2').waitFor();
  await ticks(alice, 'sent while offline', 'read');
  await message(bob, 'sent while offline').waitFor();
  assert.equal(await message(bob, 'sent while offline').count(), 1, 'the outbox resend made one message');
  const seqs = await shownSeqs(alice);
  assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), 'in seq order');
  assert.equal(new Set(seqs).size, seqs.length, 'no duplicates');
});
