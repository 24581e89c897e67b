//! A task step's retry policy: how many attempts, how long between them, which failures are not
//! worth another, and how long one attempt may run.

use std::time::Duration;

use orca_proto::v1;

use crate::status::FailureKind;

/// How a task step's attempts are retried and timed out.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in a series, the first included (an operator's retry starts a new series).
    pub max_attempts: u32,
    /// Wait before the second attempt.
    pub initial_backoff: Duration,
    /// Each further wait is the previous one times this.
    pub backoff_factor: f64,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// Failure kinds that fail the step at once.
    pub non_retryable: Vec<FailureKind>,
    /// How long one attempt may take (`None`: no limit).
    pub timeout: Option<Duration>,
    /// If set, an attempt with no heartbeat for this long is timed out.
    pub heartbeat: Option<Duration>,
}

/// Most attempts a policy may ask for.
pub const MAX_ATTEMPTS: u32 = 1000;

impl Default for RetryPolicy {
    /// What a user would pick: 3 attempts, 1 s ×2 up to 1 min between them, 5 min per attempt;
    /// a permanent failure and inconsistent data fail at once.
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_secs(1),
            backoff_factor: 2.0,
            max_backoff: Duration::from_secs(60),
            non_retryable: vec![FailureKind::Permanent, FailureKind::InconsistentData],
            timeout: Some(Duration::from_secs(300)),
            heartbeat: None,
        }
    }
}

impl RetryPolicy {
    /// Whether a failure of `kind` is worth another attempt.
    pub fn retries(&self, kind: FailureKind) -> bool {
        !self.non_retryable.contains(&kind)
    }

    /// The wait after the `failed`-th attempt of a series failed (1: before the second attempt):
    /// `initial_backoff × backoff_factor^(failed-1)`, at most `max_backoff`.
    pub fn backoff(&self, failed: u32) -> Duration {
        let exponent = i32::try_from(failed.saturating_sub(1)).unwrap_or(i32::MAX);
        let secs = self.initial_backoff.as_secs_f64() * self.backoff_factor.powi(exponent);
        let max = self.max_backoff.as_secs_f64();
        if secs.is_finite() && secs < max {
            Duration::from_secs_f64(secs.max(0.0))
        } else {
            self.max_backoff
        }
    }

    /// Checks values read from a catalog.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=MAX_ATTEMPTS).contains(&self.max_attempts) {
            return Err(format!("max_attempts must be 1..={MAX_ATTEMPTS}"));
        }
        if !(self.backoff_factor.is_finite() && (1.0..=100.0).contains(&self.backoff_factor)) {
            return Err("backoff_factor must be between 1 and 100".into());
        }
        if self.initial_backoff > self.max_backoff {
            return Err("initial_backoff must not be longer than max_backoff".into());
        }
        let whole_ms = |d: Duration| d.subsec_nanos().is_multiple_of(1_000_000);
        if ![self.initial_backoff, self.max_backoff]
            .into_iter()
            .chain(self.timeout)
            .chain(self.heartbeat)
            .all(whole_ms)
        {
            return Err(
                "durations are kept in whole milliseconds: write e.g. 1ms, 250ms, 2s".into(),
            );
        }
        if self.timeout == Some(Duration::ZERO) || self.heartbeat == Some(Duration::ZERO) {
            return Err(
                "timeout and heartbeat must be longer than 0 (leave them out for none)".into(),
            );
        }
        if let (Some(t), Some(h)) = (self.timeout, self.heartbeat)
            && h > t
        {
            return Err("heartbeat must not be longer than timeout".into());
        }
        Ok(())
    }

    /// The form recorded with the step when a process starts.
    pub fn to_proto(&self) -> v1::RetryPolicy {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        v1::RetryPolicy {
            max_attempts: self.max_attempts,
            initial_backoff_ms: ms(self.initial_backoff),
            backoff_factor: self.backoff_factor,
            max_backoff_ms: ms(self.max_backoff),
            non_retryable: self
                .non_retryable
                .iter()
                .map(|k| k.as_str().to_owned())
                .collect(),
            timeout_ms: self.timeout.map_or(0, ms),
            heartbeat_ms: self.heartbeat.map_or(0, ms),
        }
    }

    /// Reads a recorded policy.
    pub fn from_proto(p: &v1::RetryPolicy) -> Result<Self, String> {
        let some = |ms: u64| (ms > 0).then(|| Duration::from_millis(ms));
        let policy = Self {
            max_attempts: p.max_attempts,
            initial_backoff: Duration::from_millis(p.initial_backoff_ms),
            backoff_factor: p.backoff_factor,
            max_backoff: Duration::from_millis(p.max_backoff_ms),
            non_retryable: p
                .non_retryable
                .iter()
                .map(|k| FailureKind::parse(k).map_err(|r| r.message))
                .collect::<Result<_, _>>()?,
            timeout: some(p.timeout_ms),
            heartbeat: some(p.heartbeat_ms),
        };
        policy.check()?;
        Ok(policy)
    }
}
