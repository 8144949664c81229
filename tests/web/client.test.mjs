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

/** Opens the actions menu of the message showing `text` and clicks `testid` in it. */
/** Makes `page` look hidden (in the background) with notifications granted, and records
 * the notifications it shows in `window.__notes` (the real constructor stays in
 * `window.__RealNotification`). */
async function hideWithNotifications(page) {
  await page.evaluate(() => {
    window.__notes = [];
    const Real = window.Notification;
    window.__RealNotification = Real;
    window.Notification = class extends Real {
      constructor(title, opts) {
        super(title, opts);
        window.__notes.push({ title, body: opts?.body });
      }
    };
    Object.defineProperty(window.Notification, 'permission', { get: () => 'granted' });
    Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => 'hidden' });
  });
}

async function act(page, text, testid, emoji) {
  const msg = message(page, text);
  await msg.hover();
  await msg.locator(sel('message-actions')).click();
  const menu = msg.locator(sel('actions-menu'));
  await menu.waitFor();
  await menu.locator(emoji ? sel(testid, `[data-emoji="${emoji}"]`) : sel(testid)).click();
}

/** The reaction chip `emoji` under the message showing `text` reads `count`. */
async function reaction(page, text, emoji, count) {
  await message(page, text).locator(sel('reaction', `[data-emoji="${emoji}"]`)).filter({ hasText: String(count) }).waitFor();
}

/** The message whose quote (of a deleted message, or of `quoted`) is shown. */
function replyTo(page, text) {
  return message(page, text).locator(sel('message-quote'));
}

it('replies, reactions, edits and deletes reach everyone in a group live, with typing', async () => {
  const alice = pages.get('alice');
  const bob = pages.get('bob');
  const carol = pages.get('carol');
  for (const p of [alice, bob, carol]) p.on('dialog', (d) => d.accept());

  await alice.click(sel('new-group'));
  await alice.locator(sel('group-name')).fill('Club');
  await alice.locator(sel('group-members')).fill(`${users.bob.username}, ${users.carol.username}`);
  await alice.click(sel('group-create'));
  await alice.locator(sel('conv-title')).filter({ hasText: 'Club' }).waitFor();
  await send(alice, 'plan for friday');
  for (const page of [bob, carol]) {
    await openChat(page, 'Club');
    await message(page, 'plan for friday').waitFor();
  }

  // Bob replies from the message's menu: the quote travels with the reply.
  await act(bob, 'plan for friday', 'action-reply');
  await bob.locator(sel('compose-context')).filter({ hasText: 'plan for friday' }).waitFor();
  await send(bob, 'count me in');
  await replyTo(carol, 'count me in').filter({ hasText: 'plan for friday' }).waitFor();
  await replyTo(alice, 'count me in').filter({ hasText: 'You' }).waitFor(); // her own message, quoted
  assert.equal(await bob.locator(sel('compose-context')).isHidden(), true, 'the reply bar closes after sending');

  // Reactions: one each, changeable; everyone sees the counts.
  await act(carol, 'plan for friday', 'react-option', '👍');
  await act(bob, 'plan for friday', 'react-option', '👍');
  await reaction(alice, 'plan for friday', '👍', 2);
  // Who reacted: named on the chip (and "You" for one's own).
  const chip = (page) => message(page, 'plan for friday').locator(sel('reaction', '[data-emoji="👍"]'));
  const named = async (page, ...names) => {
    for (let i = 0; i < 50; i++) {
      const title = (await chip(page).getAttribute('title')) || '';
      if (names.every((n) => title.includes(n))) return;
      await page.waitForTimeout(100);
    }
    assert.fail(`the 👍 chip does not name ${names}: ${await chip(page).getAttribute('title')}`);
  };
  await named(alice, users.bob.display, users.carol.display);
  await named(bob, 'You', users.carol.display);
  await act(bob, 'plan for friday', 'react-option', '❤️');
  await reaction(alice, 'plan for friday', '❤️', 1);
  await reaction(carol, 'plan for friday', '👍', 1);

  // Alice edits her message; the others see the new text, marked edited.
  await act(alice, 'plan for friday', 'action-edit');
  await alice.locator(sel('compose-context')).filter({ hasText: 'Editing' }).waitFor();
  await send(alice, 'plan for saturday');
  for (const page of [bob, carol]) {
    await message(page, 'plan for saturday').locator(sel('message-edited')).waitFor();
  }
  assert.equal(await message(carol, 'plan for friday').count(), 0);

  // Typing in a group shows who types.
  await carol.locator(sel('composer')).pressSequentially('hmm');
  await alice.locator(sel('typing')).filter({ hasText: users.carol.display }).waitFor({ state: 'visible' });
  await carol.locator(sel('composer')).fill('');

  // Delete for everyone: gone for all, and so is the quote of it.
  await act(alice, 'plan for saturday', 'action-delete');
  for (const page of [alice, bob, carol]) {
    await page.locator(`${sel('message-deleted')}:visible`).first().waitFor();
    await replyTo(page, 'count me in').filter({ hasText: 'This message was deleted' }).waitFor();
    assert.equal(await message(page, 'plan for saturday').count(), 0);
  }
  // Someone else's message has no Edit or Delete in its menu.
  const msg = message(alice, 'count me in');
  await msg.hover();
  await msg.locator(sel('message-actions')).click();
  await msg.locator(sel('actions-menu')).waitFor();
  assert.equal(await msg.locator(sel('action-edit')).count(), 0);
  assert.equal(await msg.locator(sel('action-delete')).count(), 0);
  await alice.keyboard.press('Escape');
});

it('presence, blocking and unblocking in a direct chat', async () => {
  const alice = pages.get('alice');
  const bob = pages.get('bob');
  await openChat(alice, users.bob.display);
  await openChat(bob, users.alice.display);
  await bob.locator(sel('conv-sub')).filter({ hasText: 'online' }).waitFor();

  await alice.click(sel('block-button'));
  await alice.locator(sel('block-button')).filter({ hasText: 'Unblock' }).waitFor();
  // Blocked: Alice's presence is gone for him, and Bob's message is refused.
  await bob.waitForFunction((s) => !document.querySelector(s).textContent.includes('online'), sel('conv-sub'));
  await send(bob, 'are you there?');
  await message(bob, 'are you there?').locator('.msg-error').filter({ hasText: 'cannot receive' }).waitFor();
  await bob.waitForTimeout(500);
  assert.equal(await message(alice, 'are you there?').count(), 0, 'nothing reached the blocker');

  await alice.click(sel('block-button'));
  await alice.locator(sel('block-button')).filter({ hasText: 'Block' }).waitFor();
  await message(bob, 'are you there?').locator('.retry').click();
  await message(alice, 'are you there?').waitFor();
  await ticks(bob, 'are you there?', 'read');

  // Bob watches again (reopening the chat) and sees Alice online; then
  // Alice hides her presence in Privacy, and his header goes blank.
  await openChat(bob, 'Club');
  await openChat(bob, users.alice.display);
  await bob.locator(sel('conv-sub')).filter({ hasText: 'online' }).waitFor();
  await alice.click(sel('privacy-button'));
  const box = alice.locator(sel('presence-visible'));
  await alice.waitForFunction((s) => !document.querySelector(s).disabled, sel('presence-visible'));
  assert.equal(await box.isChecked(), true, 'shown by default');
  await box.uncheck();
  await bob.waitForFunction((s) => !document.querySelector(s).textContent.includes('online'), sel('conv-sub'));
  await alice.waitForFunction((s) => !document.querySelector(s).disabled, sel('presence-visible'));
  await box.check();
  await alice.waitForFunction((s) => !document.querySelector(s).disabled, sel('presence-visible'));
  assert.equal(await box.isChecked(), true);
  await alice.keyboard.press('Escape');
});

it('muted chats, day separators, the unread divider and desktop notifications', async () => {
  const alice = pages.get('alice');
  const bob = pages.get('bob');
  await openChat(bob, users.alice.display);
  await bob.locator(sel('day-separator')).filter({ hasText: 'Today' }).first().waitFor();

  // Bob looks at another chat; Alice writes twice; the divider marks where unread starts.
  await openChat(bob, 'Club');
  await openChat(alice, users.bob.display);
  await send(alice, 'first unread');
  await send(alice, 'second unread');
  const item = bob.locator(sel('chat-item')).filter({ hasText: users.alice.display });
  await item.locator(sel('unread')).filter({ hasText: '2' }).waitFor();
  await openChat(bob, users.alice.display);
  await message(bob, 'second unread').waitFor();
  const order = await bob.locator(`${sel('messages')} > li`).evaluateAll((els) => els.map((e) => e.dataset.testid === 'unread-divider' ? 'divider' : e.querySelector('[data-testid="message-text"]')?.textContent));
  const at = order.indexOf('divider');
  assert.ok(at >= 0, 'an unread divider is shown');
  assert.equal(order[at + 1], 'first unread', 'right before the first unread message');

  // Mute: marked in the list, and no notification for it while Bob's tab is
  // in the background (the group, not muted, still notifies him).
  await bob.click(sel('mute-button'));
  await item.locator(sel('muted')).waitFor();
  await bob.context().grantPermissions(['notifications']);
  await hideWithNotifications(bob);
  await send(alice, 'muted, so quiet');
  await openChat(alice, 'Club');
  await send(alice, 'the group still rings');
  await bob.waitForFunction(() => window.__notes.some((n) => n.body === 'the group still rings'));
  const bobNotes = await bob.evaluate(() => window.__notes.map((n) => n.body));
  assert.ok(!bobNotes.includes('muted, so quiet'), `a muted chat notified: ${bobNotes}`);
  await bob.evaluate(() => {
    delete document.visibilityState; // back to the real (visible) page
    window.Notification = window.__RealNotification;
    document.dispatchEvent(new Event('visibilitychange'));
  });

  // Notifications on a page in the background, asked for on a click.
  const carolPage = pages.get('carol');
  await carolPage.context().grantPermissions(['notifications']);
  await hideWithNotifications(carolPage);
  await send(alice, 'while you were away');
  await carolPage.waitForFunction(() => window.__notes.some((n) => n.body === 'while you were away'));
  await bob.click(sel('mute-button'));
  await item.locator(sel('muted')).waitFor({ state: 'detached' });
});

it('a browser that was offline during an edit, a delete and a reaction shows the right state when back', async () => {
  const alice = pages.get('alice');
  const bob = pages.get('bob');
  await openChat(alice, users.bob.display);
  await openChat(bob, users.alice.display);
  await send(alice, 'fix me');
  await send(alice, 'drop me');
  await message(bob, 'drop me').waitFor();
  // Fresh statuses (a reload), so that nothing but the change catch-up can
  // bring the old messages' new state back after the reconnect.
  await bob.reload();
  await bob.locator(sel('conn-state', '[data-state="online"]')).waitFor();
  await openChat(bob, users.alice.display);
  await message(bob, 'drop me').waitFor();

  await stack.killEdge(1);
  await bob.locator(sel('conn-state', ':not([data-state="online"])')).waitFor();
  await act(alice, 'fix me', 'action-edit');
  await send(alice, 'fixed');
  await message(alice, 'fixed').locator(sel('message-edited')).waitFor();
  await act(alice, 'fixed', 'react-option', '😂');
  await reaction(alice, 'fixed', '😂', 1);
  await act(alice, 'drop me', 'action-delete');
  await alice.waitForFunction((s) => [...document.querySelectorAll(s)].every((e) => e.textContent !== 'drop me'), sel('message-text'));

  await stack.startEdge(1);
  await bob.locator(sel('conn-state', '[data-state="online"]')).waitFor({ timeout: 40_000 });
  const check = async () => {
    await message(bob, 'fixed').locator(sel('message-edited')).waitFor();
    await reaction(bob, 'fixed', '😂', 1);
    await bob.waitForFunction((s) => [...document.querySelectorAll(s)].every((e) => e.textContent !== 'drop me'), sel('message-text'));
    assert.equal(await message(bob, 'fix me').count(), 0);
  };
  await check();
  // A reload shows the same state.
  await bob.reload();
  await bob.locator(sel('conn-state', '[data-state="online"]')).waitFor();
  await openChat(bob, users.alice.display);
  await message(bob, 'fixed').waitFor();
  await check();
});
