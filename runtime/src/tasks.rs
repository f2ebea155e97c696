//! Background tasks that stop between two passes, never in the middle of one.

use std::{future::Future, time::Duration};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A service's background tasks, stopped together through one [`CancellationToken`].
///
/// A task learns of the stop through its token and returns at a point where what it writes is
/// whole; [`Tasks::stop`] waits for that. Nothing is aborted: an abort lands on whatever
/// `.await` the task is at, which can be between two statements of one logical write.
#[derive(Debug, Default)]
pub struct Tasks {
    token: CancellationToken,
    running: Vec<(&'static str, JoinHandle<()>)>,
}

impl Tasks {
    /// No tasks yet, and a fresh token.
    pub fn new() -> Self {
        Self::default()
    }

    /// The token every task is stopped through (for a task spawned elsewhere, such as a server's
    /// graceful shutdown, that must stop with these).
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Spawns `task` with the token. It must watch the token (`token.cancelled()`) wherever it
    /// waits, and return when it is cancelled.
    pub fn spawn<F, Fut>(&mut self, name: &'static str, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let handle = tokio::spawn(task(self.token.clone()));
        self.running.push((name, handle));
    }

    /// Runs `pass` at once and then every `period` until the token is cancelled. The token is
    /// only watched between passes: a pass that has begun runs to its end, and stopping waits
    /// for it. A pass that outlasts `period` delays the next one instead of causing a burst.
    pub fn every<F, Fut>(&mut self, name: &'static str, period: Duration, mut pass: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        self.spawn(name, move |token| async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    () = token.cancelled() => return,
                    _ = tick.tick() => {}
                }
                pass().await;
            }
        });
    }

    /// Cancels the token and waits for every task to return. A task that panicked is logged, not
    /// propagated: the others still get to stop.
    pub async fn stop(self) {
        self.token.cancel();
        for (name, handle) in self.running {
            if let Err(e) = handle.await {
                tracing::error!(target: "decloud::tasks", task = name, error = %e, "background task failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use tokio::sync::{Notify, mpsc};

    use super::*;

    #[tokio::test]
    async fn stop_waits_for_the_pass_under_way_and_starts_no_other() {
        let mut tasks = Tasks::new();
        let (entered, mut entries) = mpsc::unbounded_channel();
        let gate = Arc::new(Notify::new());
        let finished = Arc::new(AtomicUsize::new(0));
        {
            let (gate, finished) = (gate.clone(), finished.clone());
            tasks.every("pass", Duration::from_millis(1), move || {
                let (entered, gate, finished) = (entered.clone(), gate.clone(), finished.clone());
                async move {
                    entered.send(()).unwrap();
                    // The middle of a write: the pass cannot go on until the test lets it.
                    gate.notified().await;
                    finished.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        entries.recv().await.unwrap();
        let token = tasks.token();
        let stopping = tokio::spawn(tasks.stop());
        while !token.is_cancelled() {
            tokio::task::yield_now().await;
        }
        // The pass is held at the gate, so stopping cannot have completed.
        assert!(!stopping.is_finished());
        assert_eq!(finished.load(Ordering::SeqCst), 0);
        gate.notify_one();
        stopping.await.unwrap();
        assert_eq!(finished.load(Ordering::SeqCst), 1);
        // The task has returned (its sender is gone) after exactly one pass.
        assert_eq!(entries.recv().await, None);
    }

    #[tokio::test]
    async fn spawned_tasks_see_the_cancellation() {
        let mut tasks = Tasks::new();
        let cleaned_up = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let cleaned_up = cleaned_up.clone();
            tasks.spawn("waiter", move |token| async move {
                token.cancelled().await;
                cleaned_up.fetch_add(1, Ordering::SeqCst);
            });
        }
        let outside = tasks.token();
        assert!(!outside.is_cancelled());
        tasks.stop().await;
        assert!(outside.is_cancelled());
        assert_eq!(cleaned_up.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_panicking_task_does_not_keep_the_others_running() {
        let mut tasks = Tasks::new();
        tasks.spawn("panics", |_| async { panic!("on purpose") });
        let stopped = Arc::new(AtomicUsize::new(0));
        let seen = stopped.clone();
        tasks.spawn("waits", move |token| async move {
            token.cancelled().await;
            seen.fetch_add(1, Ordering::SeqCst);
        });
        tasks.stop().await;
        assert_eq!(stopped.load(Ordering::SeqCst), 1);
    }
}
