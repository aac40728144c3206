//! Rate and ETA for transfers: a meter that turns "bytes done" samples into a smoothed rate
//! and the time left, reported as [`Progress::Transfer`]. Shared by the downloader (one
//! file) and the data pull (all files of a pull).

use std::time::{Duration, Instant};

use super::Progress;

/// Measures one transfer. Feed it the running byte count; ask it for a [`Progress`].
#[derive(Debug, Clone)]
pub struct Meter {
    item: String,
    total: Option<u64>,
    started: Instant,
    last: Instant,
    last_done: u64,
    base: u64,
    rate: f64,
}

impl Meter {
    /// A meter for `item` of `total` bytes, of which `already` are there from an earlier run
    /// (they count as done but not towards the rate).
    pub fn new(item: impl Into<String>, total: Option<u64>, already: u64) -> Self {
        let now = Instant::now();
        Self {
            item: item.into(),
            total,
            started: now,
            last: now,
            last_done: already,
            base: already,
            rate: 0.0,
        }
    }

    /// Records that `done` bytes are done now.
    pub fn update(&mut self, done: u64) {
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64();
        if dt >= 0.2 {
            let inst = done.saturating_sub(self.last_done) as f64 / dt;
            // Exponential smoothing over about two seconds; the first sample sets it.
            let alpha = (dt / 2.0).min(1.0);
            self.rate = if self.rate == 0.0 {
                inst
            } else {
                self.rate + alpha * (inst - self.rate)
            };
            self.last = now;
            self.last_done = done;
        }
    }

    /// Average rate since the meter started, over the bytes fetched in this run.
    pub fn average_rate(&self, done: u64) -> u64 {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        (done.saturating_sub(self.base) as f64 / secs) as u64
    }

    /// Elapsed time since the meter started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The progress event for `done` bytes.
    pub fn progress(&self, done: u64) -> Progress {
        let rate = if self.rate > 0.0 {
            self.rate
        } else {
            self.average_rate(done) as f64
        };
        let eta_secs = match self.total {
            Some(t) if rate >= 1.0 => Some((t.saturating_sub(done) as f64 / rate).ceil() as u64),
            Some(t) if t <= done => Some(0),
            _ => None,
        };
        Progress::Transfer {
            item: self.item.clone(),
            done,
            total: self.total,
            bytes_per_sec: rate as u64,
            eta_secs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eta_follows_rate() {
        let mut m = Meter::new("f", Some(1000), 0);
        m.rate = 100.0;
        m.update(0);
        match m.progress(500) {
            Progress::Transfer {
                eta_secs,
                bytes_per_sec,
                done,
                ..
            } => {
                assert_eq!(done, 500);
                assert_eq!(bytes_per_sec, 100);
                assert_eq!(eta_secs, Some(5));
            }
            other => panic!("unexpected {other:?}"),
        }
        match m.progress(1000) {
            Progress::Transfer { eta_secs, .. } => assert_eq!(eta_secs, Some(0)),
            other => panic!("unexpected {other:?}"),
        }
    }
}
