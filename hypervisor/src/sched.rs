//! Scheduling policy, free of any CPU detail.
//!
//! Each pCPU owns one run queue of the vCPUs placed on it at VM creation and
//! time-slices them round-robin with the HYP timer; a vCPU that is off,
//! blocked or whose VM has stopped is skipped. Placement puts each vCPU on
//! the least-loaded pCPU its VM's affinity allows, so a VM may have more
//! vCPUs than the board has cores.

extern crate alloc;

use crate::arch::MAX_CPUS;
use crate::platform::Platform;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

/// How one pCPU tells another (or itself) that a vCPU it owns may have
/// become runnable: a flag per pCPU, and an interrupt if it is another one.
///
/// A wake-up never preempts the running vCPU at once: the owner only makes
/// sure the running vCPU has a time slice (Linux sends IPIs while holding
/// spinlocks, the runqueue lock among them, and switching away right then
/// leaves its siblings spinning on a lock whose holder is not running). An
/// idle owner picks the woken vCPU at once.
pub struct Wakeups {
    woken: [AtomicBool; MAX_CPUS],
    platform: &'static dyn Platform,
}

impl Wakeups {
    pub fn new(platform: &'static dyn Platform) -> Self {
        Self { woken: [const { AtomicBool::new(false) }; MAX_CPUS], platform }
    }

    pub fn platform(&self) -> &'static dyn Platform {
        self.platform
    }

    /// Makes pCPU `pcpu` look at its run queue again.
    pub fn kick(&self, pcpu: u32) {
        if let Some(f) = self.woken.get(pcpu as usize) {
            f.store(true, Ordering::Release);
            if pcpu != self.platform.this_cpu() {
                self.platform.interrupt(pcpu);
            }
        }
    }

    /// Has pCPU `pcpu` been kicked since it last took its flag?
    pub fn pending(&self, pcpu: usize) -> bool {
        self.woken[pcpu].load(Ordering::Acquire)
    }

    /// pCPU `pcpu`'s own flag, for its loop to look at after every exit.
    pub fn flag(&self, pcpu: usize) -> WokenFlag<'_> {
        WokenFlag(&self.woken[pcpu])
    }

    pub fn clear(&self, pcpu: usize) {
        self.woken[pcpu].store(false, Ordering::Release);
    }
}

/// One pCPU's wake-up flag (see [`Wakeups::flag`]).
#[derive(Clone, Copy)]
pub struct WokenFlag<'a>(&'a AtomicBool);

impl WokenFlag<'_> {
    /// Takes the flag. A plain load first: the swap is an exclusive-access
    /// loop, and most exits (every hypercall) find nothing.
    #[inline(always)]
    pub fn take(self) -> bool {
        self.0.load(Ordering::Relaxed) && self.0.swap(false, Ordering::AcqRel)
    }
}

/// Round-robin queue of the items (vCPU slots) a pCPU owns. Items are owned:
/// the queue is where a vCPU's saved context lives, so whoever holds the
/// queue holds the only way to reach it.
pub struct RunQueue<T> {
    items: Vec<T>,
    /// The most items it may hold (set at creation; pushing never allocates
    /// past it, so the hot path never allocates).
    capacity: usize,
    /// Index to start the next search from.
    next: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub struct QueueFull;

impl<T> RunQueue<T> {
    pub fn with_capacity(capacity: usize) -> Self {
        Self { items: Vec::with_capacity(capacity), capacity, next: 0 }
    }

    pub fn push(&mut self, item: T) -> Result<(), QueueFull> {
        if self.items.len() == self.capacity {
            return Err(QueueFull);
        }
        self.items.push(item);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> + Clone + '_ {
        self.items.iter()
    }

    pub fn get(&self, i: usize) -> Option<&T> {
        self.items.get(i)
    }

    pub fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.items.get_mut(i)
    }

    /// The index of the next runnable item after the one picked last,
    /// wrapping around; the last one picked comes again only if nothing else
    /// can run.
    pub fn pick(&mut self, mut runnable: impl FnMut(usize, &T) -> bool) -> Option<usize> {
        let len = self.items.len();
        // Wrapping by comparison: `%` is a library call on this target
        // (armv7a-none-eabi assumes no divide instruction).
        let mut i = self.next;
        for _ in 0..len {
            if i >= len {
                i = 0;
            }
            if runnable(i, &self.items[i]) {
                self.next = if i + 1 == len { 0 } else { i + 1 };
                return Some(i);
            }
            i += 1;
        }
        None
    }

    /// Item `i` mutably and every other item beside it, so the running
    /// vCPU's context and the rest of the queue can be used at once without
    /// two mutable paths to the same item. Panics if `i` is out of range (a
    /// hypervisor bug: indices come from [`RunQueue::pick`]).
    pub fn split(&mut self, i: usize) -> (&mut T, Others<'_, T>) {
        let (before, rest) = self.items.split_at_mut(i);
        let (me, after) = rest.split_first_mut().expect("run queue index from pick");
        (me, Others { before, skip: i, after })
    }
}

/// The items of a queue other than the one [`RunQueue::split`] took.
pub struct Others<'a, T> {
    before: &'a mut [T],
    skip: usize,
    after: &'a mut [T],
}

impl<T> Others<'_, T> {
    /// (index in the queue, item) for every other item.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &T)> + Clone + '_ {
        let skip = self.skip;
        self.before.iter().enumerate().chain(self.after.iter().enumerate().map(move |(k, t)| (skip + 1 + k, t)))
    }

    /// Item `i`, unless it is the one taken (or out of range).
    pub fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        if i < self.skip {
            self.before.get_mut(i)
        } else if i > self.skip {
            self.after.get_mut(i - self.skip - 1)
        } else {
            None
        }
    }
}

/// The pCPU for a new vCPU (the rule the packer checks limits with).
pub use tessera_payload::place;

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(items: &[u32]) -> RunQueue<u32> {
        let mut q = RunQueue::with_capacity(4);
        for &v in items {
            q.push(v).unwrap();
        }
        q
    }

    #[test]
    fn round_robin_skips_what_cannot_run() {
        let mut q = queue(&[10, 11, 12]);
        let pick = |q: &mut RunQueue<u32>, f: &dyn Fn(u32) -> bool| q.pick(|_, &v| f(v)).map(|i| q.items[i]);
        let picks: Vec<_> = (0..6).map(|_| pick(&mut q, &|_| true).unwrap()).collect();
        assert_eq!(picks, [10, 11, 12, 10, 11, 12]);
        let picks: Vec<_> = (0..4).map(|_| pick(&mut q, &|v| v != 11).unwrap()).collect();
        assert_eq!(picks, [10, 12, 10, 12]);
        assert_eq!(pick(&mut q, &|v| v == 12), Some(12), "a lone runnable vCPU keeps running");
        assert_eq!(pick(&mut q, &|v| v == 12), Some(12));
        assert_eq!(pick(&mut q, &|_| false), None);
    }

    #[test]
    fn full_queue_is_an_error() {
        let mut q = RunQueue::with_capacity(1);
        q.push(1u8).unwrap();
        assert_eq!(q.push(2), Err(QueueFull));
        assert_eq!(q.items.capacity(), 1, "capacity is reserved up front");
    }

    #[test]
    fn split_gives_the_rest_with_their_indices() {
        let mut q = queue(&[10, 11, 12, 13]);
        let (me, mut others) = q.split(1);
        *me += 100;
        assert_eq!(others.iter().collect::<Vec<_>>(), [(0, &10), (2, &12), (3, &13)]);
        assert!(others.get_mut(1).is_none(), "the taken item is not reachable twice");
        *others.get_mut(3).unwrap() += 1;
        assert!(others.get_mut(4).is_none());
        assert_eq!(q.items, [10, 111, 12, 14]);
        let (first, others) = q.split(0);
        assert_eq!((*first, others.iter().map(|(i, _)| i).collect::<Vec<_>>()), (10, vec![1, 2, 3]));
    }

    #[test]
    fn placement_balances_within_affinity() {
        let mut load = [0u32; 2];
        // A 4-vCPU VM allowed on both pCPUs spreads 2 + 2.
        for _ in 0..4 {
            let p = place(&load, 0b11).unwrap();
            load[p] += 1;
        }
        assert_eq!(load, [2, 2]);
        // Pinned to pCPU 1 whatever the load.
        assert_eq!(place(&load, 0b10), Some(1));
        assert_eq!(place(&load, 0b100), None);
        assert_eq!(place(&[0; 2], 0), None);
    }
}
