// Names of peers, senders and members: looked up by id in batches of at
// most 200 (one request for a burst of unknown ids), retried with a backoff
// when the lookup fails, never shown as "Unknown user" for a network blip.

const USER_RETRIES = 5;

export class Directory {
  /**
   * @param api the REST client
   * @param {() => {user_id, username}|null} me the signed-in user
   * @param {() => void} onResolved called when names arrived (re-render)
   */
  constructor(api, me, onResolved) {
    this.api = api;
    this.me = me;
    this.onResolved = onResolved;
    this.users = new Map(); // user_id -> {user_id, username, display_name}
    this.wanted = new Set();
    this.timer = null;
    /** Lookups that failed (network, 5xx): id -> failed attempts. Retried with a delay. */
    this.failures = new Map();
    this.retrying = new Set(); // ids waiting for the retry timer
    this.retryTimer = null;
  }

  want(id) {
    if (!id || this.users.has(id) || this.wanted.has(id) || this.retrying.has(id)) return;
    if ((this.failures.get(id) || 0) >= USER_RETRIES) return; // given up until the next (re)connect
    this.wanted.add(id);
    this.timer ??= setTimeout(() => this.resolve(), 30);
  }

  async resolve() {
    clearTimeout(this.timer);
    this.timer = null;
    const ids = [...this.wanted].filter((id) => !this.users.has(id));
    this.wanted.clear();
    let failed = 0;
    for (let i = 0; i < ids.length; i += 200) {
      const batch = ids.slice(i, i + 200);
      let found;
      try {
        found = await this.api.usersByIds(batch);
      } catch {
        // Lookup unavailable: no placeholders (that would be "Unknown user"
        // forever); try these ids again later.
        for (const id of batch) {
          const n = (this.failures.get(id) || 0) + 1;
          this.failures.set(id, n);
          if (n < USER_RETRIES) this.retrying.add(id);
        }
        failed = Math.max(failed, ...batch.map((id) => this.failures.get(id)));
        continue;
      }
      for (const u of found) {
        this.users.set(u.user_id, u);
        this.failures.delete(u.user_id);
      }
      // The server answered without these: no such user (deleted, say).
      for (const id of batch) {
        if (!this.users.has(id)) this.users.set(id, { user_id: id, username: '', display_name: '' });
        this.failures.delete(id);
      }
    }
    if (this.retrying.size && !this.retryTimer) {
      // 2 s, 4 s, 8 s, 16 s between attempts.
      const delay = Math.min(16000, 1000 * 2 ** Math.max(1, failed));
      this.retryTimer = setTimeout(() => {
        this.retryTimer = null;
        for (const id of this.retrying) if (!this.users.has(id)) this.wanted.add(id);
        this.retrying.clear();
        if (this.wanted.size) this.resolve();
      }, delay);
    }
    this.onResolved();
  }

  /** After a (re)connect: lookups that were given up on get another chance. */
  retryFailed() {
    for (const [id, n] of [...this.failures]) {
      if (n >= USER_RETRIES) {
        this.failures.delete(id);
        this.want(id);
      }
    }
  }

  /** A display name (asking for it when unknown). */
  name(id) {
    const u = this.users.get(id);
    if (!u) this.want(id);
    const name = u && (u.display_name || u.username);
    if (name) return name;
    const me = this.me();
    return id === me?.user_id ? me.username : 'Unknown user';
  }

  /** Exact username → user, via the prefix search. */
  async find(name) {
    const found = await this.api.searchUsers(name, 20);
    const u = found.find((x) => x.username.toLowerCase() === name.toLowerCase());
    if (!u) throw new Error(`No user named “${name}”.`);
    this.users.set(u.user_id, u);
    return u;
  }
}
