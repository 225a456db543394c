//! The demo's bookkeeping, portable so that the host tests it: latency
//! statistics and the in-order delivery check of the message queues.

/// Minimum, average and maximum of a series of counter-tick samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MinAvgMax {
    count: u32,
    min: u64,
    max: u64,
    sum: u64,
}

impl MinAvgMax {
    pub const fn new() -> Self {
        MinAvgMax { count: 0, min: u64::MAX, max: 0, sum: 0 }
    }

    pub fn add(&mut self, v: u64) {
        self.count += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum = self.sum.saturating_add(v);
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// None until there is a sample.
    pub fn min(&self) -> Option<u64> {
        (self.count > 0).then_some(self.min)
    }

    pub fn max(&self) -> Option<u64> {
        (self.count > 0).then_some(self.max)
    }

    /// Rounded down.
    pub fn avg(&self) -> Option<u64> {
        (self.count > 0).then(|| self.sum / u64::from(self.count))
    }
}

/// Counter ticks as nanoseconds at `freq` Hz (the virtual counter's CNTFRQ).
pub fn ticks_to_ns(ticks: u64, freq: u32) -> u64 {
    if freq == 0 {
        return 0;
    }
    (u128::from(ticks) * 1_000_000_000 / u128::from(freq)) as u64
}

/// What a producer puts in a message besides its sequence number, so that
/// the consumer also notices a message whose body was mixed up.
pub fn payload(producer: u32, seq: u32) -> u32 {
    (producer.wrapping_mul(0x9e37_79b9) ^ seq.wrapping_mul(0x85eb_ca6b)).rotate_left(13)
}

/// The first way a message stream went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disorder {
    /// From a producer that does not exist.
    UnknownProducer { producer: u32 },
    /// Not the next sequence number of its producer (lost, duplicated or reordered).
    OutOfOrder { producer: u32, expected: u32, got: u32 },
    /// The body does not match the sequence number.
    BadPayload { producer: u32, seq: u32 },
}

/// Checks that each of `P` producers' messages arrive once each, in order.
#[derive(Clone, Debug)]
pub struct SequenceCheck<const P: usize> {
    next: [u32; P],
    errors: u32,
    first: Option<Disorder>,
}

impl<const P: usize> Default for SequenceCheck<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const P: usize> SequenceCheck<P> {
    pub const fn new() -> Self {
        SequenceCheck { next: [0; P], errors: 0, first: None }
    }

    /// Records one message; false if it is not the one expected.
    pub fn receive(&mut self, producer: u32, seq: u32, body: u32) -> bool {
        let problem = match self.next.get_mut(producer as usize) {
            None => Some(Disorder::UnknownProducer { producer }),
            Some(next) if *next != seq => Some(Disorder::OutOfOrder { producer, expected: *next, got: seq }),
            Some(_) if body != payload(producer, seq) => Some(Disorder::BadPayload { producer, seq }),
            Some(next) => {
                *next += 1;
                None
            }
        };
        if let Some(p) = problem {
            self.errors += 1;
            self.first.get_or_insert(p);
        }
        problem.is_none()
    }

    /// Every producer delivered exactly `per_producer` messages, in order.
    pub fn complete(&self, per_producer: u32) -> bool {
        self.errors == 0 && self.next.iter().all(|&n| n == per_producer)
    }

    pub fn errors(&self) -> u32 {
        self.errors
    }

    pub fn first_problem(&self) -> Option<Disorder> {
        self.first
    }

    /// How many messages of each producer arrived in order.
    pub fn delivered(&self) -> [u32; P] {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_avg_max() {
        let mut s = MinAvgMax::new();
        assert_eq!((s.min(), s.avg(), s.max()), (None, None, None));
        for v in [5, 1, 9, 5] {
            s.add(v);
        }
        assert_eq!((s.min(), s.avg(), s.max(), s.count()), (Some(1), Some(5), Some(9), 4));
    }

    #[test]
    fn ticks_convert_at_the_counter_frequency() {
        assert_eq!(ticks_to_ns(62_500, 62_500_000), 1_000_000);
        assert_eq!(ticks_to_ns(1, 1_000_000_000), 1);
        assert_eq!(ticks_to_ns(7, 0), 0);
        assert_eq!(ticks_to_ns(u64::MAX, 1_000_000_000), u64::MAX);
    }

    #[test]
    fn in_order_streams_pass() {
        let mut c = SequenceCheck::<2>::new();
        for seq in 0..10 {
            assert!(c.receive(1, seq, payload(1, seq)));
            assert!(c.receive(0, seq, payload(0, seq)));
        }
        assert!(c.complete(10));
        assert!(!c.complete(11), "a missing tail is incomplete");
        assert_eq!(c.delivered(), [10, 10]);
    }

    #[test]
    fn each_kind_of_disorder_is_caught() {
        let mut c = SequenceCheck::<2>::new();
        assert!(c.receive(0, 0, payload(0, 0)));
        assert!(!c.receive(0, 2, payload(0, 2)), "a lost message");
        assert_eq!(c.first_problem(), Some(Disorder::OutOfOrder { producer: 0, expected: 1, got: 2 }));
        assert!(!c.receive(0, 0, payload(0, 0)), "a duplicate");
        assert!(!c.receive(1, 0, 12345), "a wrong body");
        assert!(!c.receive(7, 0, payload(7, 0)), "an unknown producer");
        assert_eq!(c.errors(), 4);
        assert_eq!(c.first_problem(), Some(Disorder::OutOfOrder { producer: 0, expected: 1, got: 2 }));
        assert!(!c.complete(1));
    }

    #[test]
    fn payloads_differ_between_producers_and_messages() {
        assert_ne!(payload(0, 1), payload(1, 0));
        assert_ne!(payload(0, 1), payload(0, 2));
    }
}
