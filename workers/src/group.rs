//! Group service (request/reply): create, add, remove/leave, group page and
//! per-member receipts of one message. Membership lives in the store, and the
//! sequencer checks it in the same transaction that assigns a seq, so a member
//! removed before their message is sequenced cannot get it in.
//!
//! Membership changes are not history entries: they are `GroupEvent`s pushed
//! to every member (and to whoever was removed), and the group info shows the
//! current members.

use std::sync::Arc;

use msgr_core::id;
use msgr_core::store::{GroupError, GroupInfo, Page};
use msgr_nats::subject::rpc;
use msgr_schemas::pb::v1 as pb;
use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::context::WorkerContext;
use crate::convert;
use crate::rpc::{decode, serve, Refusal};

/// Runs the group role until `shutdown`.
pub async fn run(ctx: Arc<WorkerContext>, shutdown: CancellationToken) -> anyhow::Result<()> {
    macro_rules! route {
        ($subject:expr, $handler:ident) => {{
            let c = Arc::clone(&ctx);
            serve(
                ctx.nats.clone(),
                $subject,
                128,
                shutdown.clone(),
                move |b| {
                    let ctx = Arc::clone(&c);
                    async move {
                        $handler(&ctx, decode(&b)?)
                            .await
                            .map(|m| m.encode_to_vec().into())
                    }
                },
            )
        }};
    }
    tokio::try_join!(
        route!(rpc::GROUP_CREATE, create),
        route!(rpc::GROUP_ADD, add),
        route!(rpc::GROUP_REMOVE, remove),
        route!(rpc::GROUP_GET, get),
        route!(rpc::GROUP_RECEIPTS, receipts),
    )?;
    Ok(())
}

fn refusal(e: GroupError) -> Refusal {
    match e {
        GroupError::NotFound => Refusal::new("not_found", "no such group"),
        GroupError::NotMember => {
            Refusal::new("not_member", "that user is not a member of this group")
        }
        GroupError::NotAdmin => Refusal::new("not_admin", "only group admins may do that"),
        GroupError::UnknownUser(u) => Refusal::new("user_not_found", format!("no such user: {u}")),
        GroupError::TooManyMembers(n) => Refusal::new(
            "too_many_members",
            format!("a group has at most {n} members"),
        ),
        GroupError::Store(e) => Refusal::internal(e),
    }
}

/// Tells every member in `to` about a membership change.
async fn announce(ctx: &WorkerContext, to: &[String], event: pb::GroupEvent) {
    let d = pb::Delivery {
        event: Some(pb::delivery::Event::Group(event)),
    };
    crate::deliver::push_now(ctx, to, &d).await;
}

fn member_ids(info: &GroupInfo) -> Vec<String> {
    info.members.iter().map(|m| m.user_id.clone()).collect()
}

/// # `msgr.v1.rpc.group.create`
/// - `invalid_name`: empty, over 100 characters, or control characters.
/// - `user_not_found`: a member id that is no user. `too_many_members`.
async fn create(ctx: &WorkerContext, req: pb::CreateGroupRequest) -> Result<pb::Group, Refusal> {
    let name = req.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(Refusal::new(
            "invalid_name",
            "a group name is 1-100 characters",
        ));
    }
    if req.member_ids.len() > ctx.config.max_group_members.saturating_mul(2) {
        return Err(refusal(GroupError::TooManyMembers(
            ctx.config.max_group_members,
        )));
    }
    if let Some(bad) = req.member_ids.iter().find(|u| !id::is_user_id(u)) {
        return Err(refusal(GroupError::UnknownUser(
            bad.chars().take(40).collect(),
        )));
    }
    let group_id = id::new_group_id();
    let info = ctx
        .store
        .create_group(
            &group_id,
            &name,
            &req.caller_id,
            &req.member_ids,
            ctx.config.max_group_members,
            msgr_core::time::now_ms(),
        )
        .await
        .map_err(refusal)?;
    let group = convert::group(&info);
    let event = pb::GroupEvent {
        group_id,
        kind: "created".to_owned(),
        user_id: req.caller_id.clone(),
        actor_id: req.caller_id,
        group: Some(group.clone()),
        promoted_user_id: None,
    };
    announce(ctx, &member_ids(&info), event).await;
    Ok(group)
}

/// # `msgr.v1.rpc.group.add`
/// - `not_found`, `forbidden` (caller not a member), `not_admin`,
///   `user_not_found`, `too_many_members`. Adding a member again changes nothing.
async fn add(ctx: &WorkerContext, req: pb::GroupMemberRequest) -> Result<pb::Group, Refusal> {
    if !id::is_user_id(&req.user_id) {
        return Err(refusal(GroupError::UnknownUser(
            req.user_id.chars().take(40).collect(),
        )));
    }
    let change = ctx
        .store
        .add_member(
            &req.group_id,
            &req.caller_id,
            &req.user_id,
            ctx.config.max_group_members,
            msgr_core::time::now_ms(),
        )
        .await
        .map_err(|e| match e {
            GroupError::NotMember => {
                Refusal::new("forbidden", "you are not a member of this group")
            }
            e => refusal(e),
        })?;
    let group = convert::group(&change.group);
    if change.changed {
        let event = pb::GroupEvent {
            group_id: req.group_id,
            kind: "added".to_owned(),
            user_id: req.user_id,
            actor_id: req.caller_id,
            group: Some(group.clone()),
            promoted_user_id: None,
        };
        announce(ctx, &member_ids(&change.group), event).await;
    }
    Ok(group)
}

/// `user_id` leaves `group_id` (an account being deleted), announced as a
/// member leaving is.
pub(crate) async fn leave(
    ctx: &WorkerContext,
    user_id: &str,
    group_id: &str,
) -> Result<pb::Group, Refusal> {
    remove(
        ctx,
        pb::GroupMemberRequest {
            caller_id: user_id.to_owned(),
            group_id: group_id.to_owned(),
            user_id: user_id.to_owned(),
        },
    )
    .await
}

/// # `msgr.v1.rpc.group.remove`
/// - `not_found`, `forbidden` (caller not a member), `not_admin` (removing
///   someone else), `not_member` (the user is not in the group).
async fn remove(ctx: &WorkerContext, req: pb::GroupMemberRequest) -> Result<pb::Group, Refusal> {
    let Some(_) = ctx
        .store
        .group(&req.group_id)
        .await
        .map_err(Refusal::internal)?
    else {
        return Err(refusal(GroupError::NotFound));
    };
    if !ctx
        .store
        .is_member(&req.group_id, &req.caller_id)
        .await
        .map_err(Refusal::internal)?
    {
        return Err(Refusal::new(
            "forbidden",
            "you are not a member of this group",
        ));
    }
    let change = ctx
        .store
        .remove_member(
            &req.group_id,
            &req.caller_id,
            &req.user_id,
            msgr_core::time::now_ms(),
        )
        .await
        .map_err(refusal)?;
    let group = convert::group(&change.group);
    let mut to = member_ids(&change.group);
    to.push(req.user_id.clone());
    let event = pb::GroupEvent {
        group_id: req.group_id,
        kind: if req.caller_id == req.user_id {
            "left"
        } else {
            "removed"
        }
        .to_owned(),
        user_id: req.user_id,
        actor_id: req.caller_id,
        group: Some(group.clone()),
        promoted_user_id: change.promoted,
    };
    announce(ctx, &to, event).await;
    Ok(group)
}

/// # `msgr.v1.rpc.group.get`
/// The group and a page of the messages the caller may see (a removed member
/// keeps what was sent while they were in). `not_found`, `forbidden`.
async fn get(ctx: &WorkerContext, req: pb::GetGroupRequest) -> Result<pb::GroupPage, Refusal> {
    let Some(info) = ctx
        .store
        .group(&req.group_id)
        .await
        .map_err(Refusal::internal)?
    else {
        return Err(refusal(GroupError::NotFound));
    };
    let members = ctx
        .store
        .members(&req.group_id)
        .await
        .map_err(Refusal::internal)?;
    let Some(me) = members.iter().find(|m| m.user_id == req.caller_id) else {
        return Err(Refusal::new(
            "forbidden",
            "you are not a member of this group",
        ));
    };
    let page = Page {
        limit: req.limit,
        before: req.before,
        after: req.after,
    };
    let h = ctx
        .store
        .history(&req.group_id, &req.caller_id, page)
        .await
        .map_err(Refusal::internal)?;
    let mut group = convert::group(&info);
    if me.left_seq.is_some() {
        // A former member keeps the messages they saw, not the current roster.
        group.members.clear();
    }
    let mut messages: Vec<_> = h.messages.iter().map(convert::view).collect();
    let cut = crate::query::fit_page(&mut messages, req.after.is_some());
    Ok(pb::GroupPage {
        group: Some(group),
        messages,
        has_more: h.has_more || cut,
        rev: h.rev,
    })
}

/// # `msgr.v1.rpc.group.receipts`
/// Delivered/read state of one message for every member who was in the group
/// when it was sent (its sender excluded). `not_found` if the caller cannot
/// see that message.
async fn receipts(
    ctx: &WorkerContext,
    req: pb::MessageReceiptsRequest,
) -> Result<pb::MessageReceipts, Refusal> {
    if req.seq == 0 {
        return Err(Refusal::new("not_found", "no such message"));
    }
    let page = Page {
        limit: 1,
        before: None,
        after: Some(req.seq - 1),
    };
    let h = ctx
        .store
        .history(&req.group_id, &req.caller_id, page)
        .await
        .map_err(Refusal::internal)?;
    let Some(m) = h.messages.first().filter(|m| m.message.seq == req.seq) else {
        return Err(Refusal::new("not_found", "no such message"));
    };
    let sender = m.message.sender_id.clone();
    let members = ctx
        .store
        .members(&req.group_id)
        .await
        .map_err(Refusal::internal)?;
    // Others' reading progress is for current members only.
    if !members
        .iter()
        .any(|o| o.user_id == req.caller_id && o.left_seq.is_none())
    {
        return Err(Refusal::new(
            "forbidden",
            "you are not a member of this group",
        ));
    }
    Ok(pb::MessageReceipts {
        seq: req.seq,
        members: members
            .iter()
            .filter(|o| o.user_id != sender && o.saw(req.seq))
            .map(|o| pb::MemberReceipt {
                user_id: o.user_id.clone(),
                delivered: o.delivered_seq >= req.seq,
                read: o.read_seq >= req.seq,
            })
            .collect(),
        sender_id: sender,
    })
}
