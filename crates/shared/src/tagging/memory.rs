//! A semaphore on bytes: a tagger isolate never holds more than `BYTES_IN_FLIGHT` bytes of
//! images at once, however many messages it works on concurrently, in however many batches
//! (the tagger keeps one budget per isolate, as memory is limited per isolate). Runtime-free:
//! any single-threaded executor (a Worker's, or a test's) drives it.

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
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            held: Cell::new(0),
            waiting: RefCell::new(Vec::new()),
        }
    }

    /// Bytes held now.
    pub fn held(&self) -> u64 {
        self.held.get()
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Polls once, as an executor would after a wake-up.
    fn poll<'a>(acquire: &mut Pin<Box<Acquire<'a>>>) -> Option<Permit<'a>> {
        match acquire
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(permit) => Some(permit),
            Poll::Pending => None,
        }
    }

    #[test]
    fn a_request_that_does_not_fit_waits_for_a_release() {
        let budget = ByteBudget::new(10);
        let first = poll(&mut Box::pin(budget.acquire(6))).expect("fits");
        let mut second = Box::pin(budget.acquire(6));
        assert!(poll(&mut second).is_none(), "6 + 6 > 10");
        assert_eq!(budget.held(), 6);
        drop(first);
        assert_eq!(budget.held(), 0);
        let second = poll(&mut second).expect("fits after the release");
        assert_eq!(budget.held(), 6);
        drop(second);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn a_request_larger_than_the_budget_runs_alone() {
        let budget = ByteBudget::new(10);
        let small = poll(&mut Box::pin(budget.acquire(1))).expect("fits");
        let mut big = Box::pin(budget.acquire(50));
        assert!(poll(&mut big).is_none(), "waits while anything is held");
        drop(small);
        let big = poll(&mut big).expect("alone, it proceeds");
        assert!(
            poll(&mut Box::pin(budget.acquire(1))).is_none(),
            "nothing joins it"
        );
        drop(big);
    }

    proptest! {
        /// Whatever the sizes and the order of releases, the bytes held never exceed the
        /// budget, except for one oversized request alone, and every request is served.
        #[test]
        fn never_more_than_the_budget(
            sizes in prop::collection::vec(1u64..40, 1..20),
            order in prop::collection::vec(any::<prop::sample::Index>(), 20),
        ) {
            let budget = ByteBudget::new(32);
            let mut waiting: Vec<_> = sizes.iter().map(|&n| Box::pin(budget.acquire(n))).collect();
            let mut held: Vec<Permit> = Vec::new();
            let mut served = 0;
            let mut step = 0;
            while served < sizes.len() {
                let mut i = 0;
                while i < waiting.len() {
                    if let Some(permit) = poll(&mut waiting[i]) {
                        drop(waiting.remove(i));
                        held.push(permit);
                        served += 1;
                    } else {
                        i += 1;
                    }
                }
                let total: u64 = held.iter().map(|p| p.bytes).sum();
                prop_assert_eq!(total, budget.held());
                prop_assert!(total <= 32 || held.len() == 1, "{} bytes in {} permits", total, held.len());
                prop_assert!(!held.is_empty() || waiting.is_empty(), "nothing held, yet some wait");
                if !held.is_empty() {
                    let at = order[step % order.len()].index(held.len());
                    held.remove(at);
                }
                step += 1;
            }
            drop(held);
            prop_assert_eq!(budget.held(), 0);
        }
    }
}
