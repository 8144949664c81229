// This device's preferences: muted chats and desktop notifications.

/** Muted chat keys, per signed-in user, in localStorage. */
export class Mutes {
  constructor(userId) {
    this.key = `msgr.muted.${userId}`;
    try {
      this.set = new Set(JSON.parse(localStorage.getItem(this.key) || '[]'));
    } catch {
      this.set = new Set();
    }
  }
  has(chatKey) {
    return this.set.has(chatKey);
  }
  toggle(chatKey) {
    if (!this.set.delete(chatKey)) this.set.add(chatKey);
    try {
      localStorage.setItem(this.key, JSON.stringify([...this.set]));
    } catch {
      // storage disabled: muted for this page's life only
    }
    return this.set.has(chatKey);
  }
}

/** "granted", "denied", "default" or "unsupported". */
export function notificationState() {
  return typeof Notification === 'undefined' ? 'unsupported' : Notification.permission;
}

/** Asks for permission; browsers allow it only from a click. */
export async function askNotifications() {
  if (notificationState() !== 'default') return notificationState();
  try {
    return await Notification.requestPermission();
  } catch {
    return notificationState();
  }
}

/** Shows a desktop notification when permitted and the tab is hidden. */
export function notify(title, body, tag, onClick) {
  if (notificationState() !== 'granted' || document.visibilityState === 'visible') return null;
  try {
    const n = new Notification(title, { body, tag });
    n.onclick = () => {
      window.focus();
      onClick?.();
      n.close();
    };
    return n;
  } catch {
    return null; // some browsers allow notifications only from a service worker
  }
}
