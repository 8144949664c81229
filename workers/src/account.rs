//! Account service (request/reply): register, login, user lookup and the
//! edge bootstrap. argon2 runs on a few threads of its own, each reusing
//! its working memory.

use std::sync::Arc;
use std::time::Duration;

use msgr_core::auth::password;
use msgr_core::store::{StoreError, UserRecord};
use msgr_core::{id, validate};
use msgr_nats::subject::rpc;
use msgr_schemas::pb::v1 as pb;
use prost::Message;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::context::WorkerContext;
use crate::convert;
use crate::rpc::{decode, serve, Refusal};

/// Runs the account role until `shutdown`.
pub async fn run(ctx: Arc<WorkerContext>, shutdown: CancellationToken) -> anyhow::Result<()> {
    // argon2id with the default cost takes ~19 MiB and tens of ms per hash:
    // a login storm queues for these threads and cannot exhaust memory.
    let hashing = Arc::new(Hashers::start(HASHERS));
    let c = Arc::clone(&ctx);
    let h = Arc::clone(&hashing);
    let register = serve(
        ctx.nats.clone(),
        rpc::REGISTER,
        64,
        shutdown.clone(),
        move |b| {
            let (ctx, hashing) = (Arc::clone(&c), Arc::clone(&h));
            async move {
                register(&ctx, &hashing, decode(&b)?)
                    .await
                    .map(|m| m.encode_to_vec().into())
            }
        },
    );
    let c = Arc::clone(&ctx);
    let h = Arc::clone(&hashing);
    let login = serve(
        ctx.nats.clone(),
        rpc::LOGIN,
        64,
        shutdown.clone(),
        move |b| {
            let (ctx, hashing) = (Arc::clone(&c), Arc::clone(&h));
            async move {
                login(&ctx, &hashing, decode(&b)?)
                    .await
                    .map(|m| m.encode_to_vec().into())
            }
        },
    );
    let c = Arc::clone(&ctx);
    let users = serve(
        ctx.nats.clone(),
        rpc::USERS,
        256,
        shutdown.clone(),
        move |b| {
            let ctx = Arc::clone(&c);
            async move {
                let req: pb::UsersRequest = decode(&b)?;
                let ids: Vec<String> = req
                    .user_ids
                    .into_iter()
                    .filter(|u| id::is_user_id(u))
                    .take(1000)
                    .collect();
                let found = ctx
                    .store
                    .users_by_ids(&ids)
                    .await
                    .map_err(Refusal::internal)?;
                Ok(pb::Users {
                    users: found.iter().map(convert::user).collect(),
                }
                .encode_to_vec()
                .into())
            }
        },
    );
    let c = Arc::clone(&ctx);
    let search = serve(
        ctx.nats.clone(),
        rpc::USER_SEARCH,
        64,
        shutdown.clone(),
        move |b| {
            let ctx = Arc::clone(&c);
            async move {
                search(&ctx, decode(&b)?)
                    .await
                    .map(|m| m.encode_to_vec().into())
            }
        },
    );
    let c = Arc::clone(&ctx);
    let bootstrap = serve(
        ctx.nats.clone(),
        rpc::BOOTSTRAP,
        16,
        shutdown.clone(),
        move |_| {
            let ctx = Arc::clone(&c);
            async move {
                Ok(pb::BootstrapResponse {
                    token_public_key: ctx.signer.public_bytes(),
                    partitions: ctx.config.partitions,
                }
                .encode_to_vec()
                .into())
            }
        },
    );
    let c = Arc::clone(&ctx);
    let sessions = serve(
        ctx.nats.clone(),
        rpc::SESSIONS,
        64,
        shutdown.clone(),
        move |b| {
            let ctx = Arc::clone(&c);
            async move {
                let req: pb::SessionsRequest = decode(&b)?;
                let list = ctx
                    .store
                    .sessions(&req.caller_id, msgr_core::time::now_ms())
                    .await
                    .map_err(Refusal::internal)?;
                Ok(pb::SessionList {
                    sessions: list
                        .into_iter()
                        .map(|s| pb::SessionInfo {
                            session_id: s.session_id,
                            created_at_ms: s.created_at_ms,
                            expires_at_ms: s.expires_at_ms,
                            user_agent: s.user_agent,
                        })
                        .collect(),
                }
                .encode_to_vec()
                .into())
            }
        },
    );
    let c = Arc::clone(&ctx);
    let revoke = serve(
        ctx.nats.clone(),
        rpc::REVOKE,
        64,
        shutdown.clone(),
        move |b| {
            let ctx = Arc::clone(&c);
            async move {
                revoke(&ctx, decode(&b)?)
                    .await
                    .map(|m| m.encode_to_vec().into())
            }
        },
    );
    let c = Arc::clone(&ctx);
    let refresh = serve(
        ctx.nats.clone(),
        rpc::REFRESH,
        64,
        shutdown.clone(),
        move |b| {
            let ctx = Arc::clone(&c);
            async move {
                refresh(&ctx, decode(&b)?)
                    .await
                    .map(|m| m.encode_to_vec().into())
            }
        },
    );
    let c = Arc::clone(&ctx);
    let h = Arc::clone(&hashing);
    let delete = serve(
        ctx.nats.clone(),
        rpc::DELETE_ACCOUNT,
        16,
        shutdown.clone(),
        move |b| {
            let (ctx, hashing) = (Arc::clone(&c), Arc::clone(&h));
            async move {
                delete_account(&ctx, &hashing, decode(&b)?)
                    .await
                    .map(|m| m.encode_to_vec().into())
            }
        },
    );
    tokio::try_join!(register, login, users, search, bootstrap, sessions, revoke, refresh, delete)?;
    Ok(())
}

/// Threads that hash passwords; resident memory for hashing stays within
/// this many argon2 working areas (19 MiB each at the default cost).
const HASHERS: usize = 4;

type Job = Box<dyn FnOnce(&mut password::Scratch) + Send>;

/// argon2 on [`HASHERS`] long-lived threads, each with one reused
/// [`password::Scratch`], fed through a channel that holds at most one job
/// per thread (a permit is taken before a job is queued and freed when it
/// has run). Threads end when this is dropped.
struct Hashers {
    jobs: std::sync::mpsc::SyncSender<Job>,
    slots: Arc<Semaphore>,
}

impl Hashers {
    fn start(n: usize) -> Self {
        let (jobs, rx) = std::sync::mpsc::sync_channel::<Job>(n);
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for i in 0..n {
            let rx = Arc::clone(&rx);
            let spawned = std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    let mut scratch = password::Scratch::default();
                    loop {
                        // The lock is held only while waiting for a job.
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(&mut scratch),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a hashing thread");
            }
        }
        Self {
            jobs,
            slots: Arc::new(Semaphore::new(n)),
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut password::Scratch) -> T + Send + 'static,
    ) -> Result<T, Refusal> {
        let permit = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .map_err(Refusal::internal)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        // Never waits: the permits bound the jobs queued or running to the
        // channel's capacity.
        self.jobs
            .try_send(Box::new(move |scratch| {
                let _ = tx.send(f(scratch));
                drop(permit);
            }))
            .map_err(|e| Refusal::internal(format!("hashing threads: {e}")))?;
        rx.await.map_err(Refusal::internal)
    }
}

async fn hash_blocking(
    hashing: &Hashers,
    pw: String,
    cost: password::Cost,
) -> Result<String, Refusal> {
    hashing
        .run(move |scratch| password::hash_in(&pw, cost, scratch))
        .await?
        .map_err(Refusal::internal)
}

async fn verify_blocking(hashing: &Hashers, pw: String, phc: String) -> Result<bool, Refusal> {
    hashing
        .run(move |scratch| password::verify_in(&pw, &phc, scratch))
        .await
}

/// # `msgr.v1.rpc.account.search`
/// - `invalid_query`: empty, longer than a username, or a character no
///   username can hold (so it could never match).
async fn search(ctx: &WorkerContext, req: pb::UserSearchRequest) -> Result<pb::Users, Refusal> {
    let Some(prefix) = validate::username_prefix(&req.prefix) else {
        return Err(Refusal::new(
            "invalid_query",
            "query must be 1-32 characters of a-z 0-9 _ . -",
        ));
    };
    let found = ctx
        .store
        .search_users(&prefix, req.limit.clamp(1, 50))
        .await
        .map_err(Refusal::internal)?;
    Ok(pb::Users {
        users: found.iter().map(convert::user).collect(),
    })
}

/// # `msgr.v1.rpc.account.register`
/// - `invalid_username` / `invalid_password` / `invalid_display_name`: rules of API.md.
/// - `username_taken`: another user has it, in any letter case.
async fn register(
    ctx: &WorkerContext,
    hashing: &Hashers,
    req: pb::RegisterRequest,
) -> Result<pb::User, Refusal> {
    let bad = |e: validate::ValidationError| Refusal::new(e.code(), e.to_string());
    let username = validate::username(&req.username).map_err(bad)?;
    validate::password(&req.password).map_err(bad)?;
    let display_name = match req.display_name.as_deref().map(validate::display_name) {
        Some(Ok(d)) if !d.is_empty() => d,
        Some(Err(e)) => return Err(bad(e)),
        _ => req.username.clone(),
    };
    // Cheap check first so a taken name does not cost a hash.
    if ctx
        .store
        .user_by_username(&username)
        .await
        .map_err(Refusal::internal)?
        .is_some()
    {
        return Err(Refusal::new("username_taken", "that username is taken"));
    }
    let cost = password::Cost {
        memory_kib: ctx.config.password_memory_kib,
        iterations: ctx.config.password_iterations,
    };
    let password_hash = hash_blocking(hashing, req.password, cost).await?;
    let user = UserRecord {
        user_id: id::new_user_id(),
        username,
        display_name,
        password_hash,
        created_at_ms: msgr_core::time::now_ms(),
    };
    match ctx.store.create_user(user.clone()).await {
        Ok(()) => Ok(convert::user(&user)),
        Err(StoreError::Conflict(_)) => {
            Err(Refusal::new("username_taken", "that username is taken"))
        }
        Err(e) => Err(Refusal::internal(e)),
    }
}

/// # `msgr.v1.rpc.account.login`
/// - `invalid_credentials`: unknown user or wrong password, the same answer and
///   about the same time for both (an unknown user is verified against a dummy hash).
async fn login(
    ctx: &WorkerContext,
    hashing: &Hashers,
    req: pb::LoginRequest,
) -> Result<pb::Session, Refusal> {
    let denied = || Refusal::new("invalid_credentials", "wrong username or password");
    let user = match validate::username(&req.username) {
        Ok(name) => ctx
            .store
            .user_by_username(&name)
            .await
            .map_err(Refusal::internal)?,
        Err(_) => None,
    };
    let phc = user
        .as_ref()
        .map_or_else(|| ctx.dummy_hash.clone(), |u| u.password_hash.clone());
    let pw = if req.password.len() > 1024 {
        String::new()
    } else {
        req.password
    };
    let ok = verify_blocking(hashing, pw, phc).await?;
    let Some(user) = user.filter(|_| ok) else {
        return Err(denied());
    };
    let ttl = token_ttl(ctx);
    let session_id = format!("s{}", &id::new_user_id()[1..]);
    let (token, expires_at_ms) = ctx
        .signer
        .sign_session(&user.user_id, Some(&session_id), ttl)
        .map_err(Refusal::internal)?;
    let mut agent = req.user_agent;
    validate::truncate_at_char(&mut agent, 200);
    ctx.store
        .create_session(msgr_core::store::SessionRecord {
            session_id: session_id.clone(),
            user_id: user.user_id.clone(),
            created_at_ms: msgr_core::time::now_ms(),
            expires_at_ms,
            user_agent: agent,
        })
        .await
        .map_err(Refusal::internal)?;
    end_oldest_sessions(ctx, &user.user_id).await;
    Ok(pb::Session {
        user_id: user.user_id,
        token,
        expires_at_ms,
        session_id,
    })
}

/// Ends `user_id`'s oldest sessions past `max_sessions_per_user` (revoked
/// as a user would: edges refuse their tokens and close their sockets). A
/// failure leaves them live until the next login tries again.
async fn end_oldest_sessions(ctx: &WorkerContext, user_id: &str) {
    let max = ctx.config.max_sessions_per_user.max(1);
    let now = msgr_core::time::now_ms();
    let Ok(live) = ctx.store.sessions(user_id, now).await else {
        return;
    };
    // Newest first: everything past `max` is the oldest.
    for s in live.into_iter().skip(max) {
        let req = pb::RevokeRequest {
            caller_id: user_id.to_owned(),
            session_id: Some(s.session_id),
        };
        if let Err(e) = revoke(ctx, req).await {
            tracing::warn!(error = ?e, "could not end an old session past the limit");
            return;
        }
    }
}

/// Tokens live this long; never longer than revocations are kept.
fn token_ttl(ctx: &WorkerContext) -> Duration {
    Duration::from_secs(ctx.config.token_ttl_secs.max(1)).min(msgr_nats::stream::REVOCATION_KEPT)
}

/// # `msgr.v1.rpc.account.revoke`
/// Puts each session to revoke into `MSGR_REVOKED` (every edge refuses its
/// tokens from then on and closes its WebSockets) before marking it in the
/// store, so a failure half-way leaves nothing that looks revoked but is
/// not; a retry finishes the job.
async fn revoke(ctx: &WorkerContext, req: pb::RevokeRequest) -> Result<pb::Revoked, Refusal> {
    let now = msgr_core::time::now_ms();
    let live = ctx
        .store
        .sessions(&req.caller_id, now)
        .await
        .map_err(Refusal::internal)?;
    let targets: Vec<_> = live
        .iter()
        .filter(|s| req.session_id.as_ref().is_none_or(|id| *id == s.session_id))
        .collect();
    if req.session_id.is_some() && targets.is_empty() {
        return Err(Refusal::new("not_found", "no such session"));
    }
    let bucket = msgr_nats::stream::revocations_bucket(&ctx.js, ctx.bus.replicas)
        .await
        .map_err(Refusal::internal)?;
    for s in &targets {
        bucket
            .put(s.session_id.as_str(), req.caller_id.clone().into())
            .await
            .map_err(Refusal::internal)?;
    }
    let session_ids = ctx
        .store
        .revoke_sessions(&req.caller_id, req.session_id.as_deref(), now)
        .await
        .map_err(Refusal::internal)?;
    Ok(pb::Revoked { session_ids })
}

/// # `msgr.v1.rpc.account.refresh`
/// - `not_found`: the session is revoked, expired or not the caller's.
async fn refresh(ctx: &WorkerContext, req: pb::RefreshRequest) -> Result<pb::Session, Refusal> {
    let ttl = token_ttl(ctx);
    let (token, expires_at_ms) = ctx
        .signer
        .sign_session(&req.caller_id, Some(&req.session_id), ttl)
        .map_err(Refusal::internal)?;
    match ctx
        .store
        .extend_session(
            &req.caller_id,
            &req.session_id,
            msgr_core::time::now_ms(),
            expires_at_ms,
        )
        .await
    {
        Ok(()) => Ok(pb::Session {
            user_id: req.caller_id,
            token,
            expires_at_ms,
            session_id: req.session_id,
        }),
        Err(msgr_core::store::StoreError::NotFound) => {
            Err(Refusal::new("not_found", "no such session"))
        }
        Err(e) => Err(Refusal::internal(e)),
    }
}

/// # `msgr.v1.rpc.account.delete`
/// - `invalid_credentials`: wrong password (nothing changes).
///
/// In this order, each step safe to repeat (a retry after a failure
/// finishes the job): leave every group (its members see the `left` event),
/// revoke every session (every edge closes its sockets), then delete the
/// profile and close its direct chats in the store.
async fn delete_account(
    ctx: &WorkerContext,
    hashing: &Hashers,
    req: pb::DeleteAccountRequest,
) -> Result<pb::Deleted, Refusal> {
    let denied = || Refusal::new("invalid_credentials", "wrong password");
    let user = ctx
        .store
        .users_by_ids(std::slice::from_ref(&req.caller_id))
        .await
        .map_err(Refusal::internal)?
        .pop()
        .ok_or_else(denied)?;
    let pw = if req.password.len() > 1024 {
        String::new()
    } else {
        req.password
    };
    if !verify_blocking(hashing, pw, user.password_hash.clone()).await? {
        return Err(denied());
    }
    let mut cursor = None;
    loop {
        let page = ctx
            .store
            .chats(&user.user_id, 200, cursor.as_deref())
            .await
            .map_err(Refusal::internal)?;
        for chat in &page.chats {
            if let Some(group_id) = &chat.group_id {
                // A group already left answers `forbidden`: nothing to do.
                let _ = crate::group::leave(ctx, &user.user_id, group_id).await;
            }
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    revoke(
        ctx,
        pb::RevokeRequest {
            caller_id: user.user_id.clone(),
            session_id: None,
        },
    )
    .await?;
    ctx.store
        .delete_user(&user.user_id)
        .await
        .map_err(Refusal::internal)?;
    tracing::info!(user = %user.user_id, "account deleted");
    Ok(pb::Deleted {})
}
