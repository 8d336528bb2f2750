//! The allocator: mimalloc, told to keep freed memory instead of returning it to the OS.
//!
//! The archiver builds large Arrow columns, drops them at every flush and builds them
//! again. Returning those pages to the OS (mimalloc's default after 10 ms) makes every
//! flush fault in and zero fresh pages, about a tenth of the CPU of the ingest path. The
//! memory kept is bounded by the configured buffers (`archive.flush_bytes`, the log's
//! `max_pending_bytes`, `ingest.max_inflight_bytes`), so it is held, not leaked.
//!
//! Transparent huge pages are turned off for the process. mimalloc asks for them on its
//! arenas, and then every fresh page it hands out faults in and zeroes 2 MiB; a query's
//! scan touches fresh pages all along (decoded columns, histograms), so a month-wide
//! `tool_latency_hourly` spent 40 % of its CPU in the kernel's `clear_page` and its first
//! run took 4.0 s instead of 1.7 s, with a third more resident memory.

/// `mi_option_purge_delay`: entry 15 of `mi_option_e` in both mimalloc.h v2 and v3
/// (libmimalloc-sys names it for neither; the test below checks the number).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Applies the allocator settings; call first thing in `main`.
pub fn tune() {
    // SAFETY: setting an option is a plain store into mimalloc's option table.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    disable_transparent_huge_pages();
}

/// `PR_SET_THP_DISABLE`: no transparent huge pages for this process's mappings, including
/// those already madvised (the kernel checks the flag at fault time). Best effort: a
/// kernel without the flag keeps its default.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integer arguments and only sets
    // a flag of the calling process.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// Gives a child process started by `command` the system's transparent-huge-page default
/// again (the flag set by [`tune`] is inherited across fork and exec): a program mcpulse
/// starts, such as a benchmark's baseline, runs as it would on its own.
pub fn default_huge_pages_for_child(command: &mut std::process::Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure runs between fork and exec and only makes the prctl
        // syscall, which is async-signal-safe and allocates nothing.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_THP_DISABLE, 0, 0, 0, 0);
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = command;
}

#[cfg(test)]
mod tests {
    #[test]
    fn purge_delay_option_number() {
        // mimalloc's default purge delay is 10 ms (v2) or 1000 ms (v3); the neighbouring
        // options default to 0, 1 or -1, so reading 10 or 1000 through the
        // number shows it names the purge delay.
        let default = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert!(
            matches!(default, 10 | 1000),
            "option {} is not purge_delay (value {default})",
            super::MI_OPTION_PURGE_DELAY
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn huge_pages_are_off_after_tuning() {
        // Not `tune()`: it would also change the purge delay the other test reads.
        super::disable_transparent_huge_pages();
        // SAFETY: PR_GET_THP_DISABLE only reads the calling process's flag.
        let disabled = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(disabled, 1);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn child_gets_the_system_default_back() {
        super::disable_transparent_huge_pages();
        let status = |restore: bool| {
            let mut cmd = std::process::Command::new("cat");
            cmd.arg("/proc/self/status");
            if restore {
                super::default_huge_pages_for_child(&mut cmd);
            }
            let out = cmd.output().expect("cat runs");
            let text = String::from_utf8(out.stdout).expect("utf-8");
            text.lines()
                .find_map(|l| l.strip_prefix("THP_enabled:").map(|v| v.trim().to_string()))
        };
        // Kernels before 5.0 do not report the flag; nothing to compare there.
        if let Some(inherited) = status(false) {
            assert_eq!(inherited, "0", "the flag is inherited without the reset");
            assert_eq!(status(true).as_deref(), Some("1"));
        }
    }
}
