//! Replies, edits, deletes for everyone, reactions, "changed since",
//! blocking and presence rights.
use super::groups::{group_of, to_group};
use super::*;
use crate::store::{ChangeKind, MessageChange, QUOTE_CHARS};

const WINDOW: i64 = 15 * 60 * 1000;

fn change(who: &UserRecord, conv: &str, seq: u64, cmid: &str, kind: ChangeKind) -> Op {
    Op::Change(MessageChange {
        conversation_id: conv.to_owned(),
        seq,
        actor_id: who.user_id.clone(),
        client_msg_id: cmid.to_owned(),
        kind,
        at_ms: crate::time::now_ms(),
        window_ms: WINDOW,
    })
}

fn reply(from: &UserRecord, to: &UserRecord, cmid: &str, text: &str, to_seq: u64) -> Op {
    match direct(from, to, cmid, text) {
        Op::Append(mut m) => {
            m.reply_to_seq = Some(to_seq);
            Op::Append(m)
        }
        _ => unreachable!(),
    }
}

async fn one(store: &dyn Store, op: Op) -> OpOutcome {
    store
        .apply(vec![op])
        .await
        .expect("apply")
        .pop()
        .expect("one outcome")
}

fn rejected(o: &OpOutcome) -> Rejection {
    match o {
        OpOutcome::Rejected(r) => *r,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn changed(o: OpOutcome) -> (super::super::StoredMessage, bool) {
    match o {
        OpOutcome::Changed { message, fresh, .. } => (message, fresh),
        other => panic!("expected Changed, got {other:?}"),
    }
}

async fn latest(store: &dyn Store, conv: &str, who: &UserRecord) -> crate::store::HistoryPage {
    store
        .history(
            conv,
            &who.user_id,
            Page {
                limit: 100,
                ..Page::default()
            },
        )
        .await
        .expect("history")
}

pub(super) async fn replies_quote_the_original_as_it_was(store: &dyn Store) {
    let (a, b) = (user(store, "reply").await, user(store, "reply").await);
    let conv = id::direct_conversation_id(&a.user_id, &b.user_id);
    let long = "x".repeat(QUOTE_CHARS + 50);
    one(store, direct(&a, &b, "r1", &long)).await;
    let r = one(store, reply(&b, &a, "r2", "answer", 1)).await;
    let q = match &r {
        OpOutcome::Stored(m) => m.reply_to.clone().expect("a reply carries its quote"),
        other => panic!("expected Stored, got {other:?}"),
    };
    assert_eq!((q.seq, q.sender_id.as_str()), (1, a.user_id.as_str()));
    assert!(q
        .text
        .as_deref()
        .is_some_and(|t| t.chars().count() == QUOTE_CHARS + 1));
    // Editing the original later does not change the quote taken at send time.
    one(
        store,
        change(&a, &conv, 1, "e1", ChangeKind::Edit("new".to_owned())),
    )
    .await;
    let page = latest(store, &conv, &a).await;
    let kept = page.messages[1].message.reply_to.clone().expect("quote");
    assert_eq!(
        kept.text, q.text,
        "the quote is what was said when replying"
    );
    // A reply to a seq that does not exist stores nothing.
    let bad = one(store, reply(&b, &a, "r3", "to nothing", 99)).await;
    assert_eq!(rejected(&bad), Rejection::UnknownMessage);
    assert_eq!(latest(store, &conv, &a).await.messages.len(), 2);
    assert_eq!(
        store
            .message_by_client_id(&b.user_id, "r3")
            .await
            .expect("lookup"),
        None
    );
}

pub(super) async fn only_the_sender_edits_text_within_the_window(store: &dyn Store) {
    let (a, b) = (user(store, "edit").await, user(store, "edit").await);
    let conv = id::direct_conversation_id(&a.user_id, &b.user_id);
    one(store, direct(&a, &b, "m1", "first")).await;
    let before = latest(store, &conv, &a).await.rev;
    let by_other = one(
        store,
        change(&b, &conv, 1, "x1", ChangeKind::Edit("hijack".to_owned())),
    )
    .await;
    assert_eq!(rejected(&by_other), Rejection::NotSender);
    let (m, fresh) = changed(
        one(
            store,
            change(&a, &conv, 1, "x2", ChangeKind::Edit("fixed".to_owned())),
        )
        .await,
    );
    assert!(fresh);
    assert_eq!(m.text.as_deref(), Some("fixed"));
    assert!(m.edited_at_ms.is_some());
    assert!(m.rev > before, "a change moves the conversation's rev");
    // The same change again (a redelivered command) changes nothing more.
    let (again, fresh) = changed(
        one(
            store,
            change(&a, &conv, 1, "x2", ChangeKind::Edit("fixed".to_owned())),
        )
        .await,
    );
    assert!(!fresh);
    assert_eq!(again.rev, m.rev);
    // Out of the window.
    let late = Op::Change(MessageChange {
        conversation_id: conv.clone(),
        seq: 1,
        actor_id: a.user_id.clone(),
        client_msg_id: "x3".to_owned(),
        kind: ChangeKind::Edit("too late".to_owned()),
        at_ms: crate::time::now_ms() + WINDOW + 1000,
        window_ms: WINDOW,
    });
    assert_eq!(rejected(&one(store, late).await), Rejection::WindowClosed);
    let unknown = one(
        store,
        change(&a, &conv, 42, "x4", ChangeKind::Edit("?".to_owned())),
    )
    .await;
    assert_eq!(rejected(&unknown), Rejection::UnknownMessage);
    let page = latest(store, &conv, &b).await;
    assert_eq!(page.messages[0].message.text.as_deref(), Some("fixed"));
    // Seqs no store holds are refused like any unknown one (not a failed batch).
    for seq in [u64::MAX, 1 << 63] {
        let out = store
            .apply(vec![
                change(&a, &conv, seq, &format!("big{seq}"), ChangeKind::Delete),
                reply(&b, &a, &format!("rbig{seq}"), "?", seq),
            ])
            .await
            .expect("the batch commits");
        assert_eq!(rejected(&out[0]), Rejection::UnknownMessage);
        assert_eq!(rejected(&out[1]), Rejection::UnknownMessage);
    }
    assert!(store
        .changes(&conv, &a.user_id, u64::MAX, 10)
        .await
        .expect("changes after any rev")
        .messages
        .is_empty());
}

pub(super) async fn a_deleted_message_loses_text_media_quotes_and_reactions(store: &dyn Store) {
    let (a, b) = (user(store, "del").await, user(store, "del").await);
    let conv = id::direct_conversation_id(&a.user_id, &b.user_id);
    let media_id = id::new_media_id();
    store
        .create_media(MediaRecord {
            media_id: media_id.clone(),
            uploader_id: a.user_id.clone(),
            content_type: "image/png".to_owned(),
            size: 1,
            sha256: "00".to_owned(),
            has_thumbnail: false,
            created_at_ms: crate::time::now_ms(),
        })
        .await
        .expect("media");
    let with_media = match direct(&a, &b, "d1", "caption") {
        Op::Append(mut m) => {
            m.media_id = Some(media_id.clone());
            Op::Append(m)
        }
        _ => unreachable!(),
    };
    one(store, with_media).await;
    one(store, reply(&b, &a, "d2", "nice", 1)).await;
    one(
        store,
        change(&b, &conv, 1, "d3", ChangeKind::React(Some("👍".to_owned()))),
    )
    .await;
    let rev_before = latest(store, &conv, &a).await.rev;
    let out = one(store, change(&a, &conv, 1, "d4", ChangeKind::Delete)).await;
    let OpOutcome::Changed {
        message,
        orphaned_media,
        ..
    } = out
    else {
        panic!("expected Changed, got {out:?}");
    };
    assert!(message.deleted_at_ms.is_some());
    assert_eq!((message.text, message.media_id), (None, None));
    assert!(message.reactions.is_empty());
    assert_eq!(orphaned_media.as_deref(), Some(media_id.as_str()));
    assert_eq!(
        store.media_for(&media_id, &a.user_id).await.expect("media"),
        None,
        "nothing references the media any more: it is gone"
    );
    let page = latest(store, &conv, &b).await;
    let q = page.messages[1].message.reply_to.clone().expect("quote");
    assert!(
        q.deleted && q.text.is_none(),
        "quotes of it are emptied: {q:?}"
    );
    // Both changed messages come back from "changed since".
    let since = store
        .changes(&conv, &b.user_id, rev_before, 100)
        .await
        .expect("changes");
    let seqs: Vec<u64> = since.messages.iter().map(|v| v.message.seq).collect();
    assert_eq!(seqs, [1, 2]);
    // Deleting again, editing or reacting to it: refused, nothing changes.
    for (cmid, kind) in [
        ("d5", ChangeKind::Delete),
        ("d6", ChangeKind::Edit("back".to_owned())),
        ("d7", ChangeKind::React(Some("😂".to_owned()))),
    ] {
        let who = if cmid == "d7" { &b } else { &a };
        assert_eq!(
            rejected(&one(store, change(who, &conv, 1, cmid, kind)).await),
            Rejection::MessageDeleted
        );
    }
    assert_eq!(latest(store, &conv, &a).await.rev, since.rev);
    // Replying to a deleted message is refused.
    assert_eq!(
        rejected(&one(store, reply(&b, &a, "d8", "hm", 1)).await),
        Rejection::UnknownMessage
    );
}

pub(super) async fn one_reaction_per_member_changeable_and_removable(store: &dyn Store) {
    let (a, b, c, outsider) = (
        user(store, "react").await,
        user(store, "react").await,
        user(store, "react").await,
        user(store, "react").await,
    );
    let g = group_of(store, &a, &[&b, &c]).await;
    one(store, to_group(&a, &g, "g1")).await;
    let react = |who: &UserRecord, cmid: &str, e: Option<&str>| {
        change(who, &g, 1, cmid, ChangeKind::React(e.map(str::to_owned)))
    };
    one(store, react(&b, "a1", Some("👍"))).await;
    one(store, react(&c, "a2", Some("👍"))).await;
    let (m, _) = changed(one(store, react(&b, "a3", Some("❤️"))).await);
    let mut got: Vec<(String, String)> = m
        .reactions
        .iter()
        .map(|r| (r.user_id.clone(), r.emoji.clone()))
        .collect();
    got.sort();
    let mut want = vec![
        (b.user_id.clone(), "❤️".to_owned()),
        (c.user_id.clone(), "👍".to_owned()),
    ];
    want.sort();
    assert_eq!(got, want, "one reaction per member, the latest");
    let (m, _) = changed(one(store, react(&c, "a4", None)).await);
    assert_eq!(m.reactions.len(), 1, "removed");
    assert_eq!(
        rejected(&one(store, react(&outsider, "a5", Some("👍"))).await),
        Rejection::NotMember
    );
    let page = latest(store, &g, &a).await;
    assert_eq!(page.messages[0].message.reactions.len(), 1);
}

pub(super) async fn blocks_stop_direct_sends_both_ways_until_lifted(store: &dyn Store) {
    let (a, b, c) = (
        user(store, "blk").await,
        user(store, "blk").await,
        user(store, "blk").await,
    );
    assert!(store.block(&a.user_id, &b.user_id, 1).await.expect("block"));
    assert!(!store.block(&a.user_id, &b.user_id, 2).await.expect("again"));
    assert!(matches!(
        store.block(&a.user_id, &id::new_user_id(), 3).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        store.blocked(&a.user_id).await.expect("list"),
        std::slice::from_ref(&b.user_id)
    );
    // The blocked user cannot start a chat, nor send in one.
    assert_eq!(
        rejected(&one(store, direct(&b, &a, "b1", "hi")).await),
        Rejection::RecipientUnavailable
    );
    assert_eq!(
        rejected(&one(store, direct(&a, &b, "b2", "hi")).await),
        Rejection::YouBlocked
    );
    // Nor reach the blocker by reacting to or editing an earlier message of
    // the chat (either side); deleting one's own message stays possible.
    store
        .unblock(&a.user_id, &b.user_id)
        .await
        .expect("unblock");
    let conv = id::direct_conversation_id(&a.user_id, &b.user_id);
    let first = stored_seq(&one(store, direct(&b, &a, "b0", "before")).await);
    let second = stored_seq(&one(store, direct(&b, &a, "b00", "before, too")).await);
    store
        .block(&a.user_id, &b.user_id, 6)
        .await
        .expect("block again");
    for (who, cmid, kind, want) in [
        (
            &b,
            "bx1",
            ChangeKind::React(Some("👍".to_owned())),
            Rejection::RecipientUnavailable,
        ),
        (
            &b,
            "bx2",
            ChangeKind::Edit("sneaky".to_owned()),
            Rejection::RecipientUnavailable,
        ),
        (
            &a,
            "bx3",
            ChangeKind::React(Some("👍".to_owned())),
            Rejection::YouBlocked,
        ),
    ] {
        assert_eq!(
            rejected(&one(store, change(who, &conv, first, cmid, kind)).await),
            want,
            "{cmid}"
        );
    }
    let page = latest(store, &conv, &a).await;
    let m = &page
        .messages
        .iter()
        .find(|m| m.message.seq == first)
        .expect("first")
        .message;
    assert!(
        m.reactions.is_empty() && m.text.as_deref() == Some("before"),
        "{m:?}"
    );
    let (deleted, _) =
        changed(one(store, change(&b, &conv, second, "bx4", ChangeKind::Delete)).await);
    assert!(deleted.deleted_at_ms.is_some(), "{deleted:?}");
    // Others are unaffected, and so are groups.
    assert!(matches!(
        one(store, direct(&c, &a, "b3", "hi")).await,
        OpOutcome::Stored(_)
    ));
    let g = group_of(store, &a, &[&b]).await;
    assert!(matches!(
        one(store, to_group(&b, &g, "b4")).await,
        OpOutcome::Stored(_)
    ));
    assert!(store
        .unblock(&a.user_id, &b.user_id)
        .await
        .expect("unblock"));
    assert!(matches!(
        one(store, direct(&b, &a, "b5", "again")).await,
        OpOutcome::Stored(_)
    ));
    // A deleted account's blocks go with it.
    let d = user(store, "blk").await;
    store.block(&a.user_id, &d.user_id, 4).await.expect("block");
    store.block(&d.user_id, &a.user_id, 5).await.expect("block");
    assert!(store.delete_user(&d.user_id).await.expect("delete"));
    assert!(store.blocked(&a.user_id).await.expect("list").is_empty());
    assert!(store.blocked(&d.user_id).await.expect("list").is_empty());
}

pub(super) async fn presence_is_for_shared_chats_unless_hidden_or_blocked(store: &dyn Store) {
    let (a, b, c, d) = (
        user(store, "pres").await,
        user(store, "pres").await,
        user(store, "pres").await,
        user(store, "pres").await,
    );
    one(store, direct(&a, &b, "p1", "hi")).await;
    let _g = group_of(store, &a, &[&c]).await;
    let ids = vec![b.user_id.clone(), c.user_id.clone(), d.user_id.clone()];
    let mut allowed = store
        .presence_allowed(&a.user_id, &ids)
        .await
        .expect("allowed");
    allowed.sort();
    let mut want = vec![b.user_id.clone(), c.user_id.clone()];
    want.sort();
    assert_eq!(allowed, want, "a chat or a group shared; not a stranger");
    assert!(store.presence_visible(&b.user_id).await.expect("visible"));
    store
        .set_presence_visible(&b.user_id, false)
        .await
        .expect("hide");
    assert!(!store.presence_visible(&b.user_id).await.expect("visible"));
    store.block(&c.user_id, &a.user_id, 1).await.expect("block");
    assert!(store
        .presence_allowed(&a.user_id, &ids)
        .await
        .expect("allowed")
        .is_empty());
    store
        .set_presence_visible(&b.user_id, true)
        .await
        .expect("show");
    assert_eq!(
        store
            .presence_allowed(&a.user_id, &ids)
            .await
            .expect("allowed"),
        std::slice::from_ref(&b.user_id)
    );
}

pub(super) async fn shared_media_is_removed_with_its_last_message_and_the_removal_is_recorded(
    store: &dyn Store,
) {
    let (a, b, c) = (
        user(store, "shm").await,
        user(store, "shm").await,
        user(store, "shm").await,
    );
    let media_id = id::new_media_id();
    store
        .create_media(MediaRecord {
            media_id: media_id.clone(),
            uploader_id: a.user_id.clone(),
            content_type: "image/png".to_owned(),
            size: 1,
            sha256: "00".to_owned(),
            has_thumbnail: false,
            created_at_ms: crate::time::now_ms(),
        })
        .await
        .expect("media");
    let with_media = |to: &UserRecord, cmid: &str| match direct(&a, to, cmid, "") {
        Op::Append(mut m) => {
            m.media_id = Some(media_id.clone());
            m.text = None;
            Op::Append(m)
        }
        _ => unreachable!(),
    };
    one(store, with_media(&b, "m1")).await;
    one(store, with_media(&c, "m2")).await;
    let pending = |ids: Vec<String>| ids.contains(&media_id);
    // One of two messages deleted: the media stays, readable by the other chat.
    let to_b = id::direct_conversation_id(&a.user_id, &b.user_id);
    let out = one(store, change(&a, &to_b, 1, "m3", ChangeKind::Delete)).await;
    assert!(
        matches!(
            out,
            OpOutcome::Changed {
                orphaned_media: None,
                ..
            }
        ),
        "{out:?}"
    );
    assert!(store
        .media_for(&media_id, &c.user_id)
        .await
        .expect("media")
        .is_some());
    assert!(!pending(
        store.media_removals(10_000).await.expect("removals")
    ));
    // The last one deleted: the record goes and its removal is recorded in
    // the same transaction, until the bytes are gone.
    let to_c = id::direct_conversation_id(&a.user_id, &c.user_id);
    let out = one(store, change(&a, &to_c, 1, "m4", ChangeKind::Delete)).await;
    assert!(
        matches!(&out, OpOutcome::Changed { orphaned_media: Some(m), .. } if *m == media_id),
        "{out:?}"
    );
    assert!(store
        .media_for(&media_id, &a.user_id)
        .await
        .expect("media")
        .is_none());
    assert!(pending(
        store.media_removals(10_000).await.expect("removals")
    ));
    store.media_removed(&media_id).await.expect("removed");
    assert!(!pending(
        store.media_removals(10_000).await.expect("removals")
    ));
}
