//! One shape for the pure machines (call, door, route, station): inputs
//! and timeouts go in with the time they happen, outputs come out in
//! order, and the machine says when it next wants to be woken. Nothing in
//! them reads a clock or does I/O; their shells (the controller, the tests)
//! do. [`Clocked`] is the synthetic-time harness every machine's tests
//! share.

use std::time::Instant;

pub trait Machine {
    type Input;
    type Output;
    fn handle_input(&mut self, input: Self::Input, now: Instant);
    fn handle_timeout(&mut self, now: Instant);
    fn poll_output(&mut self) -> Option<Self::Output>;
    fn poll_timeout(&self) -> Option<Instant>;
}

impl Machine for crate::call::CallMachine {
    type Input = crate::call::Input;
    type Output = crate::call::Output;
    /// A rejected input is dropped here; callers that check rejections use
    /// the inherent `handle_input`.
    fn handle_input(&mut self, input: Self::Input, now: Instant) {
        let _ = crate::call::CallMachine::handle_input(self, input, now);
    }
    fn handle_timeout(&mut self, now: Instant) {
        crate::call::CallMachine::handle_timeout(self, now)
    }
    fn poll_output(&mut self) -> Option<Self::Output> {
        crate::call::CallMachine::poll_output(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        crate::call::CallMachine::poll_timeout(self)
    }
}

/// Implements [`Machine`] with the type's inherent methods of the same
/// names.
macro_rules! machine {
    ($ty:ty, $input:ty, $output:ty) => {
        impl Machine for $ty {
            type Input = $input;
            type Output = $output;
            fn handle_input(&mut self, input: Self::Input, now: Instant) {
                <$ty>::handle_input(self, input, now)
            }
            fn handle_timeout(&mut self, now: Instant) {
                <$ty>::handle_timeout(self, now)
            }
            fn poll_output(&mut self) -> Option<Self::Output> {
                <$ty>::poll_output(self)
            }
            fn poll_timeout(&self) -> Option<Instant> {
                <$ty>::poll_timeout(self)
            }
        }
    };
}

machine!(
    crate::door::DoorMachine,
    crate::door::DoorInput,
    crate::door::DoorOutput
);
machine!(
    crate::bt::RouteMachine,
    crate::bt::RouteInput,
    crate::bt::RouteOutput
);
machine!(
    crate::station::Station,
    crate::station::StationInput,
    crate::station::StationOutput
);

/// What a headset's gateway is given: bytes from its RFCOMM channel, or
/// the door call to show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HfpInput {
    Bytes(Vec<u8>),
    Call(crate::bt::DoorCall),
}

impl Machine for crate::bt::HfpMachine {
    type Input = HfpInput;
    type Output = crate::bt::HfpOutput;
    fn handle_input(&mut self, input: HfpInput, now: Instant) {
        match input {
            HfpInput::Bytes(bytes) => self.handle_bytes(&bytes, now),
            HfpInput::Call(call) => self.handle_call(call, now),
        }
    }
    fn handle_timeout(&mut self, now: Instant) {
        crate::bt::HfpMachine::handle_timeout(self, now)
    }
    fn poll_output(&mut self) -> Option<Self::Output> {
        crate::bt::HfpMachine::poll_output(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        crate::bt::HfpMachine::poll_timeout(self)
    }
}

#[cfg(test)]
pub use clocked::Clocked;

/// A test rig: a named [`Clocked`] machine (its fields and methods through
/// `Deref`) to which the tests of one machine add their own helpers.
#[cfg(test)]
macro_rules! clocked_rig {
    ($name:ident, $machine:ty) => {
        struct $name($crate::sansio::Clocked<$machine>);

        impl std::ops::Deref for $name {
            type Target = $crate::sansio::Clocked<$machine>;
            fn deref(&self) -> &Self::Target {
                &self.0
            }
        }

        impl std::ops::DerefMut for $name {
            fn deref_mut(&mut self) -> &mut Self::Target {
                &mut self.0
            }
        }
    };
}
#[cfg(test)]
pub(crate) use clocked_rig;

#[cfg(test)]
mod clocked {
    use std::time::{Duration, Instant};

    use super::Machine;

    /// A machine driven in synthetic time: a 30 s timeout takes
    /// microseconds, and every output is logged with when it came out.
    pub struct Clocked<M: Machine> {
        pub m: M,
        pub t0: Instant,
        pub now: Instant,
        /// Every output so far, with its time since `t0`.
        pub log: Vec<(Duration, M::Output)>,
    }

    impl<M: Machine> Clocked<M>
    where
        M::Output: Clone,
    {
        /// `make` builds the machine at the harness's time zero.
        pub fn new(make: impl FnOnce(Instant) -> M) -> Self {
            let t0 = Instant::now();
            Clocked {
                m: make(t0),
                t0,
                now: t0,
                log: Vec::new(),
            }
        }

        /// The outputs waiting, logged and returned.
        pub fn drain(&mut self) -> Vec<M::Output> {
            let at = self.now - self.t0;
            let out: Vec<M::Output> = std::iter::from_fn(|| self.m.poll_output()).collect();
            self.log.extend(out.iter().map(|o| (at, o.clone())));
            out
        }

        pub fn input(&mut self, input: M::Input) -> Vec<M::Output> {
            self.m.handle_input(input, self.now);
            self.drain()
        }

        /// Moves time on by `by`, firing every deadline on the way at its
        /// exact time, in order.
        pub fn advance(&mut self, by: Duration) -> Vec<M::Output> {
            let target = self.now + by;
            let mut out = Vec::new();
            // Bounded: a machine that keeps asking for the same instant
            // stops the walk rather than hanging the test.
            for _ in 0..10_000 {
                match self.m.poll_timeout() {
                    Some(d) if d <= target => {
                        self.now = d.max(self.now);
                        self.m.handle_timeout(self.now);
                        out.extend(self.drain());
                    }
                    _ => break,
                }
            }
            self.now = target;
            out
        }

        /// [`advance`](Self::advance) to `t0 + at`.
        pub fn advance_to(&mut self, at: Duration) -> Vec<M::Output> {
            let by = (self.t0 + at).saturating_duration_since(self.now);
            self.advance(by)
        }

        /// Time since `t0`.
        pub fn elapsed(&self) -> Duration {
            self.now - self.t0
        }
    }
}
