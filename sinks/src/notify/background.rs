//! Where the background flushes run: a runtime of its own whose threads (its one worker
//! and the blocking threads its file writes use) run at the lowest CPU priority (nice
//! 19). A flush serializes the notification log's changes, writes spool objects and
//! checkpoints, fsyncs them and deletes the journal objects they fold in; on a machine
//! whose cores are busy with deliveries, that work waits for idle CPU instead of
//! delaying a notification. It is still done: nice 19 yields to busier threads but is
//! never starved (the kernel gives every runnable thread a share), and the operator
//! waits for a flush before it starts the next.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

/// The nice value of the flush threads.
const NICE: i32 = 19;

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(8)
            .thread_name("mcpulse-notify-flush")
            .on_thread_start(lower_priority)
            .enable_all()
            .build()
            .expect("the notify flush runtime starts")
    })
}

/// Lowers the calling thread's CPU priority (on Linux the nice value is per thread).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority on the calling thread (who = 0) only changes its nice value.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, NICE);
    }
}

/// Runs `future` on the flush runtime.
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    runtime().spawn(future)
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn flushes_run_at_the_lowest_priority() {
        let nice = super::spawn(async {
            tokio::task::spawn_blocking(|| {
                // SAFETY: reads the calling thread's nice value.
                unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
            })
            .await
            .unwrap()
        })
        .await
        .unwrap();
        if cfg!(target_os = "linux") {
            assert_eq!(nice, super::NICE);
        }
    }
}
