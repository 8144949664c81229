//! Groups: one admin, bounded membership, membership windows, group status.
use super::*;

pub(super) fn to_group(from: &UserRecord, group: &str, cmid: &str) -> Op {
    Op::Append(NewMessage {
        conversation_id: group.to_owned(),
        message_id: id::new_message_id(),
        sender_id: from.user_id.clone(),
        client_msg_id: cmid.to_owned(),
        target: Target::Group(group.to_owned()),
        text: Some(format!("text of {cmid}")),
        media_id: None,
        sent_at_ms: crate::time::now_ms(),
        reply_to_seq: None,
    })
}

pub(super) async fn group_of(
    store: &dyn Store,
    admin: &UserRecord,
    members: &[&UserRecord],
) -> String {
    let g = id::new_group_id();
    let ids: Vec<String> = members.iter().map(|m| m.user_id.clone()).collect();
    store
        .create_group(
            &g,
            "the group",
            &admin.user_id,
            &ids,
            1024,
            crate::time::now_ms(),
        )
        .await
        .expect("create group");
    g
}

pub(super) async fn groups_have_one_admin_and_bounded_membership(store: &dyn Store) {
    let a = user(store, "grp").await;
    let b = user(store, "grp").await;
    let c = user(store, "grp").await;
    let g = id::new_group_id();
    // The creator listed among members counts once.
    let members = vec![
        b.user_id.clone(),
        c.user_id.clone(),
        a.user_id.clone(),
        b.user_id.clone(),
    ];
    let info = store
        .create_group(&g, "Trip", &a.user_id, &members, 1024, 1)
        .await
        .expect("create");
    assert_eq!(info.name, "Trip");
    assert_eq!(info.members.len(), 3);
    let role = |u: &UserRecord| {
        info.members
            .iter()
            .find(|m| m.user_id == u.user_id)
            .map(|m| m.role)
    };
    assert_eq!(role(&a), Some(GroupRole::Admin));
    assert_eq!(
        (role(&b), role(&c)),
        (Some(GroupRole::Member), Some(GroupRole::Member))
    );
    assert_eq!(store.group(&g).await.expect("group").as_ref(), Some(&info));
    assert_eq!(store.group(&id::new_group_id()).await.expect("group"), None);

    let ghost = id::new_user_id();
    let err = store
        .create_group(
            &id::new_group_id(),
            "x",
            &a.user_id,
            std::slice::from_ref(&ghost),
            1024,
            1,
        )
        .await;
    assert!(matches!(err, Err(GroupError::UnknownUser(u)) if u == ghost));
    let err = store
        .create_group(&id::new_group_id(), "x", &a.user_id, &members, 2, 1)
        .await;
    assert!(matches!(err, Err(GroupError::TooManyMembers(2))));
    let d = user(store, "grp").await;
    let err = store.add_member(&g, &a.user_id, &d.user_id, 3, 2).await;
    assert!(matches!(err, Err(GroupError::TooManyMembers(3))));
    let err = store.add_member(&g, &b.user_id, &d.user_id, 1024, 2).await;
    assert!(
        matches!(err, Err(GroupError::NotAdmin)),
        "members cannot add"
    );
    let err = store.add_member(&g, &d.user_id, &d.user_id, 1024, 2).await;
    assert!(matches!(err, Err(GroupError::NotMember)));
    let err = store
        .add_member(&id::new_group_id(), &a.user_id, &d.user_id, 1024, 2)
        .await;
    assert!(matches!(err, Err(GroupError::NotFound)));
    let again = store
        .add_member(&g, &a.user_id, &b.user_id, 1024, 2)
        .await
        .expect("idempotent");
    assert!(!again.changed);
    let err = store.remove_member(&g, &b.user_id, &c.user_id, 3).await;
    assert!(
        matches!(err, Err(GroupError::NotAdmin)),
        "members cannot remove others"
    );
}

pub(super) async fn group_messages_are_for_current_members_only(store: &dyn Store) {
    let a = user(store, "gm").await;
    let b = user(store, "gm").await;
    let outsider = user(store, "gm").await;
    let g = group_of(store, &a, &[&b]).await;
    let out = store
        .apply(vec![
            to_group(&a, &g, "1"),
            to_group(&b, &g, "2"),
            to_group(&outsider, &g, "3"),
        ])
        .await
        .expect("apply");
    assert_eq!((stored_seq(&out[0]), stored_seq(&out[1])), (1, 2));
    assert_eq!(out[2], OpOutcome::Rejected(Rejection::NotMember));
    // A group message naming another conversation is refused.
    let mut wrong = to_group(&a, &g, "4");
    if let Op::Append(m) = &mut wrong {
        m.conversation_id = id::new_group_id();
    }
    assert!(matches!(
        store.apply(vec![wrong]).await.expect("apply")[0],
        OpOutcome::Rejected(_)
    ));
    let chats = store.chats(&b.user_id, 10, None).await.expect("chats");
    let entry = chats
        .chats
        .iter()
        .find(|c| c.conversation_id == g)
        .expect("group in chat list");
    assert_eq!(
        (entry.kind, entry.group_id.as_deref(), entry.title.as_str()),
        (ConversationKind::Group, Some(g.as_str()), "the group")
    );
    assert_eq!((entry.last_seq, entry.unread_count), (2, 0));
    let history = store
        .history(
            &g,
            &outsider.user_id,
            Page {
                limit: 50,
                ..Page::default()
            },
        )
        .await
        .expect("h");
    assert!(history.messages.is_empty(), "outsiders see nothing");
}

pub(super) async fn removed_members_keep_their_past_and_see_nothing_later(store: &dyn Store) {
    let a = user(store, "rm").await;
    let b = user(store, "rm").await;
    let late = user(store, "rm").await;
    let g = group_of(store, &a, &[&b]).await;
    store
        .apply(vec![to_group(&a, &g, "1"), to_group(&a, &g, "2")])
        .await
        .expect("apply");
    let change = store
        .remove_member(&g, &a.user_id, &b.user_id, 5)
        .await
        .expect("remove");
    assert!(change.group.members.iter().all(|m| m.user_id != b.user_id));
    let out = store
        .apply(vec![
            to_group(&a, &g, "3"),
            to_group(&b, &g, "from-removed"),
            receipt(&g, &b, ReceiptKind::Read, 3),
        ])
        .await
        .expect("apply");
    assert_eq!(stored_seq(&out[0]), 3);
    assert_eq!(out[1], OpOutcome::Rejected(Rejection::NotMember));
    assert_eq!(out[2], OpOutcome::Rejected(Rejection::NotMember));
    assert!(!store.is_member(&g, &b.user_id).await.expect("is_member"));
    let page = Page {
        limit: 50,
        ..Page::default()
    };
    let seen: Vec<u64> = store
        .history(&g, &b.user_id, page)
        .await
        .expect("h")
        .messages
        .iter()
        .map(|m| m.message.seq)
        .collect();
    assert_eq!(seen, vec![1, 2], "they keep what they saw, nothing later");
    let after: Vec<u64> = store
        .history(
            &g,
            &b.user_id,
            Page {
                limit: 50,
                before: None,
                after: Some(1),
            },
        )
        .await
        .expect("h")
        .messages
        .iter()
        .map(|m| m.message.seq)
        .collect();
    assert_eq!(after, vec![2]);
    assert!(store
        .chats(&b.user_id, 10, None)
        .await
        .expect("chats")
        .chats
        .iter()
        .all(|c| c.conversation_id != g));

    // A member added later sees from their joining on, with nothing unread.
    store
        .add_member(&g, &a.user_id, &late.user_id, 1024, 6)
        .await
        .expect("add");
    store
        .apply(vec![to_group(&a, &g, "4")])
        .await
        .expect("apply");
    let seen: Vec<u64> = store
        .history(&g, &late.user_id, page)
        .await
        .expect("h")
        .messages
        .iter()
        .map(|m| m.message.seq)
        .collect();
    assert_eq!(seen, vec![4]);
    let entry = store
        .chats(&late.user_id, 10, None)
        .await
        .expect("chats")
        .chats
        .into_iter()
        .find(|c| c.conversation_id == g)
        .expect("listed");
    assert_eq!(entry.unread_count, 1);
    // The members list keeps who was there when (fan-out and receipts use it).
    let members = store.members(&g).await.expect("members");
    let b_state = members.iter().find(|m| m.user_id == b.user_id).expect("b");
    assert!(b_state.saw(2) && !b_state.saw(3));
    let late_state = members
        .iter()
        .find(|m| m.user_id == late.user_id)
        .expect("late");
    assert!(!late_state.saw(3) && late_state.saw(4));
}

pub(super) async fn the_last_admin_leaving_promotes_the_oldest_member(store: &dyn Store) {
    let a = user(store, "adm").await;
    let b = user(store, "adm").await;
    let c = user(store, "adm").await;
    let g = group_of(store, &a, &[&b]).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    store
        .add_member(&g, &a.user_id, &c.user_id, 1024, crate::time::now_ms())
        .await
        .expect("add");
    let change = store
        .remove_member(&g, &a.user_id, &a.user_id, 9)
        .await
        .expect("leave");
    assert_eq!(
        change.promoted.as_deref(),
        Some(b.user_id.as_str()),
        "the oldest member"
    );
    let info = store.group(&g).await.expect("group").expect("exists");
    let admins: Vec<_> = info
        .members
        .iter()
        .filter(|m| m.role == GroupRole::Admin)
        .map(|m| m.user_id.clone())
        .collect();
    assert_eq!(admins, vec![b.user_id.clone()]);
    // Anyone may leave; leaving twice is not being a member.
    store
        .remove_member(&g, &c.user_id, &c.user_id, 10)
        .await
        .expect("leave");
    assert!(matches!(
        store.remove_member(&g, &c.user_id, &c.user_id, 11).await,
        Err(GroupError::NotMember)
    ));
}

pub(super) async fn group_status_needs_every_member_at_the_time_of_sending(store: &dyn Store) {
    let a = user(store, "gs").await;
    let b = user(store, "gs").await;
    let c = user(store, "gs").await;
    let d = user(store, "gs").await;
    let g = group_of(store, &a, &[&b, &c]).await;
    store
        .apply(vec![to_group(&a, &g, "1")])
        .await
        .expect("apply");
    store
        .add_member(&g, &a.user_id, &d.user_id, 1024, 5)
        .await
        .expect("add");
    store
        .apply(vec![
            receipt(&g, &b, ReceiptKind::Read, 1),
            receipt(&g, &c, ReceiptKind::Delivered, 1),
        ])
        .await
        .expect("apply");
    let status = |h: &crate::store::HistoryPage| h.messages[0].status;
    let page = Page {
        limit: 50,
        ..Page::default()
    };
    // d joined after seq 1, so d does not count; c has not read it.
    assert_eq!(
        status(&store.history(&g, &a.user_id, page).await.expect("h")),
        Some(MessageStatus::Delivered)
    );
    store
        .apply(vec![receipt(&g, &c, ReceiptKind::Read, 1)])
        .await
        .expect("apply");
    assert_eq!(
        status(&store.history(&g, &a.user_id, page).await.expect("h")),
        Some(MessageStatus::Read)
    );
}

pub(super) async fn a_member_added_back_keeps_their_earlier_window(store: &dyn Store) {
    let (a, b) = (user(store, "back").await, user(store, "back").await);
    let g = group_of(store, &a, &[&b]).await;
    store
        .apply(vec![to_group(&a, &g, "1"), to_group(&a, &g, "2")])
        .await
        .expect("apply");
    store
        .remove_member(&g, &a.user_id, &b.user_id, 5)
        .await
        .expect("remove");
    store
        .apply(vec![to_group(&a, &g, "3"), to_group(&a, &g, "4")])
        .await
        .expect("apply");
    store
        .add_member(&g, &a.user_id, &b.user_id, 10, 6)
        .await
        .expect("add back");
    store
        .apply(vec![to_group(&a, &g, "5")])
        .await
        .expect("apply");
    let seqs = |page: super::super::HistoryPage| -> Vec<u64> {
        page.messages.iter().map(|m| m.message.seq).collect()
    };
    let all = Page {
        limit: 50,
        ..Page::default()
    };
    assert_eq!(
        seqs(store.history(&g, &b.user_id, all).await.expect("h")),
        vec![1, 2, 5],
        "both windows, not the time in between"
    );
    // Paging forward and back keeps to the windows too.
    let fwd = Page {
        limit: 2,
        before: None,
        after: Some(1),
    };
    assert_eq!(
        seqs(store.history(&g, &b.user_id, fwd).await.expect("h")),
        vec![2, 5]
    );
    let back = Page {
        limit: 1,
        before: Some(5),
        after: None,
    };
    assert_eq!(
        seqs(store.history(&g, &b.user_id, back).await.expect("h")),
        vec![2]
    );
    let members = store.members(&g).await.expect("members");
    let mb = members
        .iter()
        .find(|m| m.user_id == b.user_id)
        .expect("member");
    assert!(mb.saw(1) && mb.saw(2) && !mb.saw(3) && !mb.saw(4) && mb.saw(5));
    // Removed again: every window they had stays theirs.
    store
        .remove_member(&g, &a.user_id, &b.user_id, 7)
        .await
        .expect("remove again");
    store
        .apply(vec![to_group(&a, &g, "6")])
        .await
        .expect("apply");
    assert_eq!(
        seqs(store.history(&g, &b.user_id, all).await.expect("h")),
        vec![1, 2, 5]
    );
}
