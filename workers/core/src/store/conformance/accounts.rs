//! Accounts: unique usernames, prefix search, sessions, deletion.
use super::*;

pub(super) async fn sessions_are_listed_extended_and_revoked_by_their_user_only(store: &dyn Store) {
    let (a, b) = (user(store, "sess").await, user(store, "sess").await);
    let now = 1_000_000;
    let session = |user: &UserRecord, created: i64, expires: i64| SessionRecord {
        session_id: format!("s{}", &id::new_user_id()[1..]),
        user_id: user.user_id.clone(),
        created_at_ms: created,
        expires_at_ms: expires,
        user_agent: "conformance/1".to_owned(),
    };
    let (phone, laptop, old) = (
        session(&a, now - 10, now + 100),
        session(&a, now - 5, now + 100),
        session(&a, now - 50, now - 1),
    );
    let theirs = session(&b, now - 1, now + 100);
    for s in [&phone, &laptop, &old, &theirs] {
        store.create_session(s.clone()).await.expect("create");
    }
    let listed = store.sessions(&a.user_id, now).await.expect("list");
    assert_eq!(
        listed,
        vec![laptop.clone(), phone.clone()],
        "live ones, newest first"
    );
    // Extending moves the expiry of one's own live session only.
    store
        .extend_session(&a.user_id, &phone.session_id, now, now + 500)
        .await
        .expect("extend");
    let listed = store.sessions(&a.user_id, now).await.expect("list");
    assert_eq!(listed[1].expires_at_ms, now + 500);
    for (u, s) in [(&b, &phone), (&a, &old), (&a, &theirs)] {
        assert!(
            matches!(
                store
                    .extend_session(&u.user_id, &s.session_id, now, now + 500)
                    .await,
                Err(StoreError::NotFound)
            ),
            "{} may not extend {}",
            u.username,
            s.session_id
        );
    }
    // Revoking: not another user's, one, then all that are left.
    assert!(store
        .revoke_sessions(&b.user_id, Some(&phone.session_id), now)
        .await
        .expect("revoke")
        .is_empty());
    assert_eq!(
        store
            .revoke_sessions(&a.user_id, Some(&phone.session_id), now)
            .await
            .expect("revoke"),
        vec![phone.session_id.clone()]
    );
    assert!(
        store
            .revoke_sessions(&a.user_id, Some(&phone.session_id), now)
            .await
            .expect("revoke")
            .is_empty(),
        "once"
    );
    assert!(matches!(
        store
            .extend_session(&a.user_id, &phone.session_id, now, now + 900)
            .await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        store
            .revoke_sessions(&a.user_id, None, now)
            .await
            .expect("all"),
        vec![laptop.session_id.clone()]
    );
    assert!(store
        .sessions(&a.user_id, now)
        .await
        .expect("list")
        .is_empty());
    assert_eq!(
        store.sessions(&b.user_id, now).await.expect("list"),
        vec![theirs],
        "another user's sessions are untouched"
    );
}

pub(super) async fn a_deleted_account_is_gone_but_what_others_received_stays(store: &dyn Store) {
    let (gone, stays) = (user(store, "del").await, user(store, "del").await);
    let conv = id::direct_conversation_id(&gone.user_id, &stays.user_id);
    let out = store
        .apply(vec![
            direct(&gone, &stays, "d1", "before I go"),
            direct(&stays, &gone, "d2", "bye"),
        ])
        .await
        .expect("apply");
    assert!(
        out.iter().all(|o| matches!(o, OpOutcome::Stored(_))),
        "{out:?}"
    );
    store
        .create_session(SessionRecord {
            session_id: format!("s{}", &id::new_user_id()[1..]),
            user_id: gone.user_id.clone(),
            created_at_ms: 1,
            expires_at_ms: i64::MAX,
            user_agent: String::new(),
        })
        .await
        .expect("session");
    assert!(store.delete_user(&gone.user_id).await.expect("delete"));
    assert!(
        !store.delete_user(&gone.user_id).await.expect("delete"),
        "once"
    );
    assert_eq!(
        store
            .user_by_username(&gone.username)
            .await
            .expect("by name"),
        None
    );
    assert!(store
        .users_by_ids(std::slice::from_ref(&gone.user_id))
        .await
        .expect("by id")
        .is_empty());
    assert!(store
        .sessions(&gone.user_id, 0)
        .await
        .expect("sessions")
        .is_empty());
    let prefix = &gone.username[..gone.username.len() - 2];
    assert!(!store
        .search_users(prefix, 50)
        .await
        .expect("search")
        .iter()
        .any(|u| u.user_id == gone.user_id));
    // Nobody can send to it any more; the other member keeps the history.
    let out = store
        .apply(vec![direct(&stays, &gone, "d3", "hello?")])
        .await
        .expect("apply");
    assert_eq!(out, vec![OpOutcome::Rejected(Rejection::UnknownRecipient)]);
    let h = store
        .history(
            &conv,
            &stays.user_id,
            Page {
                limit: 50,
                before: None,
                after: None,
            },
        )
        .await
        .expect("history");
    let texts: Vec<_> = h
        .messages
        .iter()
        .filter_map(|m| m.message.text.clone())
        .collect();
    assert_eq!(texts, vec!["before I go".to_owned(), "bye".to_owned()]);
    // The username is free again.
    let again = UserRecord {
        user_id: id::new_user_id(),
        ..gone.clone()
    };
    store
        .create_user(again.clone())
        .await
        .expect("the name is free");
    assert_eq!(
        store
            .user_by_username(&gone.username)
            .await
            .expect("by name"),
        Some(again)
    );
}

pub(super) async fn users_are_unique_by_canonical_username(store: &dyn Store) {
    let a = user(store, "uniq").await;
    let clash = UserRecord {
        user_id: id::new_user_id(),
        ..a.clone()
    };
    assert!(
        matches!(store.create_user(clash).await, Err(StoreError::Conflict(_))),
        "a taken username must be a conflict"
    );
    let found = store.user_by_username(&a.username).await.expect("lookup");
    assert_eq!(found.as_ref(), Some(&a));
    assert_eq!(
        store.user_by_username("nobody-here").await.expect("lookup"),
        None
    );
    let ids = vec![a.user_id.clone(), id::new_user_id()];
    let got = store.users_by_ids(&ids).await.expect("by ids");
    assert_eq!(got, vec![a]);
}

pub(super) async fn users_are_found_by_username_prefix(store: &dyn Store) {
    let a = user(store, "srch").await;
    let b = user(store, "srch").await;
    let other = user(store, "srcx").await;
    // Other tests may share the store: check membership and order, not equality.
    let got = store.search_users("srch", 1000).await.expect("search");
    assert!(
        got.iter().all(|u| u.username.starts_with("srch")),
        "{got:?}"
    );
    assert!(got.contains(&a) && got.contains(&b) && !got.contains(&other));
    assert!(
        got.windows(2).all(|w| w[0].username < w[1].username),
        "username order"
    );
    let exact = store.search_users(&a.username, 10).await.expect("search");
    assert_eq!(exact, vec![a.clone()]);
    let one = store.search_users("srch", 1).await.expect("search");
    assert_eq!(one.len(), 1, "the limit is honoured");
    assert!(store
        .search_users("zzzz-none", 10)
        .await
        .expect("search")
        .is_empty());
}
