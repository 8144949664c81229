//! The chaos suite's checker: judges a run only by what clients can read —
//! the acks and pushes they recorded, and the REST history of every
//! conversation as every member sees it — never by looking inside a server.
//!
//! Every count in [`Verdict`] except `sent`, `acked` and the stall must be 0
//! for a run to pass.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

/// One message a client sent (its first send; resends reuse the cmid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// Unique across the run.
    pub cmid: String,
    pub conversation: String,
    pub sender: String,
    /// Position in the sender's own send order (across reconnects).
    pub order: u64,
    /// The server refused it at least once (`unavailable`: the bus did not
    /// take it) and the client sent it again later: it takes its place at
    /// the resend, so it is not held to its first send's order.
    pub refused: bool,
}

/// What an `ack` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub seq: u64,
    pub message_id: String,
}

/// A message as REST history (or a push) shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub seq: u64,
    pub message_id: String,
    pub cmid: String,
    pub sender: String,
}

/// Everything the clients recorded.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub sent: Vec<Sent>,
    /// By cmid.
    pub acks: HashMap<String, Ack>,
    /// Conversation → (member, that member's whole history, ascending).
    pub histories: BTreeMap<String, Vec<(String, Vec<Seen>)>>,
    /// Conversation → pushes received by any member.
    pub pushes: BTreeMap<String, Vec<Seen>>,
}

/// The checker's counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub sent: usize,
    pub acked: usize,
    /// Acked, but missing from the sender's history.
    pub lost: usize,
    /// Extra copies of one `(sender, cmid)` in a conversation's history.
    pub duplicated: usize,
    /// Acked with a seq or message id other than the one history shows.
    pub ack_mismatch: usize,
    /// Missing or out-of-order seqs in a member's history (seqs must be 1..=N).
    pub gaps: usize,
    /// Members whose history differs from the conversation's first member's.
    pub divergent_members: usize,
    /// Sent but never acked by the end of the drain.
    pub never_acked: usize,
    /// One sender's accepted messages in a conversation stored out of send
    /// order (refused and resent ones excepted: see [`Sent::refused`]).
    pub reordered: usize,
    /// Pushes that disagree with history (another message at that seq, or
    /// a seq history does not have).
    pub push_mismatch: usize,
    /// The first few findings behind the counts, to start an investigation.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<String>,
}

impl Verdict {
    fn note(&mut self, example: String) {
        if self.examples.len() < 20 {
            self.examples.push(example);
        }
    }
}

impl Verdict {
    /// Whether every count that must be 0 is.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.failures().is_empty()
    }

    /// The counts that must be 0 but are not, by name.
    #[must_use]
    pub fn failures(&self) -> Vec<(&'static str, usize)> {
        [
            ("lost", self.lost),
            ("duplicated", self.duplicated),
            ("ack_mismatch", self.ack_mismatch),
            ("gaps", self.gaps),
            ("divergent_members", self.divergent_members),
            ("never_acked", self.never_acked),
            ("reordered", self.reordered),
            ("push_mismatch", self.push_mismatch),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect()
    }
}

/// Judges a run.
#[must_use]
pub fn check(o: &Observed) -> Verdict {
    let mut v = Verdict {
        sent: o.sent.len(),
        acked: o
            .sent
            .iter()
            .filter(|s| o.acks.contains_key(&s.cmid))
            .count(),
        ..Verdict::default()
    };
    v.never_acked = v.sent - v.acked;

    for (conv, views) in &o.histories {
        for (_, view) in views {
            // Dense 1..=N, ascending.
            for (i, m) in view.iter().enumerate() {
                if m.seq != i as u64 + 1 {
                    v.gaps += 1;
                    v.note(format!(
                        "gap: {conv} position {} holds seq {}",
                        i + 1,
                        m.seq
                    ));
                }
            }
            let mut seen = HashSet::new();
            for m in view {
                if !seen.insert((&m.sender, &m.cmid)) {
                    v.duplicated += 1;
                    v.note(format!(
                        "duplicate: {conv} {} again at seq {}",
                        m.cmid, m.seq
                    ));
                }
            }
        }
        if let Some((_, first)) = views.first() {
            let key = |h: &[Seen]| -> Vec<(u64, String)> {
                h.iter().map(|m| (m.seq, m.message_id.clone())).collect()
            };
            let reference = key(first);
            v.divergent_members += views
                .iter()
                .skip(1)
                .filter(|(_, h)| key(h) != reference)
                .count();
        }
        if let Some(pushes) = o.pushes.get(conv) {
            let by_seq: HashMap<u64, &str> = views
                .first()
                .map(|(_, h)| h.iter().map(|m| (m.seq, m.message_id.as_str())).collect())
                .unwrap_or_default();
            v.push_mismatch += pushes
                .iter()
                .filter(|p| by_seq.get(&p.seq) != Some(&p.message_id.as_str()))
                .count();
        }
    }

    // Each sent message against its sender's view of its conversation.
    let mut sender_view: HashMap<(&str, &str), HashMap<&str, &Seen>> = HashMap::new();
    for (conv, views) in &o.histories {
        for (member, view) in views {
            sender_view.insert(
                (conv.as_str(), member.as_str()),
                view.iter()
                    .filter(|m| &m.sender == member)
                    .map(|m| (m.cmid.as_str(), m))
                    .collect(),
            );
        }
    }
    // (conversation, sender) → (send order, stored seq, cmid)
    type Placed<'a> = Vec<(u64, u64, &'a str)>;
    let mut stored_in_send_order: BTreeMap<(&str, &str), Placed<'_>> = BTreeMap::new();
    for s in &o.sent {
        let stored = sender_view
            .get(&(s.conversation.as_str(), s.sender.as_str()))
            .and_then(|h| h.get(s.cmid.as_str()));
        if let Some(ack) = o.acks.get(&s.cmid) {
            match stored {
                None => {
                    v.lost += 1;
                    v.note(format!(
                        "lost: {} acked as seq {} in {}",
                        s.cmid, ack.seq, s.conversation
                    ));
                }
                Some(m) if m.seq != ack.seq || m.message_id != ack.message_id => {
                    v.ack_mismatch += 1;
                    v.note(format!(
                        "ack mismatch: {} acked as seq {}, stored at {}",
                        s.cmid, ack.seq, m.seq
                    ));
                }
                Some(_) => {}
            }
        } else {
            v.note(format!("never acked: {} in {}", s.cmid, s.conversation));
        }
        if let (Some(m), false) = (stored, s.refused) {
            stored_in_send_order
                .entry((s.conversation.as_str(), s.sender.as_str()))
                .or_default()
                .push((s.order, m.seq, s.cmid.as_str()));
        }
    }
    for ((conv, _), mut sent) in stored_in_send_order {
        sent.sort_unstable();
        for w in sent.windows(2) {
            if w[1].1 < w[0].1 {
                v.reordered += 1;
                v.note(format!(
                    "reordered in {conv}: {} (sent first) at seq {}, {} (sent next) at seq {}",
                    w[0].2, w[0].1, w[1].2, w[1].1
                ));
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two members of one conversation, three messages each way, all acked
    /// and pushed.
    fn clean() -> Observed {
        let mut o = Observed::default();
        let mut history = Vec::new();
        for (i, sender) in ["a", "b", "a", "b", "a", "b"].into_iter().enumerate() {
            let seq = i as u64 + 1;
            let cmid = format!("{sender}-{i}");
            o.sent.push(Sent {
                cmid: cmid.clone(),
                conversation: "d_a_b".to_owned(),
                sender: sender.to_owned(),
                order: seq,
                refused: false,
            });
            o.acks.insert(
                cmid.clone(),
                Ack {
                    seq,
                    message_id: format!("m{seq}"),
                },
            );
            history.push(Seen {
                seq,
                message_id: format!("m{seq}"),
                cmid,
                sender: sender.to_owned(),
            });
        }
        o.pushes.insert("d_a_b".to_owned(), history.clone());
        o.histories.insert(
            "d_a_b".to_owned(),
            vec![("a".to_owned(), history.clone()), ("b".to_owned(), history)],
        );
        o
    }

    fn views(o: &mut Observed) -> &mut Vec<(String, Vec<Seen>)> {
        o.histories.get_mut("d_a_b").expect("conversation")
    }

    #[test]
    fn a_clean_run_passes() {
        let v = check(&clean());
        assert_eq!((v.sent, v.acked), (6, 6));
        assert!(v.passed(), "{v:?}");
    }

    #[test]
    fn an_acked_message_missing_from_history_is_lost() {
        let mut o = clean();
        for (_, h) in views(&mut o) {
            h.remove(2); // seq 3, a's second message
        }
        let v = check(&o);
        assert_eq!(v.lost, 1, "{v:?}");
        assert!(v.gaps > 0, "seq 3 is missing: {v:?}");
        assert!(!v.passed());
    }

    #[test]
    fn a_stored_twice_message_is_a_duplicate() {
        let mut o = clean();
        for (_, h) in views(&mut o) {
            let mut copy = h[1].clone();
            copy.seq = 7;
            copy.message_id = "m7".to_owned();
            h.push(copy);
        }
        let v = check(&o);
        assert_eq!(v.duplicated, 2, "once in each member's view: {v:?}");
        assert!(!v.passed());
    }

    #[test]
    fn a_gap_in_the_seqs_is_found() {
        let mut o = clean();
        for (_, h) in views(&mut o) {
            for m in h.iter_mut().skip(4) {
                m.seq += 1; // 1, 2, 3, 4, 6, 7
            }
        }
        let v = check(&o);
        assert_eq!(v.gaps, 4, "two in each member's view: {v:?}");
        assert!(v.ack_mismatch > 0, "acks said 5 and 6: {v:?}");
    }

    #[test]
    fn a_refused_and_resent_message_may_land_later() {
        let mut o = clean();
        for (_, h) in views(&mut o) {
            h[0].cmid = "a-2".to_owned();
            h[2].cmid = "a-0".to_owned();
        }
        assert_eq!(check(&o).reordered, 1);
        // a-0 was refused once and resent after a-2 was sent.
        o.sent[0].refused = true;
        assert_eq!(check(&o).reordered, 0);
    }

    #[test]
    fn members_who_see_different_histories_diverge() {
        let mut o = clean();
        views(&mut o)[1].1[5].message_id = "other".to_owned();
        let v = check(&o);
        assert_eq!(v.divergent_members, 1, "{v:?}");
    }

    #[test]
    fn unacked_reordered_and_mispushed_messages_are_counted() {
        let mut o = clean();
        o.acks.remove("b-5");
        // a's first two messages stored the other way round.
        for (_, h) in views(&mut o) {
            h[0].cmid = "a-2".to_owned();
            h[2].cmid = "a-0".to_owned();
        }
        o.pushes.get_mut("d_a_b").expect("pushes")[3].message_id = "phantom".to_owned();
        let v = check(&o);
        assert_eq!(v.never_acked, 1, "{v:?}");
        assert!(v.reordered > 0, "{v:?}");
        assert_eq!(v.push_mismatch, 1, "{v:?}");
        assert!(!v.passed());
    }
}
