//! Query service (request/reply): history pages, the chat list and message
//! lookup by client id. Keeps the edge free of any database connection.

use std::sync::Arc;

use msgr_core::id;
use msgr_core::store::Page;
use msgr_nats::subject::rpc;
use msgr_schemas::pb::v1 as pb;
use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::context::WorkerContext;
use crate::convert;
use crate::rpc::{decode, serve, Refusal};

/// Runs the query role until `shutdown`.
pub async fn run(ctx: Arc<WorkerContext>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let c = Arc::clone(&ctx);
    let history = serve(
        ctx.nats.clone(),
        rpc::HISTORY,
        256,
        shutdown.clone(),
        move |b| {
            let ctx = Arc::clone(&c);
            async move {
                history(&ctx, decode(&b)?)
                    .await
                    .map(|m| m.encode_to_vec().into())
            }
        },
    );
    let c = Arc::clone(&ctx);
    let chats = serve(
        ctx.nats.clone(),
        rpc::CHATS,
        256,
        shutdown.clone(),
        move |b| {
            let ctx = Arc::clone(&c);
            async move {
                let req: pb::ChatsRequest = decode(&b)?;
                let page = ctx
                    .store
                    .chats(&req.caller_id, req.limit, req.cursor.as_deref())
                    .await
                    .map_err(|e| match e {
                        msgr_core::store::StoreError::NotFound => {
                            Refusal::new("invalid_query", "bad cursor")
                        }
                        e => Refusal::internal(e),
                    })?;
                Ok(pb::ChatPage {
                    chats: page.chats.iter().map(convert::chat).collect(),
                    next_cursor: page.next_cursor,
                }
                .encode_to_vec()
                .into())
            }
        },
    );
    let c = Arc::clone(&ctx);
    let lookup = serve(
        ctx.nats.clone(),
        rpc::LOOKUP,
        256,
        shutdown.clone(),
        move |b| {
            let ctx = Arc::clone(&c);
            async move {
                let req: pb::LookupRequest = decode(&b)?;
                let m = ctx
                    .store
                    .message_by_client_id(&req.sender_id, &req.client_msg_id)
                    .await
                    .map_err(Refusal::internal)?;
                Ok(pb::LookupResult {
                    message: m.map(|m| convert::message(&m, None)),
                }
                .encode_to_vec()
                .into())
            }
        },
    );
    tokio::try_join!(history, chats, lookup)?;
    Ok(())
}

/// # `msgr.v1.rpc.query.history`
/// - `forbidden`: the caller is not a member of the conversation.
/// - `user_not_found`: a direct conversation with a user that does not exist.
async fn history(ctx: &WorkerContext, req: pb::HistoryRequest) -> Result<pb::HistoryPage, Refusal> {
    let conv = req.conversation_id.as_str();
    if let Some((a, b)) = id::direct_members(conv) {
        if req.caller_id != a && req.caller_id != b {
            return Err(Refusal::new(
                "forbidden",
                "not a member of this conversation",
            ));
        }
        let peer = if req.caller_id == a { b } else { a };
        let found = ctx
            .store
            .users_by_ids(&[peer.to_owned()])
            .await
            .map_err(Refusal::internal)?;
        if found.is_empty() {
            return Err(Refusal::new("user_not_found", "no such user"));
        }
    } else if !ctx
        .store
        .is_member(conv, &req.caller_id)
        .await
        .map_err(Refusal::internal)?
    {
        return Err(Refusal::new("not_found", "no such conversation"));
    }
    let page = Page {
        limit: req.limit,
        before: req.before,
        after: req.after,
    };
    let out = ctx
        .store
        .history(conv, &req.caller_id, page)
        .await
        .map_err(Refusal::internal)?;
    Ok(pb::HistoryPage {
        conversation_id: conv.to_owned(),
        messages: out.messages.iter().map(convert::view).collect(),
        has_more: out.has_more,
    })
}
