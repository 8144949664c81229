//! Rate limits for what a stranger can reach: token buckets per client
//! address or per user, and escalating locks on repeated login failures.
//!
//! State is per edge and in memory, every map bounded. With several edges a
//! client gets up to one allowance per edge it reaches (a balancer that keeps
//! a client on one edge keeps the limits exact).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};

/// Limits (`[limits]` in the edge's config). A rate of 0 turns that limit off.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LimitsConfig {
    /// Off: no limit applies (benchmarks, tests of other things).
    pub enabled: bool,
    /// Take the client's address from the last `X-Forwarded-For` entry (set
    /// this only behind a proxy that writes it, like the cluster's HAProxy).
    pub trust_forwarded_for: bool,
    /// Registrations per client address per hour.
    pub registrations_per_hour: u32,
    /// Login attempts per client address per minute.
    pub logins_per_minute: u32,
    /// Failed logins for one account from one address before it is locked
    /// there: 30 s, doubling with every further failure, at most
    /// `login_lock_max_secs`. Other addresses (the real owner) are not locked.
    pub login_failures_before_lock: u32,
    pub login_lock_max_secs: u64,
    /// User lookups (`GET /users`, `GET /users/{id}`) per user per minute.
    pub lookups_per_minute: u32,
    /// History, group page and chat list reads per user per minute.
    pub reads_per_minute: u32,
    /// Uploads per user per minute.
    pub uploads_per_minute: u32,
    /// WebSocket sends per user per second (all the user's connections here).
    pub sends_per_second: u32,
    /// Typing frames per connection per second.
    pub typing_per_second: u32,
    /// WebSockets one user may hold open on this edge at once (devices and
    /// tabs): one account cannot take the edge's `max_connections`.
    pub connections_per_user: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            trust_forwarded_for: false,
            registrations_per_hour: 30,
            logins_per_minute: 30,
            login_failures_before_lock: 5,
            login_lock_max_secs: 900,
            lookups_per_minute: 300,
            reads_per_minute: 1_200,
            uploads_per_minute: 60,
            sends_per_second: 200,
            typing_per_second: 2,
            connections_per_user: 20,
        }
    }
}

/// Keys a limiter tracks at most; past it, idle keys go first.
const MAX_KEYS: usize = 100_000;

/// Token buckets by key: `burst` tokens, refilled at `per_sec`.
pub struct Buckets<K> {
    per_sec: f64,
    burst: f64,
    map: Mutex<HashMap<K, (f64, Instant)>>,
}

impl<K: Hash + Eq> Buckets<K> {
    /// `amount` per `window`, all of it available at once.
    #[must_use]
    pub fn new(amount: u32, window: Duration) -> Self {
        Self {
            per_sec: f64::from(amount) / window.as_secs_f64(),
            burst: f64::from(amount),
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`; `Err(wait)` when there is none. The key
    /// is copied only the first time it is seen (sends and reads pass here).
    pub fn take<Q>(&self, key: &Q) -> Result<(), Duration>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if self.burst <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            // A bucket refilled to the brim is the same as none.
            let (per_sec, burst) = (self.per_sec, self.burst);
            map.retain(|_, (t, at)| *t + now.duration_since(*at).as_secs_f64() * per_sec < burst);
            if map.len() >= MAX_KEYS {
                // Still full of active keys: drop one (it starts afresh).
                if let Some(v) = map.keys().next().map(|k| k.borrow().to_owned()) {
                    map.remove(v.borrow());
                }
            }
        }
        if !map.contains_key(key) {
            map.insert(key.to_owned(), (self.burst, now));
        }
        let Some((tokens, at)) = map.get_mut(key) else {
            return Ok(());
        };
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.per_sec).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.per_sec))
        }
    }
}

/// Failed logins of one account from one address.
struct Failures {
    count: u32,
    locked_until: Option<Instant>,
    last: Instant,
}

/// Every limit of one edge.
pub struct Limits {
    pub config: LimitsConfig,
    registrations: Buckets<IpAddr>,
    logins: Buckets<IpAddr>,
    lookups: Buckets<String>,
    reads: Buckets<String>,
    uploads: Buckets<String>,
    sends: Buckets<String>,
    failures: Mutex<HashMap<(String, IpAddr), Failures>>,
    /// Open WebSockets per user (at most `max_connections` keys).
    open: Arc<Mutex<HashMap<String, u32>>>,
}

/// One counted WebSocket of a user; dropping it frees its place.
pub struct OpenConnection {
    open: Arc<Mutex<HashMap<String, u32>>>,
    user: String,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.user);
            }
        }
    }
}

/// What a limit says: wait this long.
#[derive(Debug, Clone, Copy)]
pub struct Limited(pub Duration);

/// How long failures are remembered without a new one.
const FORGET_FAILURES_AFTER: Duration = Duration::from_secs(3600);

impl Limits {
    #[must_use]
    pub fn new(config: LimitsConfig) -> Self {
        let c = &config;
        let minute = Duration::from_secs(60);
        Self {
            registrations: Buckets::new(c.registrations_per_hour, Duration::from_secs(3600)),
            logins: Buckets::new(c.logins_per_minute, minute),
            lookups: Buckets::new(c.lookups_per_minute, minute),
            reads: Buckets::new(c.reads_per_minute, minute),
            uploads: Buckets::new(c.uploads_per_minute, minute),
            sends: Buckets::new(c.sends_per_second, Duration::from_secs(1)),
            failures: Mutex::new(HashMap::new()),
            open: Arc::new(Mutex::new(HashMap::new())),
            config,
        }
    }

    /// The client's address: the peer, or (when trusted) the address the
    /// proxy in front recorded last in `X-Forwarded-For`.
    #[must_use]
    pub fn client_addr(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        if self.config.trust_forwarded_for {
            // Only the last entry, the one our proxy wrote: earlier ones are
            // whatever the client claimed.
            let last = headers
                .get_all("x-forwarded-for")
                .iter()
                .next_back()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .and_then(|a| a.trim().parse::<IpAddr>().ok());
            if let Some(a) = last {
                return a;
            }
        }
        peer.ip()
    }

    fn gate<K, Q>(&self, name: &'static str, b: &Buckets<K>, key: &Q) -> Result<(), Limited>
    where
        K: Hash + Eq + std::borrow::Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if !self.config.enabled {
            return Ok(());
        }
        b.take(key).map_err(|wait| {
            counted(name);
            Limited(wait)
        })
    }

    pub fn registration(&self, addr: IpAddr) -> Result<(), Limited> {
        self.gate("registration", &self.registrations, &addr)
    }

    /// A login attempt for `username` from `addr`: refused while that pair
    /// is locked, or past the address's rate.
    pub fn login(&self, username: &str, addr: IpAddr) -> Result<(), Limited> {
        if !self.config.enabled {
            return Ok(());
        }
        let key = (username.to_lowercase(), addr);
        let now = Instant::now();
        if let Some(until) = self.failures_map().get(&key).and_then(|f| f.locked_until) {
            if until > now {
                counted("login_lock");
                return Err(Limited(until - now));
            }
        }
        self.gate("login", &self.logins, &addr)
    }

    /// Records the outcome of a login attempt that reached the account service.
    pub fn login_outcome(&self, username: &str, addr: IpAddr, ok: bool) {
        if !self.config.enabled {
            return;
        }
        let key = (username.to_lowercase(), addr);
        let mut map = self.failures_map();
        if ok {
            map.remove(&key);
            return;
        }
        let now = Instant::now();
        if map.len() >= MAX_KEYS && !map.contains_key(&key) {
            map.retain(|_, f| now.duration_since(f.last) < FORGET_FAILURES_AFTER);
            if map.len() >= MAX_KEYS {
                return;
            }
        }
        let f = map.entry(key).or_insert(Failures {
            count: 0,
            locked_until: None,
            last: now,
        });
        if now.duration_since(f.last) > FORGET_FAILURES_AFTER {
            f.count = 0;
        }
        f.count += 1;
        f.last = now;
        let over = f
            .count
            .saturating_sub(self.config.login_failures_before_lock);
        if f.count >= self.config.login_failures_before_lock {
            let secs = 30u64
                .saturating_mul(1 << over.min(10))
                .min(self.config.login_lock_max_secs.max(1));
            f.locked_until = Some(now + Duration::from_secs(secs));
        }
    }

    fn failures_map(&self) -> std::sync::MutexGuard<'_, HashMap<(String, IpAddr), Failures>> {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn lookup(&self, user: &str) -> Result<(), Limited> {
        self.gate("lookup", &self.lookups, user)
    }

    pub fn read(&self, user: &str) -> Result<(), Limited> {
        self.gate("read", &self.reads, user)
    }

    pub fn upload(&self, user: &str) -> Result<(), Limited> {
        self.gate("upload", &self.uploads, user)
    }

    pub fn send(&self, user: &str) -> Result<(), Limited> {
        self.gate("send", &self.sends, user)
    }

    /// A place for one more WebSocket of `user`, or `None` when they hold
    /// `connections_per_user` here already.
    #[must_use]
    pub fn open_connection(&self, user: &str) -> Option<OpenConnection> {
        let cap = self.config.connections_per_user;
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = open.entry(user.to_owned()).or_insert(0);
        if self.config.enabled && cap > 0 && *n >= cap {
            counted("connections_per_user");
            return None;
        }
        *n += 1;
        Some(OpenConnection {
            open: Arc::clone(&self.open),
            user: user.to_owned(),
        })
    }

    /// A password check that is not a login (deleting the account): the
    /// login's address rate and its per-account lock, keyed apart from logins.
    pub fn password_check(&self, user_id: &str, addr: IpAddr) -> Result<(), Limited> {
        self.login(&format!("#{user_id}"), addr)
    }

    pub fn password_check_outcome(&self, user_id: &str, addr: IpAddr, ok: bool) {
        self.login_outcome(&format!("#{user_id}"), addr, ok);
    }
}

/// Every limit a refusal can name.
const LIMIT_NAMES: [&str; 10] = [
    "registration",
    "login",
    "login_lock",
    "lookup",
    "read",
    "upload",
    "send",
    "typing",
    "presence",
    "connections_per_user",
];

/// Exports every limit's refusal counter at 0, so a dashboard or an alert
/// sees a series (and a rate) before the first refusal.
pub fn describe() {
    for limit in LIMIT_NAMES {
        metrics::counter!("msgr_edge_rate_limited_total", "limit" => limit).increment(0);
    }
}

/// Counts a refusal by the limit that made it (`msgr_edge_rate_limited_total`).
pub fn counted(limit: &'static str) {
    debug_assert!(
        LIMIT_NAMES.contains(&limit),
        "{limit} is not in LIMIT_NAMES"
    );
    metrics::counter!("msgr_edge_rate_limited_total", "limit" => limit).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_holds_at_most_connections_per_user_and_a_closed_one_frees_its_place() {
        let l = Limits::new(LimitsConfig {
            connections_per_user: 2,
            ..LimitsConfig::default()
        });
        let a = l.open_connection("u1").expect("first");
        let _b = l.open_connection("u1").expect("second");
        assert!(l.open_connection("u1").is_none(), "a third is refused");
        let _other = l
            .open_connection("u2")
            .expect("another user is not affected");
        drop(a);
        assert!(
            l.open_connection("u1").is_some(),
            "a closed one frees its place"
        );
    }

    #[test]
    fn a_bucket_gives_its_burst_then_says_how_long_to_wait() {
        let b: Buckets<u32> = Buckets::new(3, Duration::from_secs(3));
        for _ in 0..3 {
            assert!(b.take(&1).is_ok());
        }
        let wait = b.take(&1).expect_err("empty");
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(b.take(&2).is_ok(), "keys are separate");
        let off: Buckets<u32> = Buckets::new(0, Duration::from_secs(1));
        assert!((0..100).all(|_| off.take(&1).is_ok()), "0 is no limit");
    }

    #[test]
    fn failures_lock_one_account_at_one_address_for_a_growing_while() {
        let l = Limits::new(LimitsConfig::default());
        let (attacker, owner): (IpAddr, IpAddr) = (
            "10.0.0.1".parse().expect("ip"),
            "10.0.0.2".parse().expect("ip"),
        );
        for _ in 0..4 {
            assert!(l.login("Alice", attacker).is_ok());
            l.login_outcome("Alice", attacker, false);
        }
        assert!(
            l.login("alice", attacker).is_ok(),
            "four failures lock nothing"
        );
        l.login_outcome("alice", attacker, false);
        let first = l.login("alice", attacker).expect_err("locked").0;
        assert!(first <= Duration::from_secs(30) && first > Duration::from_secs(25));
        assert!(
            l.login("alice", owner).is_ok(),
            "the owner's address is not locked"
        );
        l.login_outcome("alice", attacker, false);
        let second = l.login("alice", attacker).expect_err("locked").0;
        assert!(second > Duration::from_secs(55), "{second:?}");
        for _ in 0..20 {
            l.login_outcome("alice", attacker, false);
        }
        let capped = l.login("alice", attacker).expect_err("locked").0;
        assert!(
            capped <= Duration::from_secs(900),
            "never longer than the cap"
        );
    }

    #[test]
    fn the_forwarded_address_counts_only_when_trusted() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "1.2.3.4, 5.6.7.8".parse().expect("header"),
        );
        let peer: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        let plain = Limits::new(LimitsConfig::default());
        assert_eq!(plain.client_addr(peer, &h), peer.ip());
        let proxied = Limits::new(LimitsConfig {
            trust_forwarded_for: true,
            ..LimitsConfig::default()
        });
        let proxy_wrote: IpAddr = "5.6.7.8".parse().expect("ip");
        assert_eq!(proxied.client_addr(peer, &h), proxy_wrote);
        h.insert(
            "x-forwarded-for",
            "1.2.3.4, unknown".parse().expect("header"),
        );
        assert_eq!(
            proxied.client_addr(peer, &h),
            peer.ip(),
            "never an earlier, client-written entry"
        );
    }
}
