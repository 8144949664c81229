// Browser helpers shared by the browser tests and the screenshot script:
// the DOM contract's selectors and the steps a person takes in the client.

import { chromium } from 'playwright-core';

import { chromiumPath } from './stack.mjs';

/** `[data-testid="<id>"]` plus any extra selector text. */
export const sel = (id, extra = '') => `[data-testid="${id}"]${extra}`;

/** Debian's Chromium, headless, with the flags this machine needs. */
export function launchBrowser() {
  return chromium.launch({
    executablePath: chromiumPath(),
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
}

/** Fills the sign-up form and waits until the client is signed in and online. */
export async function signUp(page, username, display) {
  const form = page.locator(sel('auth-form'));
  await form.locator('[name="username"]').fill(username);
  await form.locator('[name="password"]').fill('correct horse battery');
  await form.locator('[name="display_name"]').fill(display);
  await page.click(sel('register'));
  await page.locator(sel('me')).filter({ hasText: username }).waitFor();
  await page.locator(sel('conn-state', '[data-state="online"]')).waitFor();
}

/** Types `text` in the composer and presses Enter. */
export async function send(page, text) {
  await page.locator(sel('composer')).fill(text);
  await page.locator(sel('composer')).press('Enter');
}

/** Opens the chat whose list entry shows `title`. */
export async function openChat(page, title) {
  await page.locator(sel('chat-item')).filter({ hasText: title }).first().click();
  await page.locator(sel('conv-title')).filter({ hasText: title }).waitFor();
}
