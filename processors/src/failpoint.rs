//! Crash injection for tests: `MCPULSE_FAILPOINT=name:n` makes the process abort (no
//! cleanup, like `kill -9`) the n-th time it passes the failpoint `name`. Used by the
//! end-to-end crash tests to die at the worst moments, e.g. after a cut's objects are
//! written but before its offsets are committed. Unset, a failpoint costs one atomic load.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

struct Armed {
    name: String,
    remaining: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var("MCPULSE_FAILPOINT").ok()?;
            let (name, n) = spec.split_once(':').unwrap_or((spec.as_str(), "1"));
            Some(Armed {
                name: name.to_string(),
                remaining: AtomicU64::new(n.parse().unwrap_or(1)),
            })
        })
        .as_ref()
}

/// Aborts the process if `name` is armed and this is its n-th pass.
pub fn hit(name: &str) {
    if let Some(armed) = armed()
        && armed.name == name
        && armed.remaining.fetch_sub(1, Ordering::SeqCst) == 1
    {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}
