//! A discovered channel's call, attempt by attempt: the method's breaker,
//! then attempts along the balancer's order under the method's retry or
//! hedging policy, each through its instance's breaker, retries and
//! hedges paid for from the retry budget.
//!
//! What an attempt's end means:
//!
//! | end | instance breaker | next |
//! |---|---|---|
//! | an answer, success or business error | success (failure if slow) | done |
//! | an answer with a system failure (`Unavailable`, `Internal`, ...) | failure | retried if idempotent and the code is retryable, after the pushback or a backoff |
//! | nothing was sent (connect refused, ...) | failure | the next instance at once, any method, no budget |
//! | the connection was lost mid-call | failure | retried if idempotent |
//! | the per-attempt (or probe) timeout | failure | retried if idempotent |
//! | abandoned (lost a hedge race, the caller left) | failure if slow (or, hedged, out longer than the hedging delay), else nothing | — |
//!
//! The method's breaker sees each call once, with its final outcome.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::balanced::{Balanced, Pick};
use super::call::{Call, Outcome};
use super::endpoint::Endpoint;
use super::governance::{Counters, MethodState};
use super::route::deadline_status;
use crate::resilience::breaker::{Breaker, Pass, Verdict as BreakerVerdict};
use crate::resilience::fallback::is_system_failure;
use crate::resilience::policy::{
    HedgeDelay, HedgingPolicy, PREVIOUS_ATTEMPTS, Pushback, RETRY_PUSHBACK, RetryPolicy, pushback,
};
use crate::resilience::retry::{AttemptError, MAX_ATTEMPTS, Retry, Verdict, judge};
use crate::status::{Code, Status};

/// How one attempt on one instance ended.
enum End {
    /// The server answered, with a success or an error status.
    Answered(Outcome),
    /// No answer: nothing sent, or the connection lost (see [`judge`]).
    Error(AttemptError),
    /// The attempt's own timer (per-attempt timeout, a probe's timeout, or
    /// the call's deadline) fired first.
    TimedOut { deadline: bool },
    /// The instance's breaker refused it (it opened since the order was made).
    Refused,
}

/// A breaker's pass that records a failure if dropped after the slow
/// threshold, or is released if dropped earlier: an attempt abandoned
/// (a hedge race lost, the caller gone) says nothing unless it was slow.
struct Guard<'a> {
    breaker: &'a Breaker,
    pass: Option<Pass>,
    started: Instant,
    /// Abandoned after this long, the attempt was slow (a failure).
    abandoned_slow: Option<Duration>,
}

impl<'a> Guard<'a> {
    fn new(breaker: &'a Breaker, pass: Pass, started: Instant) -> Guard<'a> {
        let abandoned_slow = breaker.policy().slow_call_threshold();
        Guard { breaker, pass: Some(pass), started, abandoned_slow }
    }

    /// Also count the attempt slow if abandoned after `after`.
    fn slow_if_abandoned_after(mut self, after: Option<Duration>) -> Guard<'a> {
        self.abandoned_slow = match (self.abandoned_slow, after) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self
    }

    fn finish(mut self, verdict: BreakerVerdict, now: Instant) {
        if let Some(pass) = self.pass.take() {
            let slow = self.breaker.policy().slow_call_threshold().is_some_and(|t| now - self.started >= t);
            let verdict = if slow { BreakerVerdict::Failure } else { verdict };
            self.breaker.record(pass, verdict, now);
        }
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if let Some(pass) = self.pass.take() {
            let now = Instant::now();
            match self.abandoned_slow {
                Some(threshold) if now - self.started >= threshold => {
                    self.breaker.record(pass, BreakerVerdict::Failure, now);
                }
                _ => self.breaker.release(pass),
            }
        }
    }
}

/// The breaker's view of an answer.
fn answer_verdict(outcome: &Outcome) -> BreakerVerdict {
    match outcome.status() {
        // An instance that sheds is alive and protecting itself: opening
        // its breaker would move all its load onto the others and spread
        // the overload. The balancer's outstanding counts steer around
        // it, and the retry budget bounds what is sent again.
        Some(status) if status.code() == Code::ResourceExhausted => BreakerVerdict::Success,
        Some(status) if is_system_failure(status) => BreakerVerdict::Failure,
        _ => BreakerVerdict::Success,
    }
}

impl Balanced {
    /// Send `call` under its method's governance.
    pub(crate) async fn send(&self, call: &Call<'_>) -> Result<Outcome, Status> {
        let governance = &self.governance;
        Counters::bump(&governance.counters.calls);
        let method = governance.method(call.method);
        let now = Instant::now();
        let Some(pass) = method.breaker.try_pass(now) else {
            Counters::bump(&governance.counters.breaker_refusals);
            return Err(Status::unavailable(format!(
                "{} fails fast: its circuit breaker is open after too many failures on every instance of {}",
                call.method,
                self.service()
            )));
        };
        let guard = Guard::new(&method.breaker, pass, now);
        let set = self.snapshot();
        let order = self.order(&set, call.hash_key, now);
        if order.is_empty() {
            // Nothing was tried: the breaker learns nothing.
            return Err(self.nothing_known());
        }
        governance.budget.deposit(now);
        let result = match &method.policy.hedging {
            Some(hedging) if call.retry == Retry::IfLost => self.hedged(call, &order, hedging, method).await,
            _ => self.retried(call, &order, &method.policy.retry).await,
        };
        let verdict = match &result {
            Ok(outcome) => answer_verdict(outcome),
            Err(status) if is_system_failure(status) => BreakerVerdict::Failure,
            Err(_) => BreakerVerdict::Success,
        };
        guard.finish(verdict, Instant::now());
        result
    }

    /// One attempt of `call` on `pick`, the `previous`-th after others,
    /// ended by `timer` at the latest (`deadline` says whether that is the
    /// call's own deadline). Abandoned after `slow_after` (a hedge that
    /// lost the race to a later attempt elsewhere although it had had the
    /// hedging delay's head start), it counts as a slow call against its
    /// instance: that is how an instance that answers slowly or never is
    /// caught while hedges hide it from callers.
    async fn attempt(
        &self,
        call: &Call<'_>,
        pick: &Pick,
        previous: u32,
        timer: Timer,
        slow_after: Option<Duration>,
        force: bool,
    ) -> (End, Duration) {
        let load = &pick.member.load;
        let started = Instant::now();
        let pass = if pick.forced || force {
            Some(load.breaker.force(started))
        } else {
            load.breaker.try_pass(started)
        };
        let Some(pass) = pass else { return (End::Refused, Duration::ZERO) };
        // A probe is given its own timeout, so a hung one fails rather
        // than holding the breaker half-open.
        let timer = match pass {
            Pass::Probe { .. } => timer.sooner(started + load.breaker.policy().probe_timeout(), false),
            _ => timer,
        };
        let guard = Guard::new(&load.breaker, pass, started).slow_if_abandoned_after(slow_after);
        let _outstanding = load.start();
        Counters::bump(&self.governance.counters.attempts);
        let retried;
        let call = if previous == 0 {
            call
        } else {
            retried = with_previous_attempts(call, previous);
            &retried
        };
        let sent = pick.member.transport.call(call);
        let end = match timer.at {
            Some(at) => match tokio::time::timeout_at(at.into(), sent).await {
                Ok(result) => result,
                Err(_) => {
                    guard.finish(BreakerVerdict::Failure, Instant::now());
                    return (End::TimedOut { deadline: timer.deadline }, started.elapsed());
                }
            },
            None => sent.await,
        };
        let now = Instant::now();
        let end = match end {
            Ok(outcome) => {
                guard.finish(answer_verdict(&outcome), now);
                End::Answered(outcome)
            }
            Err(error) => {
                let verdict = match judge(&error, call.retry) {
                    Verdict::Failed => BreakerVerdict::Success,
                    Verdict::Unreachable | Verdict::Lost { .. } => BreakerVerdict::Failure,
                };
                guard.finish(verdict, now);
                End::Error(error)
            }
        };
        (end, now - started)
    }

    /// How a call ends when every breaker refused it.
    fn all_refused(&self) -> Result<Outcome, Status> {
        Err(Status::unavailable(format!(
            "no instance of {} could be tried: their circuit breakers are open",
            self.service()
        )))
    }

    /// Attempts one after another, as `policy` allows.
    async fn retried(
        &self,
        call: &Call<'_>,
        order: &[Pick],
        policy: &RetryPolicy,
    ) -> Result<Outcome, Status> {
        let idempotent = call.retry == Retry::IfLost;
        let counters = &self.governance.counters;
        // Attempts that may have reached a server (what the policy and the
        // metadata count), and tries of any kind (never-sent ones move on
        // for free, but not for ever).
        let (mut sent, mut tries, mut visited) = (0u32, 0usize, 0usize);
        let max_tries = (policy.max_attempts as usize).max(MAX_ATTEMPTS);
        let mut wait = None;
        // Built when the call ends: formatting the all-refused error up
        // front cost hundreds of instructions on every call.
        let mut last: Option<Result<Outcome, Status>> = None;
        let mut last_sent = false;
        while sent < policy.max_attempts && tries < max_tries && visited < order.len() * 2 {
            let pick = &order[visited % order.len()];
            visited += 1;
            if tries > 0 && last_sent {
                if !self.governance.budget.try_withdraw(Instant::now()) {
                    Counters::bump(&counters.budget_refusals);
                    return budget_spent(self.service(), last.unwrap_or_else(|| self.all_refused()));
                }
                Counters::bump(&counters.retries);
            }
            if let Some(wait) = wait.take() {
                tokio::time::sleep(wait).await;
            }
            let timer = Timer::of(call, policy.per_attempt_timeout);
            // A second lap with nothing sent: every breaker refused (the
            // order saw a slot that concurrent calls took first, say a
            // half-open one's probes). Trying beats certain failure, as
            // when more than the allowed share is open.
            let force = sent == 0 && visited > order.len();
            let (end, _) = self.attempt(call, pick, sent, timer, None, force).await;
            match end {
                End::Refused => continue,
                End::Answered(outcome) => {
                    tries += 1;
                    sent += 1;
                    let Some(status) = outcome.status() else { return Ok(outcome) };
                    let retryable = idempotent && policy.retries(status.code());
                    let pushed = pushback(outcome.metadata().get(RETRY_PUSHBACK));
                    if !retryable || pushed == Pushback::Stop || sent >= policy.max_attempts {
                        return Ok(outcome);
                    }
                    wait = Some(match pushed {
                        Pushback::After(delay) => {
                            Counters::bump(&counters.pushbacks);
                            delay
                        }
                        _ => policy.backoff_for(sent, fastrand::f64()),
                    });
                    last_sent = true;
                    last = Some(Ok(outcome));
                }
                End::Error(error) => {
                    tries += 1;
                    match judge(&error, call.retry) {
                        Verdict::Unreachable => {
                            last_sent = false;
                            last = Some(Err(error.into_status()));
                        }
                        Verdict::Lost { move_on } => {
                            sent += 1;
                            if !move_on {
                                return Err(error.into_status());
                            }
                            wait = Some(policy.backoff_for(sent, fastrand::f64()));
                            last_sent = true;
                            last = Some(Err(error.into_status()));
                        }
                        Verdict::Failed => return Err(error.into_status()),
                    }
                }
                End::TimedOut { deadline } => {
                    tries += 1;
                    sent += 1;
                    let status = if deadline {
                        deadline_status(call)
                    } else {
                        Status::deadline_exceeded(format!(
                            "an attempt of {} on {} did not answer within its per-attempt timeout",
                            call.method, pick.member.instance.addr
                        ))
                    };
                    if deadline || !idempotent {
                        return Err(status);
                    }
                    wait = Some(policy.backoff_for(sent, fastrand::f64()));
                    last_sent = true;
                    last = Some(Err(status));
                }
            }
        }
        match last.unwrap_or_else(|| self.all_refused()) {
            Ok(outcome) => Ok(outcome),
            Err(status) if last_sent => Err(status),
            Err(status) => Err(Status::unavailable(format!(
                "no instance of {} could be reached; last: {status}",
                self.service()
            ))),
        }
    }

    /// Attempts that overlap: a hedge after the delay, the next one at once
    /// after a non-fatal failure; the first success wins.
    async fn hedged(
        &self,
        call: &Call<'_>,
        order: &[Pick],
        policy: &HedgingPolicy,
        method: &MethodState,
    ) -> Result<Outcome, Status> {
        let counters = &self.governance.counters;
        let delay = hedge_delay(policy, method);
        let mut running = FuturesUnordered::new();
        let (mut sent, mut next) = (0u32, 0usize);
        let max_tries = (policy.max_attempts as usize).max(MAX_ATTEMPTS).min(order.len() * 2);
        // Whether any attempt reached a server; until one has, a second
        // lap through the order forces its way past the breakers (see
        // `retried`).
        let mut reached = false;
        let launch = |next: &mut usize, previous: u32, reached: bool| {
            let pick = &order[*next % order.len()];
            let force = !reached && *next >= order.len();
            *next += 1;
            let timer = Timer::of(call, None);
            async move { self.attempt(call, pick, previous, timer, Some(delay), force).await }
        };
        running.push(launch(&mut next, 0, reached));
        sent += 1;
        let hedge_timer = tokio::time::sleep(delay);
        tokio::pin!(hedge_timer);
        let mut hedging = policy.max_attempts > 1;
        // Built when the call ends: formatting the all-refused error up
        // front cost hundreds of instructions on every call.
        let mut last: Option<Result<Outcome, Status>> = None;
        loop {
            // Whether to start another attempt now, and whether it may go
            // for free (the last one never reached a server).
            let mut start_now: Option<bool> = None;
            tokio::select! {
                biased;
                Some((end, latency)) = running.next() => match end {
                    End::Answered(outcome) => {
                        reached = true;
                        let Some(status) = outcome.status() else {
                            if let Some(latencies) = &method.latencies {
                                latencies.record(latency);
                            }
                            return Ok(outcome);
                        };
                        if !policy.non_fatal.contains(&status.code()) {
                            return Ok(outcome);
                        }
                        match pushback(outcome.metadata().get(RETRY_PUSHBACK)) {
                            Pushback::Stop => hedging = false,
                            Pushback::After(wait) => {
                                Counters::bump(&counters.pushbacks);
                                hedge_timer.as_mut().reset((Instant::now() + wait).into());
                            }
                            Pushback::None => start_now = Some(false),
                        }
                        last = Some(Ok(outcome));
                    }
                    End::Error(error) => match judge(&error, call.retry) {
                        Verdict::Unreachable => {
                            start_now = Some(true);
                            last = Some(Err(error.into_status()));
                        }
                        Verdict::Lost { .. } => {
                            reached = true;
                            start_now = Some(false);
                            last = Some(Err(error.into_status()));
                        }
                        Verdict::Failed => return Err(error.into_status()),
                    },
                    End::TimedOut { .. } => return Err(deadline_status(call)),
                    End::Refused => start_now = Some(true),
                },
                () = &mut hedge_timer, if hedging && sent < policy.max_attempts && next < max_tries => {
                    if self.governance.budget.try_withdraw(Instant::now()) {
                        Counters::bump(&counters.hedges);
                        running.push(launch(&mut next, sent, reached));
                        sent += 1;
                        hedge_timer.as_mut().reset((Instant::now() + delay).into());
                    } else {
                        Counters::bump(&counters.budget_refusals);
                        hedging = false;
                    }
                }
                else => {}
            }
            if let Some(free) = start_now
                && next < max_tries
                && (free || sent < policy.max_attempts)
            {
                if free {
                    running.push(launch(&mut next, sent, reached));
                } else if self.governance.budget.try_withdraw(Instant::now()) {
                    Counters::bump(&counters.retries);
                    running.push(launch(&mut next, sent, reached));
                    sent += 1;
                } else {
                    Counters::bump(&counters.budget_refusals);
                    hedging = false;
                }
            }
            let more = hedging && sent < policy.max_attempts && next < max_tries;
            if running.is_empty() && !more {
                return last.unwrap_or_else(|| self.all_refused());
            }
        }
    }
}

/// When an attempt must end: the call's deadline, or sooner.
#[derive(Clone, Copy)]
struct Timer {
    at: Option<Instant>,
    /// Whether `at` is the call's own deadline.
    deadline: bool,
}

impl Timer {
    fn of(call: &Call<'_>, per_attempt: Option<Duration>) -> Timer {
        let own = Timer { at: call.deadline, deadline: call.deadline.is_some() };
        match per_attempt.and_then(|timeout| Instant::now().checked_add(timeout)) {
            Some(at) => own.sooner(at, false),
            None => own,
        }
    }

    fn sooner(self, at: Instant, deadline: bool) -> Timer {
        match self.at {
            Some(current) if current <= at => self,
            _ => Timer { at: Some(at), deadline },
        }
    }
}

/// The delay before a hedge.
fn hedge_delay(policy: &HedgingPolicy, method: &MethodState) -> Duration {
    match policy.delay {
        HedgeDelay::Fixed(delay) => delay,
        HedgeDelay::Adaptive { min, max, .. } => method
            .latencies
            .as_ref()
            .and_then(|latencies| latencies.estimate())
            .map_or(max, |estimate| estimate.clamp(min, max)),
    }
}

/// `call` again, saying in its metadata how many attempts came before.
fn with_previous_attempts<'a>(call: &Call<'a>, previous: u32) -> Call<'a> {
    let mut metadata = call.metadata.clone().into_owned();
    metadata.insert(PREVIOUS_ATTEMPTS, previous.to_string());
    Call {
        method: call.method,
        kind: call.kind,
        codec: call.codec,
        metadata: Cow::Owned(metadata),
        deadline: call.deadline,
        timeout: call.timeout,
        hash_key: call.hash_key,
        retry: call.retry,
        body: call.body,
    }
}

/// The call ends because the budget refused a retry: the last answer if a
/// server gave one, or the last error, saying why it was not retried.
fn budget_spent(service: &str, last: Result<Outcome, Status>) -> Result<Outcome, Status> {
    match last {
        Ok(outcome) => Ok(outcome),
        Err(status) => Err(Status::unavailable(format!(
            "the retry budget of {service} is spent (too many calls are failing); last: {status}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::BytesMut;

    use super::*;
    use crate::balance::Balance;
    use crate::client::call::CallKind;
    use crate::client::governance::{Governance, Policies};
    use crate::client::protocols::{Preference, Settings};
    use crate::codec::Codec;
    use crate::discovery::Instance;
    use crate::metadata::Metadata;

    #[tokio::test]
    async fn when_every_breaker_refuses_the_second_lap_forces_its_way() {
        let balanced = Balanced::new(
            "S".into(),
            Balance::P2c,
            None,
            Governance::new(Policies::default(), Arc::default()),
            Settings::default(),
            Preference::default(),
        );
        // Nothing listens on port 1 of loopback: the attempt, once let
        // through, fails at once as unreachable.
        balanced.replace(vec![Instance::new("S", "127.0.0.1:1")]);
        let set = balanced.snapshot();
        let breaker = &set.members[0].load.breaker;
        // Tripped long enough ago that it may probe now.
        let then = Instant::now().checked_sub(Duration::from_secs(5)).expect("the clock is past 5 s");
        for _ in 0..5 {
            let pass = breaker.try_pass(then).expect("closed");
            breaker.record(pass, BreakerVerdict::Failure, then);
        }
        let now = Instant::now();
        let order = balanced.order(&set, None, now);
        assert!(!order[0].forced, "a breaker that may probe is not forced");
        // A concurrent call takes the only free probe between the order
        // and the attempt (the default allows 3).
        let _probes: Vec<Pass> = (0..3).map(|_| breaker.try_pass(now).expect("a probe")).collect();
        let metadata = Metadata::new();
        let body = |_: Codec, _: &mut BytesMut| Ok(());
        let call = Call {
            method: "S.M",
            kind: CallKind::Unary,
            codec: Codec::Binary,
            metadata: Cow::Borrowed(&metadata),
            deadline: None,
            timeout: None,
            hash_key: None,
            retry: Retry::IfLost,
            body: &body,
        };
        let error =
            balanced.retried(&call, &order, &RetryPolicy::default()).await.expect_err("nothing listens");
        assert!(!error.to_string().contains("circuit breakers are open"), "{error}");
        assert!(balanced.governance.counters.attempts.sum() >= 1, "an attempt went out");
    }
}
