//! Between users: blocking, presence privacy, who may watch whose presence,
//! and typing notices in groups (checked against membership here, so the
//! edge needs no member lists). Runs with the account role.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use msgr_core::store::StoreError;
use msgr_nats::subject::{self, rpc, WORKER_QUEUE};
use msgr_schemas::pb::v1 as pb;
use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::context::WorkerContext;
use crate::rpc::{decode, serve, Refusal};

/// Most users one presence request may name.
const MAX_PRESENCE_IDS: usize = 200;

/// Runs the blocking, presence and group typing services until `shutdown`.
pub(crate) async fn run(
    ctx: Arc<WorkerContext>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let c = Arc::clone(&ctx);
    let block = serve(
        ctx.nats.clone(),
        rpc::BLOCK,
        64,
        shutdown.clone(),
        move |b| {
            let ctx = Arc::clone(&c);
            async move {
                block(&ctx, decode(&b)?)
                    .await
                    .map(|m| m.encode_to_vec().into())
            }
        },
    );
    let c = Arc::clone(&ctx);
    let blocked = serve(
        ctx.nats.clone(),
        rpc::BLOCKED,
        64,
        shutdown.clone(),
        move |b| {
            let ctx = Arc::clone(&c);
            async move {
                let req: pb::BlockedRequest = decode(&b)?;
                let user_ids = ctx
                    .store
                    .blocked(&req.caller_id)
                    .await
                    .map_err(Refusal::internal)?;
                Ok(pb::BlockList { user_ids }.encode_to_vec().into())
            }
        },
    );
    let c = Arc::clone(&ctx);
    let settings = serve(
        ctx.nats.clone(),
        rpc::PRESENCE,
        64,
        shutdown.clone(),
        move |b| {
            let ctx = Arc::clone(&c);
            async move {
                presence_settings(&ctx, decode(&b)?)
                    .await
                    .map(|m| m.encode_to_vec().into())
            }
        },
    );
    let c = Arc::clone(&ctx);
    let allowed = serve(
        ctx.nats.clone(),
        rpc::PRESENCE_ALLOWED,
        128,
        shutdown.clone(),
        move |b| {
            let ctx = Arc::clone(&c);
            async move {
                let req: pb::PresenceAllowedRequest = decode(&b)?;
                if req.user_ids.len() > MAX_PRESENCE_IDS {
                    return Err(Refusal::new(
                        "too_large",
                        format!("at most {MAX_PRESENCE_IDS} users at once"),
                    ));
                }
                let user_ids = ctx
                    .store
                    .presence_allowed(&req.caller_id, &req.user_ids)
                    .await
                    .map_err(Refusal::internal)?;
                Ok(pb::PresenceAllowed { user_ids }.encode_to_vec().into())
            }
        },
    );
    let typing = group_typing(Arc::clone(&ctx), shutdown.clone());
    tokio::try_join!(block, blocked, settings, allowed, typing)?;
    Ok(())
}

/// # `msgr.v1.rpc.account.block`
/// - `user_not_found`: no such user; `invalid_request`: blocking yourself.
async fn block(ctx: &WorkerContext, req: pb::BlockRequest) -> Result<pb::BlockList, Refusal> {
    if req.block {
        match ctx
            .store
            .block(&req.caller_id, &req.user_id, msgr_core::time::now_ms())
            .await
        {
            Ok(_) => {}
            Err(StoreError::NotFound) => {
                return Err(Refusal::new("user_not_found", "no such user"));
            }
            Err(StoreError::Conflict(m)) => return Err(Refusal::new("invalid_request", m)),
            Err(e) => return Err(Refusal::internal(e)),
        }
        // Whoever is blocked stops seeing the blocker's presence now: their
        // edges drop the watch on this event (see the edge's presence).
        hide_from(ctx, &req.caller_id, Some(&req.user_id)).await;
    } else {
        ctx.store
            .unblock(&req.caller_id, &req.user_id)
            .await
            .map_err(Refusal::internal)?;
    }
    let user_ids = ctx
        .store
        .blocked(&req.caller_id)
        .await
        .map_err(Refusal::internal)?;
    Ok(pb::BlockList { user_ids })
}

/// # `msgr.v1.rpc.account.presence`
async fn presence_settings(
    ctx: &WorkerContext,
    req: pb::PresenceSettingsRequest,
) -> Result<pb::PresenceSettings, Refusal> {
    if let Some(visible) = req.visible {
        ctx.store
            .set_presence_visible(&req.caller_id, visible)
            .await
            .map_err(|e| match e {
                StoreError::NotFound => Refusal::new("user_not_found", "no such user"),
                e => Refusal::internal(e),
            })?;
        if !visible {
            hide_from(ctx, &req.caller_id, None).await;
        }
    }
    let visible = ctx
        .store
        .presence_visible(&req.caller_id)
        .await
        .map_err(Refusal::internal)?;
    Ok(pb::PresenceSettings { visible })
}

/// Tells every edge that `user_id`'s presence is hidden (from `viewer`
/// only, or from everyone): watchers get "no presence" and their watch ends.
async fn hide_from(ctx: &WorkerContext, user_id: &str, viewer: Option<&str>) {
    let event = pb::PresenceEvent {
        user_id: user_id.to_owned(),
        online: false,
        last_seen_ms: 0,
        hidden_from: viewer.map(str::to_owned),
        hidden: true,
    };
    if let Err(e) = ctx
        .nats
        .publish(subject::presence(user_id), event.encode_to_vec().into())
        .await
    {
        tracing::warn!(error = %e, "presence publish failed");
    }
}

/// How long a group's member list answers typing notices before it is read
/// again (a member removed meanwhile may be told of typing that long).
const TYPING_MEMBERS_TTL: Duration = Duration::from_secs(10);
/// Most groups whose members are kept for typing notices.
const TYPING_GROUPS_CACHED: usize = 4096;

/// How long a user's block list is trusted for typing notices.
const TYPING_BLOCKS_TTL: Duration = Duration::from_secs(2);

/// Whom `user` blocks, from `cache` when fresh; `None` when the store cannot say.
async fn blocked_by(
    ctx: &WorkerContext,
    cache: &mut HashMap<String, (Instant, Arc<Vec<String>>)>,
    user: &str,
) -> Option<Arc<Vec<String>>> {
    if let Some((at, list)) = cache.get(user) {
        if at.elapsed() < TYPING_BLOCKS_TTL {
            return Some(Arc::clone(list));
        }
    }
    let list = Arc::new(ctx.store.blocked(user).await.ok()?);
    if cache.len() >= TYPING_GROUPS_CACHED {
        cache.clear();
    }
    cache.insert(user.to_owned(), (Instant::now(), Arc::clone(&list)));
    Some(list)
}

/// Typing notices: a group's checked against its current members, a direct
/// chat's against its id, and passed to the other members' edges. Ephemeral: a notice that cannot be checked
/// is dropped.
async fn group_typing(ctx: Arc<WorkerContext>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut sub = ctx
        .nats
        .queue_subscribe(subject::TYPING_ALL, WORKER_QUEUE.to_owned())
        .await
        .map_err(|e| anyhow::anyhow!("subscribing to typing: {e}"))?;
    // Current members per group, and when they were read.
    let mut cache: HashMap<String, (Instant, Arc<Vec<String>>)> = HashMap::new();
    // Whom each user blocks, briefly (a block silences typing within this).
    let mut blocks: HashMap<String, (Instant, Arc<Vec<String>>)> = HashMap::new();
    loop {
        let msg = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            m = sub.next() => match m { Some(m) => m, None => return Ok(()) },
        };
        let Ok(t) = pb::TypingEvent::decode(msg.payload) else {
            continue;
        };
        if msg.subject.as_str() != subject::typing(&t.conversation_id) {
            continue;
        }
        // A direct chat's two members are in its id.
        if let Some((a, b)) = msgr_core::id::direct_members(&t.conversation_id) {
            let peer = if t.user_id == a {
                b
            } else if t.user_id == b {
                a
            } else {
                continue;
            };
            // Not to someone who blocked the typist, nor to someone they blocked.
            let mut blocked = false;
            for (who, whom) in [(peer, t.user_id.as_str()), (t.user_id.as_str(), peer)] {
                match blocked_by(&ctx, &mut blocks, who).await {
                    Some(list) => blocked |= list.iter().any(|u| u == whom),
                    None => blocked = true,
                }
            }
            if blocked {
                continue;
            }
            let d = pb::Delivery {
                event: Some(pb::delivery::Event::Typing(t.clone())),
            };
            crate::deliver::push_now(&ctx, &[peer.to_owned()], &d).await;
            continue;
        }
        if !msgr_core::id::is_group_id(&t.conversation_id) {
            continue;
        }
        let cached = cache
            .get(&t.conversation_id)
            .filter(|(at, _)| at.elapsed() < TYPING_MEMBERS_TTL)
            .map(|(_, m)| Arc::clone(m));
        let members = match cached {
            Some(m) => m,
            None => {
                let Ok(all) = ctx.store.members(&t.conversation_id).await else {
                    continue;
                };
                let current: Arc<Vec<String>> = Arc::new(
                    all.into_iter()
                        .filter(|m| m.left_seq.is_none())
                        .map(|m| m.user_id)
                        .collect(),
                );
                if cache.len() >= TYPING_GROUPS_CACHED {
                    cache.clear();
                }
                cache.insert(
                    t.conversation_id.clone(),
                    (Instant::now(), Arc::clone(&current)),
                );
                current
            }
        };
        if !members.contains(&t.user_id) {
            continue;
        }
        let d = pb::Delivery {
            event: Some(pb::delivery::Event::Typing(t.clone())),
        };
        let others: Vec<String> = members
            .iter()
            .filter(|m| **m != t.user_id)
            .cloned()
            .collect();
        crate::deliver::push_now(&ctx, &others, &d).await;
    }
}
