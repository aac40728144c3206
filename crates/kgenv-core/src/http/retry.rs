//! The one retry policy of kgenv's HTTP clients.
//!
//! What may pass on its own is retried: [`BackendError::is_retryable`] (rate limits, 5xx,
//! dropped connections, timeouts). Waits grow exponentially — `backon` computes the capped
//! ceiling `initial_delay · 2ⁿ ≤ max_delay` — and each wait is drawn uniformly in
//! `[0, ceiling]` (full jitter), so clients that failed together do not retry together.
//! A `Retry-After` the server sent (carried by [`BackendError::RateLimited`]) is a floor on
//! the wait. Three limits stop the retries: `max_retries`, a time budget (no retry starts
//! when its wait would end past `max_elapsed` since the first attempt), and `max_retry_after`
//! (a server asking to wait longer than that is not waited for: its error is returned at
//! once, as GitHub's rate-limit reset hours away is).
//!
//! [`RetryPolicy::run`] drives an async attempt with these rules. Loops that must resume
//! rather than repeat (ranged downloads, resumable uploads) take the same schedule from
//! [`RetryPolicy::delays`] and keep their own protocol.

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};

use crate::error::BackendError;

/// How a call is retried. Each service of kgenv has its own constant (Compute: 1 s to 32 s,
/// 10 retries, 180 s; GitHub: 200 ms to 20 s, 3 retries, rate limits waited up to 60 s; …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first backoff ceiling.
    pub initial_delay: Duration,
    /// The largest backoff ceiling.
    pub max_delay: Duration,
    /// At most this many retries after the first attempt.
    pub max_retries: usize,
    /// No retry starts when its wait would end later than this after the first attempt
    /// (`None`: no time budget).
    pub max_elapsed: Option<Duration>,
    /// A server asking (`Retry-After`, a rate-limit reset) to wait longer than this is not
    /// waited for (`None`: any wait the time budget allows).
    pub max_retry_after: Option<Duration>,
    /// Timeout of one attempt (`None`: the HTTP client's own timeouts).
    pub attempt_timeout: Option<Duration>,
}

impl RetryPolicy {
    /// Exponential backoff from `initial_delay` to `max_delay`, at most `max_retries`
    /// retries, no time budget, no cap on `Retry-After`, no attempt timeout.
    pub const fn new(initial_delay: Duration, max_delay: Duration, max_retries: usize) -> Self {
        Self {
            initial_delay,
            max_delay,
            max_retries,
            max_elapsed: None,
            max_retry_after: None,
            attempt_timeout: None,
        }
    }

    /// No retries at all.
    pub const fn never() -> Self {
        Self::new(Duration::ZERO, Duration::ZERO, 0)
    }

    /// With a time budget.
    #[must_use]
    pub const fn with_budget(mut self, max_elapsed: Duration) -> Self {
        self.max_elapsed = Some(max_elapsed);
        self
    }

    /// Giving up when the server asks to wait longer than `cap`.
    #[must_use]
    pub const fn with_max_retry_after(mut self, cap: Duration) -> Self {
        self.max_retry_after = Some(cap);
        self
    }

    /// With a timeout per attempt.
    #[must_use]
    pub const fn with_attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// With at most `n` retries.
    #[must_use]
    pub const fn with_max_retries(mut self, n: usize) -> Self {
        self.max_retries = n;
        self
    }

    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.initial_delay)
            .with_max_delay(self.max_delay)
            .with_factor(2.0)
            .with_max_times(self.max_retries)
    }

    /// The backoff ceilings, one per retry (no jitter).
    pub fn ceilings(&self) -> impl Iterator<Item = Duration> {
        self.backoff().build()
    }

    /// The waits before each retry, full jitter under each ceiling, for loops that keep
    /// their own protocol (they honour neither `Retry-After` nor the time budget).
    pub fn delays(&self) -> impl Iterator<Item = Duration> {
        self.ceilings().map(full_jitter)
    }

    /// Whether `err` is worth another attempt under this policy (before counting).
    pub fn should_retry(&self, err: &BackendError) -> bool {
        match (requested_wait(err), self.max_retry_after) {
            (Some(asked), Some(cap)) if asked > cap => false,
            _ => err.is_retryable(),
        }
    }

    /// The wait before the next attempt after `err`, given the backoff `ceiling` and the
    /// time `elapsed` since the first attempt; `None` when the time budget would be crossed.
    pub fn next_wait(
        &self,
        err: &BackendError,
        ceiling: Duration,
        elapsed: Duration,
    ) -> Option<Duration> {
        let wait = full_jitter(ceiling).max(requested_wait(err).unwrap_or_default());
        match self.max_elapsed {
            Some(budget) if elapsed.checked_add(wait).is_none_or(|end| end > budget) => None,
            _ => Some(wait),
        }
    }

    /// Runs `attempt` until it succeeds, fails with an error not worth retrying, or a limit
    /// is reached; the last error is returned. `what` names the call in debug logs.
    pub async fn run<T, F, Fut>(&self, what: &str, attempt: F) -> Result<T, BackendError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, BackendError>>,
    {
        let policy = *self;
        let started = tokio::time::Instant::now();
        attempt
            .retry(policy.backoff())
            .sleep(tokio::time::sleep)
            .when(move |e: &BackendError| policy.should_retry(e))
            .adjust(move |e: &BackendError, ceiling: Option<Duration>| {
                policy.next_wait(e, ceiling?, started.elapsed())
            })
            .notify(|e: &BackendError, wait: Duration| {
                tracing::debug!("{what}: retrying in {:.2}s after: {e}", wait.as_secs_f64());
            })
            .await
    }
}

/// A wait uniform in `[0, ceiling]` (full jitter).
pub fn full_jitter(ceiling: Duration) -> Duration {
    ceiling.mul_f64(fastrand::f64())
}

/// What the server asked to wait, when the error carries it.
fn requested_wait(err: &BackendError) -> Option<Duration> {
    match err {
        BackendError::RateLimited { retry_after, .. } => *retry_after,
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn transient() -> BackendError {
        BackendError::transient("test", "HTTP 503")
    }

    fn limited(secs: u64) -> BackendError {
        BackendError::RateLimited {
            service: "test",
            retry_after: Some(Duration::from_secs(secs)),
        }
    }

    #[test]
    fn jitter_stays_under_each_ceiling_and_reaches_low() {
        let p = RetryPolicy::new(Duration::from_millis(100), Duration::from_millis(800), 6);
        let ceilings: Vec<Duration> = p.ceilings().collect();
        assert_eq!(
            ceilings
                .iter()
                .map(|d| (d.as_secs_f64() * 1e3).round() as u64)
                .collect::<Vec<_>>(),
            [100, 200, 400, 800, 800, 800],
            "backon computes them in floating point: compared to the millisecond"
        );
        for _ in 0..200 {
            let delays: Vec<Duration> = p.delays().collect();
            assert_eq!(delays.len(), 6);
            assert!(delays.iter().zip(&ceilings).all(|(d, c)| d <= c));
        }
        let c = Duration::from_secs(1);
        let samples: Vec<Duration> = (0..500).map(|_| full_jitter(c)).collect();
        assert!(samples.iter().all(|d| *d <= c));
        assert!(
            samples.iter().any(|d| *d < c / 4),
            "full jitter reaches low"
        );
        assert!(samples.iter().any(|d| *d > c * 3 / 4), "and high");
    }

    #[test]
    fn retry_after_is_a_floor_and_the_budget_a_ceiling() {
        let p = RetryPolicy::new(Duration::from_millis(100), Duration::from_secs(1), 5)
            .with_budget(Duration::from_secs(10));
        let c = Duration::from_millis(800);
        assert!((0..50).all(|_| {
            p.next_wait(&limited(3), c, Duration::ZERO) >= Some(Duration::from_secs(3))
        }));
        assert!(p.next_wait(&transient(), c, Duration::ZERO) <= Some(c));
        assert_eq!(
            p.next_wait(&limited(3), c, Duration::from_secs(8)),
            None,
            "the wait would end past the budget"
        );
        assert_eq!(
            p.next_wait(&limited(u64::MAX), c, Duration::from_secs(1)),
            None,
            "no overflow on absurd waits"
        );
    }

    #[test]
    fn waits_longer_than_the_cap_are_not_retried() {
        let p = RetryPolicy::new(Duration::from_millis(1), Duration::from_millis(2), 3)
            .with_max_retry_after(Duration::from_secs(60));
        assert!(p.should_retry(&limited(60)));
        assert!(!p.should_retry(&limited(61)));
        assert!(p.should_retry(&transient()));
        assert!(!p.should_retry(&BackendError::NotFound {
            resource: "x".into()
        }));
    }

    async fn count_attempts(
        p: RetryPolicy,
        mut next: impl FnMut(usize) -> Result<(), BackendError>,
    ) -> (usize, Result<(), BackendError>, Duration) {
        let n = AtomicUsize::new(0);
        let started = tokio::time::Instant::now();
        let r = p
            .run("test call", || {
                let i = n.fetch_add(1, Ordering::SeqCst);
                let out = next(i);
                async move { out }
            })
            .await;
        (n.load(Ordering::SeqCst), r, started.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn stops_after_max_retries() {
        let p = RetryPolicy::new(Duration::from_millis(10), Duration::from_millis(40), 3);
        let (n, r, _) = count_attempts(p, |_| Err(transient())).await;
        assert_eq!(n, 4, "the first attempt and three retries");
        assert!(r.expect_err("still failing").is_retryable());
        let (n, r, _) = count_attempts(p, |_| {
            Err(BackendError::NotFound {
                resource: "x".into(),
            })
        })
        .await;
        assert_eq!(n, 1, "what retrying cannot fix is returned at once");
        assert!(r.expect_err("not found").is_not_found());
    }

    #[tokio::test(start_paused = true)]
    async fn stops_within_the_time_budget() {
        let p = RetryPolicy::new(Duration::from_secs(1), Duration::from_secs(32), 1000)
            .with_budget(Duration::from_secs(180));
        let (n, r, elapsed) = count_attempts(p, |_| Err(transient())).await;
        assert!(r.is_err());
        assert!(elapsed <= Duration::from_secs(180), "{elapsed:?}");
        assert!(
            (2..1000).contains(&n),
            "retried, then the budget ran out: {n}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn honours_retry_after_and_its_cap() {
        let p = RetryPolicy::new(Duration::from_millis(10), Duration::from_millis(20), 3)
            .with_max_retry_after(Duration::from_secs(60));
        let (n, r, elapsed) =
            count_attempts(p, |i| if i == 0 { Err(limited(5)) } else { Ok(()) }).await;
        assert_eq!(n, 2);
        assert!(r.is_ok());
        assert!(elapsed >= Duration::from_secs(5), "{elapsed:?}");

        let (n, r, elapsed) = count_attempts(p, |_| Err(limited(3600))).await;
        assert_eq!(n, 1, "an hour is not waited for");
        assert!(matches!(r, Err(BackendError::RateLimited { .. })));
        assert!(elapsed < Duration::from_secs(1));
    }
}
