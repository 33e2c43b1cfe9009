//! Work that must finish even if the client goes away: run under `ctx.waitUntil`, while the
//! response still waits for its result.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context as TaskContext, Poll, Waker};

use worker::Context;

struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
}

/// The result of detached work.
pub struct Detached<T> {
    slot: Rc<RefCell<Slot<T>>>,
}

/// Runs `work` under `ctx.waitUntil`, so that a disconnect cannot cut it short, and returns
/// a future of its result for the response.
pub fn detach<T: 'static>(ctx: &Context, work: impl Future<Output = T> + 'static) -> Detached<T> {
    let slot = Rc::new(RefCell::new(Slot {
        value: None,
        waker: None,
    }));
    let shared = slot.clone();
    ctx.wait_until(async move {
        let value = work.await;
        let mut slot = shared.borrow_mut();
        slot.value = Some(value);
        if let Some(waker) = slot.waker.take() {
            waker.wake();
        }
    });
    Detached { slot }
}

impl<T> Future for Detached<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<T> {
        let mut slot = self.slot.borrow_mut();
        match slot.value.take() {
            Some(value) => Poll::Ready(value),
            None => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
