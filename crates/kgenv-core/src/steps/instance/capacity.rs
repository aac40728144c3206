//! Waiting for GPU capacity (`up --wait-for-capacity`, `start --wait-for-capacity`): when
//! every candidate was out of capacity, wait and try them all again, round after round.
//!
//! The wait between rounds grows exponentially from the run's first delay to its largest
//! (30 s → 10 min by default), each with ±20% jitter so many clients that lost the same
//! zone do not all come back at the same second. Each round is a log line saying how many
//! candidates were out, when the next try is and how long kgenv still waits. Ctrl-C ends
//! the wait at once.

use std::time::{Duration, Instant};

use crate::error::{BackendError, Result};
use crate::plan::{CapacityWait, StepCtx};

/// The pause between rounds of tries, growing after each.
#[derive(Debug, Clone)]
pub(crate) struct Rounds {
    wait: CapacityWait,
    started: Instant,
    next: Duration,
    /// The round just tried (1: the first).
    pub(crate) round: u32,
}

impl Rounds {
    /// Rounds under `wait`, starting now.
    pub(crate) fn new(wait: CapacityWait) -> Self {
        Self {
            next: wait.first_delay,
            wait,
            started: Instant::now(),
            round: 1,
        }
    }

    /// How long kgenv has waited so far.
    pub(crate) fn waited(&self) -> Duration {
        self.started.elapsed()
    }

    /// After a round that found no capacity (`out` candidates stocked out): logs the round
    /// and sleeps until the next. `false` when the limit is used up (give up now).
    /// Cancelled (Ctrl-C) while asleep: [`BackendError::Cancelled`].
    pub(crate) async fn pause(
        &mut self,
        ctx: &StepCtx,
        out: usize,
        what: (&str, &str),
    ) -> Result<bool> {
        let what = if out == 1 { what.0 } else { what.1 };
        let delay = jitter(self.next, fastrand::f64());
        let delay = match self.wait.limit {
            Some(limit) => {
                let left = limit.saturating_sub(self.started.elapsed());
                if left.is_zero() {
                    ctx.log(format!(
                        "round {}: {out} {what} out of capacity; the wait of {} is over",
                        self.round,
                        show(limit)
                    ));
                    return Ok(false);
                }
                delay.min(left)
            }
            None => delay,
        };
        let until = match self.wait.limit {
            Some(limit) => format!(
                "waiting up to {} more",
                show(limit.saturating_sub(self.started.elapsed()))
            ),
            None => "waiting until Ctrl-C".to_string(),
        };
        ctx.log(format!(
            "round {}: {out} {what} out of capacity; next try in {}; {until}",
            self.round,
            show(delay)
        ));
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = ctx.cancel.cancelled() => return Err(BackendError::Cancelled.into()),
        }
        self.next = (self.next * 2).min(self.wait.max_delay);
        self.round += 1;
        Ok(true)
    }
}

/// `d` scaled by a factor in [0.8, 1.2) drawn from `unit` in [0, 1).
fn jitter(d: Duration, unit: f64) -> Duration {
    d.mul_f64(0.8 + 0.4 * unit.clamp(0.0, 1.0))
}

/// `1m 52s` (whole seconds), or milliseconds under a second (tests wait that little).
fn show(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let d = Duration::from_secs(100);
        assert_eq!(jitter(d, 0.0), Duration::from_secs(80));
        assert_eq!(jitter(d, 0.5), Duration::from_secs(100));
        assert!(jitter(d, 0.999_999) < Duration::from_secs(120));
        assert!(jitter(d, 0.999_999) > Duration::from_secs(119));
    }

    #[test]
    fn durations_show_in_whole_seconds_or_milliseconds() {
        assert_eq!(show(Duration::from_millis(112_400)), "1m 52s");
        assert_eq!(show(Duration::from_millis(40)), "40ms");
    }
}
