use clap::Parser;

// The process's allocator: mimalloc by default (BENCHMARKS.md, "Session
// 11"); glibc's with `--no-default-features`; jemalloc when asked for
// (it wins when both are on, as with `--all-features`).
#[cfg(all(feature = "alloc-mimalloc", not(feature = "alloc-jemalloc")))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "alloc-jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    // What `#[actix_web::main]` expands to.
    actix_web::rt::System::new().block_on(async {
        let cli = relais::cli::Cli::parse();
        match relais::cli::run(cli).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("relais: {err:#}");
                std::process::ExitCode::FAILURE
            }
        }
    })
}

/// mimalloc 3's defaults keep a burst's memory resident long after it:
/// arenas are committed eagerly on Linux and emptied pages purged only
/// `purge_delay` (1 000 ms) after they empty. Measured with `bench/run.sh
/// sqlite` (BENCHMARKS.md, "Session 11"): peak VmHWM 75 MiB with
/// the defaults, 68 with purging at once, 52 (glibc's) with purging at once
/// and arenas committed on demand. mimalloc reads its options from the
/// environment when the process loads; an operator's `MIMALLOC_PURGE_DELAY`
/// or `MIMALLOC_ARENA_EAGER_COMMIT` still wins.
#[cfg(all(feature = "alloc-mimalloc", not(feature = "alloc-jemalloc")))]
mod allocator {
    use libmimalloc_sys::{mi_option_set, mi_option_t};
    use std::ffi::c_long;

    /// Indices in mimalloc 3's `mi_option_e` (libmimalloc-sys exports no
    /// constant for these two); the test below pins them to their defaults,
    /// so a bundled mimalloc whose enum moved fails the tests.
    const ARENA_EAGER_COMMIT: mi_option_t = 4;
    const PURGE_DELAY: mi_option_t = 15;

    const TUNED: [(&str, mi_option_t, c_long); 2] = [
        ("MIMALLOC_ARENA_EAGER_COMMIT", ARENA_EAGER_COMMIT, 0),
        ("MIMALLOC_PURGE_DELAY", PURGE_DELAY, 0),
    ];

    /// Run by the loader with the executable's constructors, before `main`
    /// and Rust's runtime: the first arena is reserved by the first
    /// allocation and keeps the commit option it was reserved with. (Not in
    /// the test binary, whose test reads the defaults first.) ELF only: on
    /// other systems mimalloc keeps its defaults. The constructor only reads
    /// the environment (`getenv` under std's static lock: `environ` is set
    /// before constructors run) and writes mimalloc's option table; no other
    /// thread exists yet.
    #[cfg(all(not(test), target_os = "linux"))]
    #[used]
    #[unsafe(link_section = ".init_array")]
    static TUNE_AT_LOAD: extern "C" fn() = tune_at_load;

    #[cfg(all(not(test), target_os = "linux"))]
    extern "C" fn tune_at_load() {
        tune();
    }

    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    fn tune() {
        for (env, option, value) in TUNED {
            if std::env::var_os(env).is_none() {
                // SAFETY: an in-range option index (see the test); mimalloc's
                // options are plain longs, read on its slow paths.
                unsafe { mi_option_set(option, value) };
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use libmimalloc_sys::mi_option_get;

        fn get(option: mi_option_t) -> c_long {
            // SAFETY: as in `tune`.
            unsafe { mi_option_get(option) }
        }

        #[test]
        fn the_tuned_options_are_the_ones_meant() {
            if TUNED
                .iter()
                .any(|(env, ..)| std::env::var_os(env).is_some())
            {
                return;
            }
            // mimalloc 3.3's defaults: eager commit 2 ("on an OS that
            // overcommits"), purge delay 1 000 ms; their neighbours in the
            // enum hold 1, 0 or 1 (an index off by one fails here).
            assert_eq!(get(ARENA_EAGER_COMMIT), 2);
            assert_eq!(get(PURGE_DELAY), 1_000);
            tune();
            assert_eq!(get(ARENA_EAGER_COMMIT), 0);
            assert_eq!(get(PURGE_DELAY), 0);
        }
    }
}
