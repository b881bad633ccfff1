//! [`HeldStream`]: a stream whose items come from a future that owns the connection they are
//! read from (a checkout, then the rows of the query run on it), so that the stream can outlive
//! the borrow `conn.fetch_many(..)` needs. No `unsafe`: the future hands each item over through
//! a shared slot and yields once.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures_core::Stream;
use futures_core::future::BoxFuture;

/// Where the producing future puts the next item.
pub(super) struct Sender<T> {
    slot: Arc<Mutex<Option<T>>>,
}

impl<T> Sender<T> {
    /// Hands `item` to the stream's consumer; resolves once it was taken.
    pub(super) async fn send(&self, item: T) {
        *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(item);
        YieldOnce(false).await;
    }
}

/// Pending once (the stream's `poll_next` then returns the item in the slot), then ready.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        // No wake-up needed: the consumer sees the item and polls again for the next one.
        self.0 = true;
        Poll::Pending
    }
}

/// The items `producer` sends, in order; ends when it returns.
pub(super) struct HeldStream<'e, T> {
    slot: Arc<Mutex<Option<T>>>,
    producer: Option<BoxFuture<'e, ()>>,
}

impl<'e, T: Send + 'e> HeldStream<'e, T> {
    /// Runs `body` as the producer, with the sender of this stream.
    pub(super) fn new<F, Fut>(body: F) -> Self
    where
        F: FnOnce(Sender<T>) -> Fut,
        Fut: Future<Output = ()> + Send + 'e,
    {
        let slot = Arc::new(Mutex::new(None));
        let sender = Sender { slot: slot.clone() };
        Self {
            slot,
            producer: Some(Box::pin(body(sender))),
        }
    }
}

impl<T> Stream for HeldStream<'_, T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let Some(producer) = self.producer.as_mut() else {
            return Poll::Ready(None);
        };
        let finished = producer.as_mut().poll(cx).is_ready();
        if finished {
            // Drops what the producer owned (the connection goes back to the pool).
            self.producer = None;
        }
        let item = self
            .slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match item {
            Some(item) => Poll::Ready(Some(item)),
            None if finished => Poll::Ready(None),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect<T>(mut stream: HeldStream<'_, T>) -> Vec<T> {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut items = Vec::new();
        loop {
            match Pin::new(&mut stream).poll_next(&mut cx) {
                Poll::Ready(Some(item)) => items.push(item),
                Poll::Ready(None) => return items,
                Poll::Pending => {}
            }
        }
    }

    #[test]
    fn items_arrive_in_order_and_the_stream_ends() {
        let owned = vec![1, 2, 3];
        let stream = HeldStream::new(|tx| async move {
            let borrowed = &owned;
            for i in borrowed {
                tx.send(*i).await;
            }
        });
        assert_eq!(collect(stream), vec![1, 2, 3]);
        let empty: HeldStream<'_, i32> = HeldStream::new(|_tx| async {});
        assert_eq!(collect(empty), Vec::<i32>::new());
    }
}
