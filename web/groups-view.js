// Groups: the create dialog, the members dialog (add, remove, leave) and
// who received / read one of my messages.

import { parseUsernames } from './api.js';
import { $, el, reconcile } from './dom.js';
import { TICK_LABEL, TICK_TEXT } from './message-view.js';
import { applyGroup, removeChat } from './frames.js';
import { fetchHistory } from './history.js';
import {
  api, chatTitle, directory, findUsername, getChat, me, openChat, openChatObj, render, ui, userName, users,
  wantUser,
} from './app.js';

export async function createGroup(e) {
  e.preventDefault();
  const form = e.target;
  const errBox = $('.error', form);
  const name = form.elements.name.value.trim();
  errBox.textContent = '';
  if (!name) {
    errBox.textContent = 'Give the group a name.';
    return;
  }
  const submit = $('[data-testid="group-create"]', form);
  submit.disabled = true;
  try {
    const names = parseUsernames(form.elements.members.value).filter((n) => n !== me.username.toLowerCase());
    const found = await Promise.all(names.map(findUsername));
    const g = await api.createGroup(name, found.map((u) => u.user_id));
    const chat = getChat('group', g.group_id);
    applyGroup(chat, g);
    chat.updated_at ||= new Date().toISOString();
    form.reset();
    ui.groupDialog.close();
    openChat(chat.key);
  } catch (err) {
    errBox.textContent = err.message;
  } finally {
    submit.disabled = false;
  }
}

const memberNodes = new Map(); // user_id -> <li>, for the group in memberGroupKey
let memberGroupKey = null;

export function renderMembers() {
  const chat = openChatObj();
  const list = $('.member-list', ui.membersDialog);
  // Nodes are keyed by user_id only: another group's list starts afresh.
  if (!chat?.group || memberGroupKey !== chat.key) {
    list.replaceChildren();
    memberNodes.clear();
    memberGroupKey = chat?.group ? chat.key : null;
    if (!chat?.group) return;
  }
  const members = chat.group.members || [];
  const iAmAdmin = members.some((m) => m.user_id === me.user_id && m.role === 'admin');
  $('.add-member', ui.membersDialog).hidden = !iAmAdmin;
  const sorted = [...members].sort((a, b) => (a.role === b.role ? userName(a.user_id).localeCompare(userName(b.user_id)) : a.role === 'admin' ? -1 : 1));
  reconcile(list, memberNodes, sorted, (m) => m.user_id, (m) => {
    const li = el('li', { class: 'member', 'data-testid': 'member', 'data-user-id': m.user_id },
      el('span', { class: 'member-name' }), el('span', { class: 'role muted' }));
    if (m.user_id !== me.user_id) {
      // The group is looked up at click time, not captured at first render.
      li.append(el('button', {
        type: 'button', class: 'text-btn danger', 'data-testid': 'remove-member',
        onclick: () => {
          const g = openChatObj();
          if (g?.kind === 'group' && g.key === memberGroupKey) removeMember(g, li.dataset.userId);
        },
      }, 'Remove'));
    }
    return li;
  }, (li, m) => {
    const u = users.get(m.user_id);
    $('.member-name', li).textContent = `${userName(m.user_id)}${m.user_id === me.user_id ? ' (you)' : ''}${u?.username ? ` @${u.username}` : ''}`;
    $('.role', li).textContent = m.role === 'admin' ? 'admin' : '';
    const rm = $('[data-testid="remove-member"]', li);
    if (rm) {
      rm.hidden = !iAmAdmin;
      rm.setAttribute('aria-label', `Remove ${userName(m.user_id)}`);
    }
  });
}

export function openMembers() {
  const chat = openChatObj();
  if (!chat || chat.kind !== 'group') return;
  $('.error', ui.membersDialog).textContent = '';
  renderMembers();
  ui.membersDialog.showModal();
  // Refresh from the server: membership may have changed.
  fetchHistory(chat, { limit: 1 }).catch(() => {});
}

async function memberAction(fn) {
  const errBox = $('.error', ui.membersDialog);
  errBox.textContent = '';
  try {
    await fn();
  } catch (e) {
    errBox.textContent = e.message;
  }
}

export function removeMember(chat, userId) {
  return memberAction(async () => {
    const g = await api.removeMember(chat.group_id, userId);
    if (userId === me.user_id) {
      ui.membersDialog.close();
      removeChat(chat, `You left “${chatTitle(chat)}”.`); // focus goes to the search box
      return;
    }
    if (g?.members) applyGroup(chat, g);
    else if (chat.group) chat.group.members = chat.group.members.filter((m) => m.user_id !== userId);
    render({ members: true, conv: true });
  });
}

export function addMember(e) {
  e.preventDefault();
  const chat = openChatObj();
  const input = $('[data-testid="add-member-input"]', ui.membersDialog);
  const name = input.value.trim().replace(/^@/, '');
  if (!chat || !name) return;
  memberAction(async () => {
    const u = await findUsername(name);
    const g = await api.addMember(chat.group_id, u.user_id);
    if (g?.members) applyGroup(chat, g);
    else fetchHistory(chat, { limit: 1 }).catch(() => {});
    input.value = '';
    render({ members: true });
  });
}

export async function openReceiptInfo(chat, seqText) {
  const seq = Number(seqText);
  if (!seq) return; // still pending
  const list = $('.receipt-list', ui.receiptDialog);
  const errBox = $('.error', ui.receiptDialog);
  list.replaceChildren(el('li', { class: 'muted' }, 'Loading…'));
  errBox.textContent = '';
  if (!ui.receiptDialog.open) ui.receiptDialog.showModal();
  try {
    const r = await api.receipts(chat.group_id, seq);
    const members = r.members.filter((m) => m.user_id !== me.user_id);
    members.forEach((m) => wantUser(m.user_id));
    if (directory.wanted.size) await directory.resolve();
    list.replaceChildren(...members.map((m) => {
      const state = m.read ? 'read' : m.delivered ? 'delivered' : 'sent';
      return el('li', { class: 'receipt-member', 'data-testid': 'receipt-member', 'data-user-id': m.user_id, 'data-state': state },
        el('span', { text: userName(m.user_id) }),
        el('span', { class: `ticks ${state}`, 'data-status': state }, `${TICK_TEXT[state] || '–'} ${TICK_LABEL[state]}`));
    }));
    if (!members.length) list.replaceChildren(el('li', { class: 'muted' }, 'No other members.'));
  } catch (e) {
    list.replaceChildren();
    errBox.textContent = e.message;
  }
}
