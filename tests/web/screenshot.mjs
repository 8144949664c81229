// Makes the README's screenshots of the web client (docs/web-client*.png)
// from a real stack: `just web-screenshot`.

import path from 'node:path';
import { Stack, root } from './stack.mjs';
import { launchBrowser, openChat as open, sel, send, signUp } from './ui.mjs';

const stack = await Stack.start();
const browser = await launchBrowser();
try {
  const people = {};
  for (const [who, display] of [['maria', 'Maria Lopez'], ['tom', 'Tom Becker'], ['ana', 'Ana Silva']]) {
    const context = await browser.newContext({ viewport: { width: 1100, height: 700 } });
    const page = await context.newPage();
    page.setDefaultTimeout(15_000);
    await page.goto(stack.edges[0]);
    await signUp(page, who, display);
    people[who] = { page, display };
  }
  const { maria, tom, ana } = people;
  const say = async (p, text) => {
    await send(p.page, text);
    await p.page.locator(sel('message-text'), { hasText: text }).last().waitFor();
  };
  const openChat = (p, title) => open(p.page, title);

  // A group chat, then a direct chat on top so both kinds show in the list.
  await maria.page.click(sel('new-group'));
  await maria.page.locator(sel('group-name')).fill('Weekend hike');
  await maria.page.locator(sel('group-members')).fill('tom, ana');
  await maria.page.click(sel('group-create'));
  await maria.page.locator(sel('conv-title')).filter({ hasText: 'Weekend hike' }).waitFor();
  await say(maria, 'Saturday 8:00 at the trailhead?');
  await openChat(ana, 'Weekend hike');
  await say(ana, 'Works for me, I will bring coffee');

  await tom.page.locator(sel('new-chat-input')).fill('mar');
  await tom.page.click(sel('user-result', '[data-username="maria"]'));
  await say(tom, 'Hey Maria! Did you get the tickets?');
  await openChat(maria, 'Tom Becker');
  await say(maria, 'Yes, two seats in row 5');
  await say(tom, 'Perfect, thanks!');
  await say(maria, 'See you at 7!');
  await tom.page.locator(sel('ticks', '[data-status="read"]')).last().waitFor();
  await maria.page.locator(sel('ticks', '[data-status="read"]')).last().waitFor();
  await maria.page.waitForTimeout(500);
  await maria.page.screenshot({ path: path.join(root, 'docs/web-client.png') });

  await tom.page.setViewportSize({ width: 390, height: 700 });
  await tom.page.waitForTimeout(300);
  await tom.page.screenshot({ path: path.join(root, 'docs/web-client-phone.png') });
  console.log('wrote docs/web-client.png and docs/web-client-phone.png');
} finally {
  await browser.close();
  await stack.stop();
}
