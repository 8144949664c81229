//! A connection's bounded queue of frames to write.
//!
//! Producers (the user's inbox pump, tasks awaiting JetStream acks, the
//! frame reader's obligated pongs) never wait: a full mailbox means the
//! client is not reading, so the connection is closed with 1013 and the
//! client resyncs from history. An idle mailbox allocates nothing, which
//! matters at tens of thousands of connections per edge.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use fastwebsockets::OpCode;
use tokio::sync::Notify;

/// Close code for a client that cannot keep up.
pub(super) const TRY_AGAIN_LATER: u16 = 1013;

/// Control frames (pong, close echo) queued at once before the peer counts as abusive.
const MAX_CONTROL: usize = 16;

pub(super) enum Item {
    /// An inbox event (protobuf `Delivery`), turned into a frame at write time.
    Event(Bytes),
    /// A serialized server frame.
    Frame(Vec<u8>),
}

pub(super) enum Next {
    /// A control frame the protocol obliges us to send.
    Control(OpCode, Vec<u8>),
    Item(Item),
    /// Close the connection with this code.
    Close(u16),
}

#[derive(Default)]
struct Queue {
    control: VecDeque<(OpCode, Vec<u8>)>,
    items: VecDeque<Item>,
    /// Non-zero once a close was requested.
    close: u16,
}

pub(super) struct Mailbox {
    queue: Mutex<Queue>,
    notify: Notify,
    capacity: usize,
}

impl Mailbox {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            queue: Mutex::new(Queue::default()),
            notify: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `item`; false if the connection is closing. A full mailbox
    /// closes the connection (1013) instead of growing.
    pub(super) fn push(&self, item: Item) -> bool {
        let mut q = self.lock();
        if q.close != 0 {
            return false;
        }
        if q.items.len() >= self.capacity {
            q.close = TRY_AGAIN_LATER;
            drop(q);
            metrics::counter!("msgr_edge_slow_clients_closed_total").increment(1);
            self.notify.notify_one();
            return false;
        }
        q.items.push_back(item);
        drop(q);
        self.notify.notify_one();
        true
    }

    /// Queues a control frame ahead of everything else. A pong replaces one
    /// still queued (RFC 6455 5.5.3 allows answering only the latest ping),
    /// so a burst of pings cannot fill the queue.
    pub(super) fn push_control(&self, op: OpCode, payload: Vec<u8>) -> Result<(), &'static str> {
        let mut q = self.lock();
        if op == OpCode::Pong {
            if let Some(slot) = q.control.iter_mut().find(|(o, _)| *o == OpCode::Pong) {
                slot.1 = payload;
                return Ok(());
            }
        }
        if q.control.len() >= MAX_CONTROL && op != OpCode::Close {
            return Err("too many control frames queued");
        }
        q.control.push_back((op, payload));
        drop(q);
        self.notify.notify_one();
        Ok(())
    }

    /// Asks the connection to close with `code` (the first code wins).
    pub(super) fn close(&self, code: u16) {
        let mut q = self.lock();
        if q.close == 0 {
            q.close = code;
        }
        drop(q);
        self.notify.notify_one();
    }

    /// Control frames still queued (to flush before the socket goes away).
    pub(super) fn take_control(&self) -> Vec<(OpCode, Vec<u8>)> {
        self.lock().control.drain(..).collect()
    }

    /// The next thing to write. Cancel-safe: nothing is taken from the
    /// queue unless it is returned. One consumer only.
    pub(super) async fn next(&self) -> Next {
        loop {
            {
                let mut q = self.lock();
                if let Some((op, p)) = q.control.pop_front() {
                    return Next::Control(op, p);
                }
                if q.close != 0 {
                    return Next::Close(q.close);
                }
                if let Some(item) = q.items.pop_front() {
                    return Next::Item(item);
                }
            }
            // A push between the check above and this wait leaves a permit, so
            // the wakeup is not lost.
            self.notify.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: &Next) -> Option<&[u8]> {
        match n {
            Next::Item(Item::Frame(b)) => Some(b),
            _ => None,
        }
    }

    #[tokio::test]
    async fn control_frames_jump_the_queue_and_order_is_kept() {
        let m = Mailbox::new(4);
        assert!(m.push(Item::Frame(b"a".to_vec())));
        assert!(m.push(Item::Frame(b"b".to_vec())));
        m.push_control(OpCode::Pong, b"p".to_vec())
            .expect("room for a pong");
        assert!(matches!(m.next().await, Next::Control(OpCode::Pong, _)));
        assert_eq!(text(&m.next().await), Some(&b"a"[..]));
        assert_eq!(text(&m.next().await), Some(&b"b"[..]));
    }

    #[tokio::test]
    async fn a_full_mailbox_closes_instead_of_growing() {
        let m = Mailbox::new(2);
        assert!(m.push(Item::Frame(vec![1])));
        assert!(m.push(Item::Frame(vec![2])));
        assert!(!m.push(Item::Frame(vec![3])), "the third item is refused");
        assert!(matches!(m.next().await, Next::Close(TRY_AGAIN_LATER)));
        assert!(
            !m.push(Item::Frame(vec![4])),
            "nothing is queued once closing"
        );
    }

    #[tokio::test]
    async fn a_waiting_consumer_wakes_on_push() {
        let m = std::sync::Arc::new(Mailbox::new(8));
        let m2 = std::sync::Arc::clone(&m);
        let waiter = tokio::spawn(async move { matches!(m2.next().await, Next::Item(_)) });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(m.push(Item::Event(Bytes::from_static(b"x"))));
        let got = tokio::time::timeout(std::time::Duration::from_secs(2), waiter)
            .await
            .expect("woken")
            .expect("waiter did not panic");
        assert!(got);
    }

    #[tokio::test]
    async fn a_burst_of_pings_keeps_one_pong_and_a_close_always_fits() {
        let m = Mailbox::new(1);
        for i in 0..100u8 {
            m.push_control(OpCode::Pong, vec![i])
                .expect("pongs replace each other");
        }
        m.push_control(OpCode::Close, vec![3, 232])
            .expect("a close is always queued");
        let queued = m.take_control();
        assert_eq!(queued.len(), 2);
        assert_eq!(
            queued[0],
            (OpCode::Pong, vec![99]),
            "the latest ping is answered"
        );
        assert_eq!(queued[1].0, OpCode::Close);
    }
}
