//! The conformance suite every store adapter runs (feature `testing`).
//!
//! An adapter's `tests/conformance.rs` calls [`run_all`] with a fresh, empty
//! store. Each check uses its own random users, so the suite may also run
//! against a shared cluster keyspace.

use super::{
    ConversationKind, Fence, GroupError, GroupRole, MediaRecord, MessageStatus, NewMessage, Op,
    OpOutcome, Page, ReceiptKind, Rejection, SessionRecord, Store, StoreError, Target, UserRecord,
    WatermarkUpdate,
};
use crate::id;

mod accounts;
mod changes;
mod groups;

/// Runs every check against `store`; panics with the first rule broken.
pub async fn run_all(store: &dyn Store) {
    accounts::users_are_unique_by_canonical_username(store).await;
    accounts::users_are_found_by_username_prefix(store).await;
    accounts::sessions_are_listed_extended_and_revoked_by_their_user_only(store).await;
    accounts::a_deleted_account_is_gone_but_what_others_received_stays(store).await;
    seqs_are_dense_per_conversation_and_start_at_one(store).await;
    appending_the_same_client_msg_id_returns_the_original(store).await;
    unknown_recipients_are_rejected_and_nothing_is_stored(store).await;
    watermarks_only_move_forward_and_read_implies_delivered(store).await;
    sending_moves_the_senders_read_watermark(store).await;
    history_pages_are_ascending_without_gaps(store).await;
    own_messages_carry_a_status_from_the_peers_watermarks(store).await;
    chat_list_is_ordered_by_activity_with_unread_counts(store).await;
    groups::groups_have_one_admin_and_bounded_membership(store).await;
    groups::group_messages_are_for_current_members_only(store).await;
    groups::removed_members_keep_their_past_and_see_nothing_later(store).await;
    groups::a_member_added_back_keeps_their_earlier_window(store).await;
    groups::the_last_admin_leaving_promotes_the_oldest_member(store).await;
    groups::group_status_needs_every_member_at_the_time_of_sending(store).await;
    media_is_readable_by_its_uploader_and_by_members_who_saw_it(store).await;
    changes::replies_quote_the_original_as_it_was(store).await;
    changes::only_the_sender_edits_text_within_the_window(store).await;
    changes::a_deleted_message_loses_text_media_quotes_and_reactions(store).await;
    changes::shared_media_is_removed_with_its_last_message_and_the_removal_is_recorded(store).await;
    changes::one_reaction_per_member_changeable_and_removable(store).await;
    changes::blocks_stop_direct_sends_both_ways_until_lifted(store).await;
    changes::presence_is_for_shared_chats_unless_hidden_or_blocked(store).await;
    a_newer_claim_fences_out_the_older_holder(store).await;
    the_resume_point_only_moves_forward_and_resets_with_a_new_log(store).await;
}

/// A partition number no other check (or concurrent run) uses.
fn fresh_partition() -> u32 {
    let hex = &id::new_user_id()[1..8];
    1_000_000 + u32::from_str_radix(hex, 16).unwrap_or(7) % 1_000_000_000
}

async fn a_newer_claim_fences_out_the_older_holder(store: &dyn Store) {
    let (a, b) = (user(store, "fence").await, user(store, "fence").await);
    let p = fresh_partition();
    let first = store
        .claim_partition(p, "holder-1", "log-1")
        .await
        .expect("claim");
    assert_eq!(first.partition, p);
    assert_eq!(
        first.resume_after, 0,
        "a first claim starts at the beginning"
    );
    let fence = |epoch, done_through| Fence {
        partition: p,
        epoch,
        done_through,
    };
    let out = store
        .apply_batch(
            Some(fence(first.epoch, 0)),
            vec![direct(&a, &b, "f1", "one")],
        )
        .await
        .expect("the holder's batch commits");
    assert_eq!(stored_seq(&out[0]), 1);

    let second = store
        .claim_partition(p, "holder-2", "log-1")
        .await
        .expect("claim");
    assert!(second.epoch > first.epoch, "claims are numbered upwards");
    // The old holder (paused, cut off) tries to commit: nothing is written.
    match store
        .apply_batch(
            Some(fence(first.epoch, 5)),
            vec![direct(&a, &b, "f2", "from the past")],
        )
        .await
    {
        Err(StoreError::Fenced { partition, .. }) => assert_eq!(partition, p),
        other => panic!("a stale fence must be refused, got {other:?}"),
    }
    let conv = id::direct_conversation_id(&a.user_id, &b.user_id);
    let page = store
        .history(
            &conv,
            &a.user_id,
            Page {
                limit: 10,
                ..Page::default()
            },
        )
        .await
        .expect("history");
    let cmids: Vec<&str> = page
        .messages
        .iter()
        .map(|v| v.message.client_msg_id.as_str())
        .collect();
    assert_eq!(cmids, ["f1"], "the fenced batch left nothing");
    assert_eq!(
        store
            .message_by_client_id(&a.user_id, "f2")
            .await
            .expect("lookup"),
        None
    );
    // The new holder's batch commits, and gets the next seq.
    let out = store
        .apply_batch(
            Some(fence(second.epoch, 0)),
            vec![direct(&a, &b, "f3", "now")],
        )
        .await
        .expect("the new holder commits");
    assert_eq!(stored_seq(&out[0]), 2);
    // Unfenced batches (tools, tests) are not affected by claims.
    let out = store
        .apply(vec![direct(&b, &a, "f4", "plain")])
        .await
        .expect("unfenced");
    assert_eq!(stored_seq(&out[0]), 3);
}

async fn the_resume_point_only_moves_forward_and_resets_with_a_new_log(store: &dyn Store) {
    let (a, b) = (user(store, "resume").await, user(store, "resume").await);
    let p = fresh_partition();
    let c = store.claim_partition(p, "h", "log-A").await.expect("claim");
    let fence = |epoch, done_through| Fence {
        partition: p,
        epoch,
        done_through,
    };
    store
        .apply_batch(Some(fence(c.epoch, 40)), vec![direct(&a, &b, "r1", "x")])
        .await
        .expect("apply");
    // A batch recording an older point does not move it back.
    store
        .apply_batch(Some(fence(c.epoch, 30)), vec![direct(&a, &b, "r2", "y")])
        .await
        .expect("apply");
    let c2 = store
        .claim_partition(p, "h2", "log-A")
        .await
        .expect("claim");
    assert_eq!(
        c2.resume_after, 40,
        "resume after the furthest point recorded"
    );
    // The command stream was re-created: its positions start again.
    let c3 = store
        .claim_partition(p, "h3", "log-B")
        .await
        .expect("claim");
    assert_eq!(c3.resume_after, 0);
    assert!(c3.epoch > c2.epoch);
    // A fenced batch records nothing either.
    let _ = store.apply_batch(Some(fence(c2.epoch, 99)), vec![]).await;
    let c4 = store
        .claim_partition(p, "h4", "log-B")
        .await
        .expect("claim");
    assert_eq!(c4.resume_after, 0);
}

async fn media_is_readable_by_its_uploader_and_by_members_who_saw_it(store: &dyn Store) {
    let a = user(store, "md").await;
    let b = user(store, "md").await;
    let eve = user(store, "md").await;
    let media = MediaRecord {
        media_id: format!("md{}", &id::new_user_id()[1..]),
        uploader_id: a.user_id.clone(),
        content_type: "image/png".to_owned(),
        size: 42,
        sha256: "ab".repeat(32),
        has_thumbnail: false,
        created_at_ms: 1,
    };
    store
        .create_media(media.clone())
        .await
        .expect("create media");
    assert!(matches!(
        store.create_media(media.clone()).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store
            .media_for(&media.media_id, &a.user_id)
            .await
            .expect("m")
            .as_ref(),
        Some(&media)
    );
    assert_eq!(
        store
            .media_for(&media.media_id, &b.user_id)
            .await
            .expect("m"),
        None,
        "not sent yet"
    );

    // Eve cannot send media she may not read.
    let mut op = direct(&eve, &b, "steal", "look");
    if let Op::Append(m) = &mut op {
        m.media_id = Some(media.media_id.clone());
    }
    assert_eq!(
        store.apply(vec![op]).await.expect("apply"),
        vec![OpOutcome::Rejected(Rejection::UnknownMedia)]
    );

    let mut op = direct(&a, &b, "pic", "a picture");
    if let Op::Append(m) = &mut op {
        m.media_id = Some(media.media_id.clone());
    }
    let out = store.apply(vec![op]).await.expect("apply");
    let OpOutcome::Stored(stored) = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(stored.media.as_ref(), Some(&media));
    assert!(
        store
            .media_for(&media.media_id, &b.user_id)
            .await
            .expect("m")
            .is_some(),
        "the recipient may read it"
    );
    assert_eq!(
        store
            .media_for(&media.media_id, &eve.user_id)
            .await
            .expect("m"),
        None
    );
    store.set_thumbnail(&media.media_id).await.expect("thumb");
    let conv = id::direct_conversation_id(&a.user_id, &b.user_id);
    let h = store
        .history(
            &conv,
            &b.user_id,
            Page {
                limit: 10,
                ..Page::default()
            },
        )
        .await
        .expect("h");
    let shown = h.messages[0]
        .message
        .media
        .as_ref()
        .expect("media in history");
    assert!(shown.has_thumbnail);
    assert_eq!(
        store.media_for("md-unknown", &a.user_id).await.expect("m"),
        None
    );
}

async fn user(store: &dyn Store, name_prefix: &str) -> UserRecord {
    let u = UserRecord {
        user_id: id::new_user_id(),
        username: format!("{name_prefix}{}", &id::new_user_id()[1..9]),
        display_name: format!("{name_prefix} display"),
        password_hash: "$argon2id$fake".to_owned(),
        created_at_ms: crate::time::now_ms(),
    };
    store.create_user(u.clone()).await.expect("create user");
    u
}

fn direct(from: &UserRecord, to: &UserRecord, cmid: &str, text: &str) -> Op {
    Op::Append(NewMessage {
        conversation_id: id::direct_conversation_id(&from.user_id, &to.user_id),
        message_id: id::new_message_id(),
        sender_id: from.user_id.clone(),
        client_msg_id: cmid.to_owned(),
        target: Target::User(to.user_id.clone()),
        text: Some(text.to_owned()),
        media_id: None,
        sent_at_ms: crate::time::now_ms(),
        reply_to_seq: None,
    })
}

fn receipt(conv: &str, who: &UserRecord, kind: ReceiptKind, up_to: u64) -> Op {
    Op::Receipt(WatermarkUpdate {
        conversation_id: conv.to_owned(),
        user_id: who.user_id.clone(),
        kind,
        up_to_seq: up_to,
        at_ms: crate::time::now_ms(),
    })
}

fn stored_seq(o: &OpOutcome) -> u64 {
    match o {
        OpOutcome::Stored(m) => m.seq,
        other => panic!("expected Stored, got {other:?}"),
    }
}

async fn seqs_are_dense_per_conversation_and_start_at_one(store: &dyn Store) {
    let a = user(store, "dense").await;
    let b = user(store, "dense").await;
    let c = user(store, "dense").await;
    // Two conversations interleaved in one batch, then a second batch.
    let ops = vec![
        direct(&a, &b, "1", "ab1"),
        direct(&a, &c, "2", "ac1"),
        direct(&b, &a, "3", "ba2"),
        direct(&a, &b, "4", "ab3"),
    ];
    let out = store.apply(ops).await.expect("apply");
    let seqs: Vec<u64> = out.iter().map(stored_seq).collect();
    assert_eq!(seqs, vec![1, 1, 2, 3]);
    let out = store
        .apply(vec![direct(&b, &a, "5", "ba4")])
        .await
        .expect("apply");
    assert_eq!(stored_seq(&out[0]), 4);
}

async fn appending_the_same_client_msg_id_returns_the_original(store: &dyn Store) {
    let a = user(store, "idem").await;
    let b = user(store, "idem").await;
    let first = store
        .apply(vec![direct(&a, &b, "same", "hello")])
        .await
        .expect("apply");
    let OpOutcome::Stored(original) = &first[0] else {
        panic!("not stored: {first:?}")
    };
    // Again in a later batch, and twice within one batch.
    let again = store
        .apply(vec![
            direct(&a, &b, "same", "hello"),
            direct(&a, &b, "same", "hello"),
        ])
        .await
        .expect("apply");
    for o in &again {
        assert_eq!(o, &OpOutcome::Duplicate(original.clone()));
    }
    let conv = id::direct_conversation_id(&a.user_id, &b.user_id);
    let page = store
        .history(
            &conv,
            &a.user_id,
            Page {
                limit: 50,
                ..Page::default()
            },
        )
        .await
        .expect("history");
    assert_eq!(page.messages.len(), 1, "one copy only");
    let by_cmid = store
        .message_by_client_id(&a.user_id, "same")
        .await
        .expect("lookup");
    assert_eq!(by_cmid.as_ref(), Some(original));
    assert_eq!(
        store
            .message_by_client_id(&b.user_id, "same")
            .await
            .expect("lookup"),
        None
    );
}

async fn unknown_recipients_are_rejected_and_nothing_is_stored(store: &dyn Store) {
    let a = user(store, "rej").await;
    let ghost = UserRecord {
        user_id: id::new_user_id(),
        ..a.clone()
    };
    let out = store
        .apply(vec![direct(&a, &ghost, "x", "hi")])
        .await
        .expect("apply");
    assert_eq!(out, vec![OpOutcome::Rejected(Rejection::UnknownRecipient)]);
    assert_eq!(
        store
            .message_by_client_id(&a.user_id, "x")
            .await
            .expect("lookup"),
        None
    );
    let chats = store.chats(&a.user_id, 50, None).await.expect("chats");
    assert!(chats.chats.is_empty(), "no conversation was created");
    // A receipt in a conversation that does not exist moves nothing.
    let conv = id::direct_conversation_id(&a.user_id, &ghost.user_id);
    let out = store
        .apply(vec![receipt(&conv, &a, ReceiptKind::Read, 3)])
        .await
        .expect("apply");
    assert!(matches!(out[0], OpOutcome::Rejected(_)), "{out:?}");
}

async fn watermarks_only_move_forward_and_read_implies_delivered(store: &dyn Store) {
    let a = user(store, "wm").await;
    let b = user(store, "wm").await;
    let stranger = user(store, "wm").await;
    let conv = id::direct_conversation_id(&a.user_id, &b.user_id);
    let ops = (0..5)
        .map(|i| direct(&a, &b, &format!("w{i}"), "m"))
        .collect();
    store.apply(ops).await.expect("apply");

    let out = store
        .apply(vec![
            receipt(&conv, &b, ReceiptKind::Delivered, 3),
            receipt(&conv, &b, ReceiptKind::Delivered, 2),
            receipt(&conv, &b, ReceiptKind::Read, 4),
            receipt(&conv, &b, ReceiptKind::Delivered, 4),
            receipt(&conv, &b, ReceiptKind::Read, 99),
            receipt(&conv, &stranger, ReceiptKind::Read, 1),
        ])
        .await
        .expect("apply");
    assert!(
        matches!(
            out[0],
            OpOutcome::Advanced {
                delivered: Some(3),
                read: None,
                ..
            }
        ),
        "{out:?}"
    );
    assert_eq!(
        out[1],
        OpOutcome::Unchanged,
        "a lower watermark never moves one back"
    );
    assert!(matches!(
        out[2],
        OpOutcome::Advanced {
            delivered: Some(4),
            read: Some(4),
            ..
        }
    ));
    assert_eq!(out[3], OpOutcome::Unchanged);
    // Clamped to the last seq that exists.
    assert!(matches!(
        out[4],
        OpOutcome::Advanced {
            delivered: Some(5),
            read: Some(5),
            ..
        }
    ));
    assert_eq!(out[5], OpOutcome::Rejected(Rejection::NotMember));

    let members = store.members(&conv).await.expect("members");
    let mb = members
        .iter()
        .find(|m| m.user_id == b.user_id)
        .expect("b is a member");
    assert_eq!((mb.delivered_seq, mb.read_seq), (5, 5));
    assert!(store.is_member(&conv, &a.user_id).await.expect("is_member"));
    assert!(!store
        .is_member(&conv, &stranger.user_id)
        .await
        .expect("is_member"));
}

async fn sending_moves_the_senders_read_watermark(store: &dyn Store) {
    let a = user(store, "own").await;
    let b = user(store, "own").await;
    let conv = id::direct_conversation_id(&a.user_id, &b.user_id);
    store
        .apply(vec![
            direct(&b, &a, "1", "x"),
            direct(&b, &a, "2", "y"),
            direct(&a, &b, "3", "z"),
        ])
        .await
        .expect("apply");
    let members = store.members(&conv).await.expect("members");
    let ma = members.iter().find(|m| m.user_id == a.user_id).expect("a");
    assert_eq!(ma.read_seq, 3, "replying reads what came before");
    let mb = members.iter().find(|m| m.user_id == b.user_id).expect("b");
    assert_eq!(mb.read_seq, 2);
}

async fn history_pages_are_ascending_without_gaps(store: &dyn Store) {
    let a = user(store, "hist").await;
    let b = user(store, "hist").await;
    let conv = id::direct_conversation_id(&a.user_id, &b.user_id);
    let ops = (1..=25)
        .map(|i| direct(&a, &b, &format!("h{i}"), &format!("t{i}")))
        .collect();
    store.apply(ops).await.expect("apply");
    let seqs =
        |p: &super::HistoryPage| p.messages.iter().map(|m| m.message.seq).collect::<Vec<_>>();

    let latest = store
        .history(
            &conv,
            &b.user_id,
            Page {
                limit: 10,
                ..Page::default()
            },
        )
        .await
        .expect("h");
    assert_eq!(
        seqs(&latest),
        (16..=25).collect::<Vec<_>>(),
        "no bound: the latest page"
    );
    assert!(latest.has_more);
    let older = store
        .history(
            &conv,
            &b.user_id,
            Page {
                limit: 10,
                before: Some(16),
                after: None,
            },
        )
        .await
        .expect("h");
    assert_eq!(seqs(&older), (6..=15).collect::<Vec<_>>());
    assert!(older.has_more);
    let oldest = store
        .history(
            &conv,
            &b.user_id,
            Page {
                limit: 10,
                before: Some(6),
                after: None,
            },
        )
        .await
        .expect("h");
    assert_eq!(seqs(&oldest), (1..=5).collect::<Vec<_>>());
    assert!(!oldest.has_more);
    let newer = store
        .history(
            &conv,
            &b.user_id,
            Page {
                limit: 10,
                before: None,
                after: Some(20),
            },
        )
        .await
        .expect("h");
    assert_eq!(seqs(&newer), (21..=25).collect::<Vec<_>>());
    assert!(!newer.has_more);
    let from_start = store
        .history(
            &conv,
            &b.user_id,
            Page {
                limit: 10,
                before: None,
                after: Some(0),
            },
        )
        .await
        .expect("h");
    assert_eq!(seqs(&from_start), (1..=10).collect::<Vec<_>>());
    assert!(from_start.has_more);
    assert_eq!(from_start.messages[0].message.text.as_deref(), Some("t1"));
    assert_eq!(from_start.messages[0].status, None, "b did not send these");
}

async fn own_messages_carry_a_status_from_the_peers_watermarks(store: &dyn Store) {
    let a = user(store, "st").await;
    let b = user(store, "st").await;
    let conv = id::direct_conversation_id(&a.user_id, &b.user_id);
    let ops = (1..=3)
        .map(|i| direct(&a, &b, &format!("s{i}"), "x"))
        .collect();
    store.apply(ops).await.expect("apply");
    store
        .apply(vec![
            receipt(&conv, &b, ReceiptKind::Delivered, 2),
            receipt(&conv, &b, ReceiptKind::Read, 1),
        ])
        .await
        .expect("apply");
    let page = store
        .history(
            &conv,
            &a.user_id,
            Page {
                limit: 50,
                ..Page::default()
            },
        )
        .await
        .expect("h");
    let statuses: Vec<_> = page.messages.iter().map(|m| m.status).collect();
    assert_eq!(
        statuses,
        vec![
            Some(MessageStatus::Read),
            Some(MessageStatus::Delivered),
            Some(MessageStatus::Sent)
        ]
    );
}

async fn chat_list_is_ordered_by_activity_with_unread_counts(store: &dyn Store) {
    let me = user(store, "chat").await;
    let p1 = user(store, "chat").await;
    let p2 = user(store, "chat").await;
    let p3 = user(store, "chat").await;
    store
        .apply(vec![direct(&p1, &me, "1", "from p1")])
        .await
        .expect("apply");
    store
        .apply(vec![
            direct(&p2, &me, "1", "from p2"),
            direct(&p2, &me, "2", "again"),
        ])
        .await
        .expect("apply");
    // Activity timestamps are milliseconds: keep the next one strictly later.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    store
        .apply(vec![direct(&me, &p3, "1", "to p3")])
        .await
        .expect("apply");

    let page = store.chats(&me.user_id, 50, None).await.expect("chats");
    let peers: Vec<_> = page
        .chats
        .iter()
        .map(|c| c.peer_id.clone().expect("direct"))
        .collect();
    assert_eq!(peers[0], p3.user_id, "latest activity first");
    assert_eq!(peers.len(), 3);
    let c2 = page
        .chats
        .iter()
        .find(|c| c.peer_id.as_deref() == Some(&p2.user_id))
        .expect("p2");
    assert_eq!((c2.last_seq, c2.unread_count), (2, 2));
    assert_eq!(c2.kind, ConversationKind::Direct);
    assert_eq!(c2.title, p2.display_name);
    assert_eq!(
        c2.last_message
            .as_ref()
            .and_then(|m| m.message.text.as_deref()),
        Some("again")
    );
    let c3 = &page.chats[0];
    assert_eq!(c3.unread_count, 0, "own messages are read");
    assert_eq!(
        c3.last_message.as_ref().and_then(|m| m.status),
        Some(MessageStatus::Sent)
    );

    // Cursor paging walks the same list without repeats.
    let first = store.chats(&me.user_id, 2, None).await.expect("chats");
    assert_eq!(first.chats.len(), 2);
    let cursor = first.next_cursor.clone().expect("more pages");
    let second = store
        .chats(&me.user_id, 2, Some(&cursor))
        .await
        .expect("chats");
    assert_eq!(second.chats.len(), 1);
    assert_eq!(second.next_cursor, None);
    let mut all: Vec<_> = first
        .chats
        .iter()
        .chain(&second.chats)
        .map(|c| c.conversation_id.clone())
        .collect();
    all.dedup();
    assert_eq!(
        all,
        page.chats
            .iter()
            .map(|c| c.conversation_id.clone())
            .collect::<Vec<_>>()
    );

    // A malformed cursor is refused, not read as the start of some other list.
    assert!(
        matches!(
            store.chats(&me.user_id, 2, Some("garbage")).await,
            Err(StoreError::NotFound)
        ),
        "a malformed cursor is NotFound"
    );
}
