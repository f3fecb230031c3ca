//! The restart intensity's sliding window: when the recent restarts
//! happened, and whether one more is one too many.

use super::spec::Intensity;
use std::collections::VecDeque;
use std::time::Instant;

/// The times of recent restarts, oldest first: the restart intensity's
/// sliding window.
#[derive(Default)]
pub(super) struct RestartWindow {
    times: VecDeque<Instant>,
}

impl RestartWindow {
    /// Counts a restart at `now`; false if it makes more than
    /// `max_restarts` within the last `period`.
    ///
    /// Restarts at or after `now - period` count (OTP's window is
    /// inclusive); before the clock's origin, all of them do. Older ones
    /// are dropped when the count matters (more than `max_restarts`
    /// recorded: then only those in the window are left to count), and
    /// when the record's length reaches a power of two, which keeps it
    /// within about twice the number in the window. With `max_restarts`
    /// or fewer recorded, at most that many are in the window, whichever
    /// they are. Cost: amortised O(1), no allocation once the record has
    /// grown to its working size; never more than `max_restarts + 1`
    /// entries.
    pub(super) fn add(&mut self, now: Instant, intensity: Intensity) -> bool {
        let max = intensity.max_restarts as usize;
        // Only the newest `max_restarts + 1` can matter: the record never
        // holds more (the bound when nothing leaves the window by age, as
        // with a period of `Duration::MAX`).
        if self.times.len() > max {
            self.times.pop_front();
        }
        self.times.push_back(now);
        let len = self.times.len();
        if len > max || len.is_power_of_two() {
            if let Some(oldest) = now.checked_sub(intensity.period) {
                while self.times.front().is_some_and(|&t| t < oldest) {
                    self.times.pop_front();
                }
            }
        }
        self.times.len() <= max
    }
}

#[cfg(test)]
mod tests {
    use super::RestartWindow;
    use crate::supervise::Intensity;
    use std::time::{Duration, Instant};

    /// The window answers as the plain definition does (count the restarts
    /// in `[now - period, now]`, this one included) on long pseudo-random
    /// runs, for small and large intensities, and stays bounded.
    #[test]
    fn restart_window_counts_exactly_the_restarts_within_the_period() {
        let t0 = Instant::now();
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for max_restarts in [0, 1, 2, 3, 5, 17, 100] {
            for period_ms in [0, 1, 10, 250, 5_000] {
                let intensity = Intensity {
                    max_restarts,
                    period: Duration::from_millis(period_ms),
                };
                let mut window = RestartWindow::default();
                let mut all: Vec<Instant> = Vec::new();
                let mut now = t0;
                for _ in 0..600 {
                    now += Duration::from_millis(next() % 40);
                    all.push(now);
                    let oldest = now.checked_sub(intensity.period);
                    let in_window = all
                        .iter()
                        .filter(|&&t| oldest.is_none_or(|o| t >= o))
                        .count();
                    let expected = in_window <= max_restarts as usize;
                    assert_eq!(
                        window.add(now, intensity),
                        expected,
                        "max {max_restarts}, period {period_ms} ms"
                    );
                    assert!(window.times.len() <= in_window.max(max_restarts as usize));
                }
            }
        }
    }

    /// The record never holds more than `max_restarts + 1` restarts, even
    /// when none leaves the window (a period of `Duration::MAX`), and such
    /// an intensity does not overflow.
    #[test]
    fn restart_history_is_bounded_at_max_restarts_plus_one() {
        let mut now = Instant::now();
        let huge = Intensity {
            max_restarts: u32::MAX,
            period: Duration::MAX,
        };
        let three = Intensity {
            max_restarts: 3,
            period: Duration::MAX,
        };
        let (mut a, mut b) = (RestartWindow::default(), RestartWindow::default());
        for i in 0..1_000 {
            now += Duration::from_millis(1);
            assert!(a.add(now, huge));
            assert_eq!(b.add(now, three), i < 3);
            assert!(b.times.len() <= 4);
        }
        assert_eq!(a.times.len(), 1_000);
    }

    /// With an intensity that never gives up, the record still forgets
    /// restarts that left the window: it stays within about twice the
    /// number in the window.
    #[test]
    fn restart_window_stays_bounded_when_the_intensity_is_never_reached() {
        let intensity = Intensity {
            max_restarts: u32::MAX,
            period: Duration::from_millis(10),
        };
        let mut window = RestartWindow::default();
        let mut now = Instant::now();
        for _ in 0..10_000 {
            now += Duration::from_millis(1);
            assert!(window.add(now, intensity));
            assert!(window.times.len() <= 2 * 11 + 1, "{}", window.times.len());
        }
    }
}
