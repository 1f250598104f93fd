//! Durations as operators read and write them ([`Secs`], [`seconds`]), and moments as an upgrade
//! in place hands them to the next program image ([`handover`]).

use std::time::Duration;

/// A duration as log lines and messages show it: `1 sec`, `0.5 secs`, `60 secs` (the original's
/// unit, pluralised).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Secs(pub Duration);

impl std::fmt::Display for Secs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.0.as_secs_f64();
        let unit = if secs == 1.0 { "sec" } else { "secs" };
        write!(f, "{secs} {unit}")
    }
}

/// The longest duration an option or setting may ask for (about 136 years): anything longer is a
/// mistake, and would overflow the monotonic clock once added to it.
pub const LONGEST: Duration = Duration::from_secs(u32::MAX as u64);

/// A non-negative number of seconds, fractions allowed (`1`, `0.5`), at most [`LONGEST`]; the
/// same on the command line and in the environment (`KILL_OLD_DELAY`).
pub fn seconds(text: &str) -> Option<Duration> {
    text.trim()
        .parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .filter(|d| *d <= LONGEST)
}

/// Moments and durations in the state an upgrade in place hands to the next program image.
///
/// The monotonic clock goes on across `execve`, but an `Instant` cannot be written down: a moment
/// is written as its offset from the hand-over in microseconds (negative in the past), and read
/// back against the next image's own "now". Fields say so with `#[serde(with = "handover")]`;
/// [`handover::at`] sets the moment of the hand-over for everything serialized or read inside it.
/// Durations are whole microseconds (`handover::micros`).
pub mod handover {
    use std::cell::Cell;
    use std::time::{Duration, Instant};

    use serde::de::Error as _;
    use serde::ser::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    thread_local! {
        static NOW: Cell<Option<Instant>> = const { Cell::new(None) };
    }

    /// Runs `f` with `now` as the moment of the hand-over (nested calls restore the outer one).
    pub fn at<T>(now: Instant, f: impl FnOnce() -> T) -> T {
        let outer = NOW.with(|n| n.replace(Some(now)));
        let result = f();
        NOW.with(|n| n.set(outer));
        result
    }

    /// The moment of the hand-over under way, else now: the default of a moment a state from an
    /// older image does not have.
    pub fn now() -> Instant {
        NOW.with(Cell::get).unwrap_or_else(Instant::now)
    }

    fn clock() -> Option<Instant> {
        NOW.with(Cell::get)
    }

    /// A value with moments in it, written with each moment as an offset.
    pub trait Moments: Sized {
        /// How it is written.
        type Written: Serialize + for<'de> Deserialize<'de>;
        /// Offsets from `now`.
        fn write(&self, now: Instant) -> Self::Written;
        /// Back from offsets, against `now`.
        fn read(written: Self::Written, now: Instant) -> Self;
    }

    impl Moments for Instant {
        type Written = i64;
        fn write(&self, now: Instant) -> i64 {
            let micros = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
            if *self >= now {
                micros(*self - now)
            } else {
                -micros(now - *self)
            }
        }
        fn read(offset: i64, now: Instant) -> Instant {
            let magnitude = Duration::from_micros(offset.unsigned_abs());
            if offset >= 0 {
                now.checked_add(magnitude).unwrap_or(now)
            } else {
                // Before the clock's origin (a state from a long-running image): as old as it
                // can be.
                now.checked_sub(magnitude).unwrap_or(now)
            }
        }
    }

    impl<T: Moments> Moments for Option<T> {
        type Written = Option<T::Written>;
        fn write(&self, now: Instant) -> Self::Written {
            self.as_ref().map(|v| v.write(now))
        }
        fn read(written: Self::Written, now: Instant) -> Self {
            written.map(|w| T::read(w, now))
        }
    }

    impl<T: Moments> Moments for Vec<T> {
        type Written = Vec<T::Written>;
        fn write(&self, now: Instant) -> Self::Written {
            self.iter().map(|v| v.write(now)).collect()
        }
        fn read(written: Self::Written, now: Instant) -> Self {
            written.into_iter().map(|w| T::read(w, now)).collect()
        }
    }

    impl<A: Moments, B: Moments> Moments for (A, B) {
        type Written = (A::Written, B::Written);
        fn write(&self, now: Instant) -> Self::Written {
            (self.0.write(now), self.1.write(now))
        }
        fn read((a, b): Self::Written, now: Instant) -> Self {
            (A::read(a, now), B::read(b, now))
        }
    }

    /// Plain numbers beside moments (a pid, a count) are written as they are.
    macro_rules! as_they_are {
        ($($t:ty),*) => {$(
            impl Moments for $t {
                type Written = $t;
                fn write(&self, _: Instant) -> $t {
                    *self
                }
                fn read(written: $t, _: Instant) -> $t {
                    written
                }
            }
        )*};
    }
    as_they_are!(i32, u32, u64);

    /// `#[serde(with = "handover")]`: see the module documentation.
    pub fn serialize<T: Moments, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        let now =
            clock().ok_or_else(|| S::Error::custom("a moment written outside a hand-over"))?;
        value.write(now).serialize(s)
    }

    /// `#[serde(with = "handover")]`: see the module documentation.
    pub fn deserialize<'de, T: Moments, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        let now = clock().ok_or_else(|| D::Error::custom("a moment read outside a hand-over"))?;
        Ok(T::read(T::Written::deserialize(d)?, now))
    }

    /// `#[serde(with = "handover::micros")]`: a duration (or an optional one) in microseconds.
    pub mod micros {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer, Serialize, Serializer};

        /// A duration, or an optional one.
        pub trait Micros: Sized {
            /// How it is written.
            type Written: Serialize + for<'de> Deserialize<'de>;
            /// In microseconds.
            fn write(&self) -> Self::Written;
            /// From microseconds.
            fn read(written: Self::Written) -> Self;
        }

        impl Micros for Duration {
            type Written = u64;
            fn write(&self) -> u64 {
                u64::try_from(self.as_micros()).unwrap_or(u64::MAX)
            }
            fn read(written: u64) -> Duration {
                Duration::from_micros(written)
            }
        }

        impl Micros for Option<Duration> {
            type Written = Option<u64>;
            fn write(&self) -> Option<u64> {
                self.as_ref().map(Micros::write)
            }
            fn read(written: Option<u64>) -> Self {
                written.map(Duration::from_micros)
            }
        }

        /// See [`Micros`].
        pub fn serialize<T: Micros, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
            value.write().serialize(s)
        }

        /// See [`Micros`].
        pub fn deserialize<'de, T: Micros, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
            Ok(T::read(T::Written::deserialize(d)?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn one_sec_and_the_rest_in_secs() {
        assert_eq!(Secs(Duration::from_secs(1)).to_string(), "1 sec");
        assert_eq!(Secs(Duration::from_millis(500)).to_string(), "0.5 secs");
        assert_eq!(Secs(Duration::from_secs(60)).to_string(), "60 secs");
        assert_eq!(Secs(Duration::ZERO).to_string(), "0 secs");
    }

    #[test]
    fn durations_past_the_longest_are_refused() {
        assert_eq!(seconds("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(seconds("4294967295"), Some(LONGEST));
        for text in ["4294967296", "1e19", "inf", "NaN", "-1", "soon"] {
            assert_eq!(seconds(text), None, "{text}");
        }
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Timed {
        #[serde(with = "handover")]
        at: Instant,
        #[serde(with = "handover")]
        seen: Vec<(i32, Instant)>,
        #[serde(with = "handover::micros")]
        delay: Option<Duration>,
    }

    #[test]
    fn moments_are_offsets_from_the_hand_over() {
        let now = Instant::now();
        let sec = Duration::from_secs(1);
        let timed = Timed {
            at: now - sec,
            seen: vec![(7, now + 2 * sec)],
            delay: Some(sec / 2),
        };
        let text = handover::at(now, || serde_json::to_string(&timed)).unwrap();
        assert_eq!(
            text,
            r#"{"at":-1000000,"seen":[[7,2000000]],"delay":500000}"#
        );
        let later = now + 5 * sec;
        let read: Timed = handover::at(later, || serde_json::from_str(&text)).unwrap();
        assert_eq!(read.at, later - sec);
        assert_eq!(read.seen, vec![(7, later + 2 * sec)]);
        assert!(
            serde_json::to_string(&timed).is_err(),
            "no moment is written without a hand-over's clock"
        );
    }
}
