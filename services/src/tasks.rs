//! Small pieces every service uses around its tasks: abort a task or stop an actor when
//! its owner goes, and keep a JetStream message alive while it is worked on.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::{AckKind, Message};

/// Aborts a task when dropped.
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Stops an actor when its service's task ends or is dropped.
pub struct StopOnDrop<T: ractor::Message>(pub ractor::ActorRef<T>);

impl<T: ractor::Message> Drop for StopOnDrop<T> {
    fn drop(&mut self) {
        self.0.stop(None);
    }
}

/// Runs `work` for `msg`, telling JetStream every `every` that the message is still being
/// worked on, so that a slow job (a pull, a scan) is not redelivered to someone else.
pub async fn with_progress<F: Future>(msg: &Message, every: Duration, work: F) -> F::Output {
    while_working(every, work, || async {
        let _ = msg.ack_with(AckKind::Progress).await;
    })
    .await
}

/// Runs `work`, calling `progress` every `every` until it is done.
pub async fn while_working<F, P, PF>(every: Duration, work: F, mut progress: P) -> F::Output
where
    F: Future,
    P: FnMut() -> PF,
    PF: Future<Output = ()>,
{
    tokio::pin!(work);
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            r = &mut work => return r,
            _ = tick.tick() => progress().await,
        }
    }
}
