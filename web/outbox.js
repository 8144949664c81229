// The outbox: sends not acknowledged yet, kept in memory and in localStorage
// until the server acks them (or refuses them), so a reload or a crash loses
// nothing; resent with the same client_msg_id (the server deduplicates).

/**
 * Unacknowledged sends, resent with the same client_msg_id after a reconnect
 * (the server dedupes). Kept in localStorage too, so a reload loses nothing:
 * one key per message, so that two tabs never overwrite each other's entries
 * (a tab writes and removes only the keys of messages it sent itself, or of
 * messages it saw stored — acked — anywhere).
 */
export class Outbox extends Map {
  /**
   * @param {() => string|undefined} userId the signed-in user's id
   * @param {(frame) => {pending: object[], key: string}} chatOf the chat a saved send belongs to
   */
  constructor(userId, chatOf) {
    super();
    this.userId = userId;
    this.chatOf = chatOf;
  }

  set(k, v) {
    super.set(k, v);
    this.write(k, v);
    return this;
  }
  /** Forgets a send; also removes its stored copy when this tab does not hold it (acked elsewhere). */
  delete(k) {
    const had = super.delete(k);
    this.erase(k);
    return had;
  }
  prefix() {
    return `msgr.outbox.${this.userId()}.`;
  }
  legacyKey() {
    return `msgr.outbox.${this.userId()}`; // older clients: one array for the whole outbox
  }
  write(k, v) {
    if (!this.userId() || !k) return;
    try {
      localStorage.setItem(this.prefix() + k, JSON.stringify({ frame: v.frame, media: v.media, created_at: v.created_at }));
    } catch {
      // storage full or disabled: the in-memory outbox still works
    }
  }
  erase(k) {
    if (!this.userId() || !k) return;
    try {
      localStorage.removeItem(this.prefix() + k);
    } catch {
      // storage disabled
    }
  }
  /** Every stored entry (this tab's and other tabs'), oldest first. */
  stored() {
    const out = [];
    try {
      const prefix = this.prefix();
      for (let i = 0; i < localStorage.length; i++) {
        const key = localStorage.key(i);
        if (!key?.startsWith(prefix)) continue;
        try {
          const e = JSON.parse(localStorage.getItem(key));
          if (e?.frame?.client_msg_id) out.push(e);
        } catch {
          // unreadable entry: skip it
        }
      }
      // Migrate the single-array format, without losing entries.
      const legacy = localStorage.getItem(this.legacyKey());
      if (legacy) {
        for (const e of JSON.parse(legacy) || []) {
          if (!e?.frame?.client_msg_id || out.some((x) => x.frame.client_msg_id === e.frame.client_msg_id)) continue;
          out.push(e);
          localStorage.setItem(prefix + e.frame.client_msg_id, JSON.stringify({ frame: e.frame, media: e.media, created_at: e.created_at }));
        }
        localStorage.removeItem(this.legacyKey());
      }
    } catch {
      // storage disabled or unreadable: nothing to restore
    }
    return out.sort((a, b) => String(a.created_at || '').localeCompare(String(b.created_at || '')));
  }
  /** Drops every stored entry of this user (a deliberate logout). */
  clearStorage() {
    if (!this.userId()) return;
    try {
      const prefix = this.prefix();
      const keys = [];
      for (let i = 0; i < localStorage.length; i++) {
        const key = localStorage.key(i);
        if (key?.startsWith(prefix)) keys.push(key);
      }
      for (const key of keys) localStorage.removeItem(key);
      localStorage.removeItem(this.legacyKey());
    } catch {
      // storage disabled
    }
  }
  /** Puts saved sends back on screen as pending messages. */
  restore() {
    for (const e of this.stored()) {
      const { frame } = e;
      if (super.has(frame.client_msg_id)) continue;
      const chat = this.chatOf(frame);
      chat.pending.push({
        client_msg_id: frame.client_msg_id, sender_id: this.userId(), status: 'pending',
        created_at: e.created_at, text: frame.text, media: e.media,
      });
      super.set(frame.client_msg_id, { ...e, key: chat.key });
    }
  }
}
