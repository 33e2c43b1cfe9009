//! A semaphore on bytes: a batch never holds more than `BYTES_IN_FLIGHT` bytes of images at
//! once, however many messages it works on concurrently.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Bytes that may be held at once. Single-threaded, like everything in a Worker.
pub struct ByteBudget {
    limit: u64,
    held: Cell<u64>,
    waiting: RefCell<Vec<Waker>>,
}

/// Bytes held until dropped.
pub struct Permit<'a> {
    budget: &'a ByteBudget,
    bytes: u64,
}

impl ByteBudget {
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            held: Cell::new(0),
            waiting: RefCell::new(Vec::new()),
        }
    }

    /// Waits until `bytes` fit. One request larger than the whole budget proceeds alone.
    pub fn acquire(&self, bytes: u64) -> Acquire<'_> {
        Acquire {
            budget: self,
            bytes,
        }
    }
}

/// The future of [`ByteBudget::acquire`].
pub struct Acquire<'a> {
    budget: &'a ByteBudget,
    bytes: u64,
}

impl<'a> Future for Acquire<'a> {
    type Output = Permit<'a>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Permit<'a>> {
        let budget = self.budget;
        let held = budget.held.get();
        if held == 0 || held.saturating_add(self.bytes) <= budget.limit {
            budget.held.set(held.saturating_add(self.bytes));
            return Poll::Ready(Permit {
                budget,
                bytes: self.bytes,
            });
        }
        budget.waiting.borrow_mut().push(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let held = self.budget.held.get().saturating_sub(self.bytes);
        self.budget.held.set(held);
        for waker in self.budget.waiting.borrow_mut().drain(..) {
            waker.wake();
        }
    }
}
