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
                    chats: page.chats.iter().map(convert::chat).map(preview).collect(),
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
        // A deleted account is not found, but the chat with it stays
        // readable to whoever had it.
        if found.is_empty()
            && !ctx
                .store
                .is_member(conv, &req.caller_id)
                .await
                .map_err(Refusal::internal)?
        {
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
    let out = if let Some(after_rev) = req.changes_after {
        ctx.store
            .changes(conv, &req.caller_id, after_rev, req.limit)
            .await
    } else {
        let page = Page {
            limit: req.limit,
            before: req.before,
            after: req.after,
        };
        ctx.store.history(conv, &req.caller_id, page).await
    }
    .map_err(Refusal::internal)?;
    let mut messages: Vec<_> = out.messages.iter().map(convert::view).collect();
    let cut = fit_page(
        &mut messages,
        req.after.is_some() || req.changes_after.is_some(),
    );
    Ok(pb::HistoryPage {
        conversation_id: conv.to_owned(),
        messages,
        has_more: out.has_more || cut,
        rev: out.rev,
    })
}

/// The most bytes of messages one page carries. Every reply must fit the
/// bus (`max_payload`, 1 MiB) by construction, with room for what else it
/// holds (a group's roster); 20 texts of 60 KB did not, and the page could
/// not be read at all.
pub(crate) const PAGE_BYTES: usize = 512 * 1024;

/// Cuts an ascending page to [`PAGE_BYTES`], keeping the end the client
/// reads from: the oldest of an `after` page (it pages forward from the
/// last one kept), the newest otherwise (it pages back from the first).
/// At least one message stays (one is far below the limit). Returns
/// whether it cut, so that `has_more` says there is more.
pub(crate) fn fit_page(messages: &mut Vec<pb::StoredMessage>, forward: bool) -> bool {
    let mut total = 0usize;
    let fits = |m: &pb::StoredMessage, total: &mut usize| {
        // Field tag and length prefix included.
        *total += m.encoded_len() + 8;
        *total <= PAGE_BYTES
    };
    let keep = if forward {
        messages.iter().take_while(|m| fits(m, &mut total)).count()
    } else {
        messages
            .iter()
            .rev()
            .take_while(|m| fits(m, &mut total))
            .count()
    }
    .max(1);
    if keep >= messages.len() {
        return false;
    }
    if forward {
        messages.truncate(keep);
    } else {
        messages.drain(..messages.len() - keep);
    }
    true
}

/// The most bytes of a chat's last message text the chat list carries (a
/// preview: the full text is in the history). 200 chats then stay far
/// below the bus's `max_payload` whatever their messages hold.
pub(crate) const PREVIEW_BYTES: usize = 1024;

fn preview(mut chat: pb::Chat) -> pb::Chat {
    if let Some(text) = chat.last_message.as_mut().and_then(|m| m.text.as_mut()) {
        if msgr_core::validate::truncate_at_char(text, PREVIEW_BYTES) {
            text.push('…');
        }
    }
    chat
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64, bytes: usize) -> pb::StoredMessage {
        pb::StoredMessage {
            seq,
            text: Some("x".repeat(bytes)),
            ..Default::default()
        }
    }

    #[test]
    fn a_page_of_large_messages_is_cut_at_the_end_the_client_pages_from() {
        let page: Vec<_> = (1..=20).map(|s| msg(s, 60_000)).collect();
        let mut back = page.clone();
        assert!(fit_page(&mut back, false));
        assert!(back.len() < 20 && back.len() >= 8, "{}", back.len());
        assert_eq!(back.last().map(|m| m.seq), Some(20), "the newest stay");
        let bytes: usize = back.iter().map(prost::Message::encoded_len).sum();
        assert!(bytes <= PAGE_BYTES);
        let mut forward = page.clone();
        assert!(fit_page(&mut forward, true));
        assert_eq!(forward.first().map(|m| m.seq), Some(1), "the oldest stay");
        assert_eq!(forward.len(), back.len());
        let mut small: Vec<_> = (1..=50).map(|s| msg(s, 100)).collect();
        assert!(!fit_page(&mut small, false));
        assert_eq!(small.len(), 50);
        let mut one = vec![msg(1, PAGE_BYTES * 2)];
        assert!(!fit_page(&mut one, false), "one message always stays");
    }

    #[test]
    fn previews_are_cut_on_a_character_boundary() {
        let chat = |text: String| pb::Chat {
            last_message: Some(pb::StoredMessage {
                text: Some(text),
                ..Default::default()
            }),
            ..Default::default()
        };
        let long = "é".repeat(PREVIEW_BYTES);
        let cut = preview(chat(long));
        let text = cut.last_message.and_then(|m| m.text).expect("text");
        assert!(text.len() <= PREVIEW_BYTES + '…'.len_utf8());
        assert!(text.ends_with('…'));
        let short = preview(chat("hello".to_owned()));
        assert_eq!(
            short.last_message.and_then(|m| m.text).as_deref(),
            Some("hello")
        );
    }
}
