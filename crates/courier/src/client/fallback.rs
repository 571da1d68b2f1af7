//! [`Fallbacks`] as a client [`Layer`]: a degraded method is answered at
//! once; a system failure is answered by the fallback (see
//! `crate::resilience::fallback` for which failures those are).

use super::call::{Call, Outcome};
use super::layer::{Layer, Next};
use crate::resilience::Fallbacks;
use crate::resilience::fallback::is_system_failure;
use crate::service::BoxFuture;

impl Layer for Fallbacks {
    fn call<'a>(&'a self, call: &'a mut Call<'_>, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let Some(entry) = self.of(call.method()) else {
                return next.run(call).await;
            };
            let codec = call.codec();
            let fallback = |entry: &crate::resilience::fallback::Entry| match entry.answer(codec) {
                Ok(body) => Outcome::answered(body, codec),
                Err(status) => Outcome::from(status),
            };
            if entry.forced() {
                return fallback(entry);
            }
            let outcome = next.run(call).await;
            match outcome.status() {
                Some(status) if is_system_failure(status) => {
                    tracing::debug!(method = call.method(), %status, "answering with the fallback");
                    fallback(entry)
                }
                _ => outcome,
            }
        })
    }
}
