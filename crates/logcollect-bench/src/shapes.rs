//! The two log calls every caller benchmark times (`benches/caller.rs`,
//! `benches/caller_callgrind.rs`, `src/bin/caller_threads.rs`), written once so
//! that their figures are of the same call.

/// `tracing::info!` with three fields (a string, an integer, a float) and a
/// message. Its target is `caller`, the target the caller bench's own call
/// site had, so that records (and instruction counts) stay as they were.
#[inline(always)]
pub fn tracing_info_3_fields(i: u64) {
    tracing::info!(
        target: "caller",
        user = "ann",
        order = i,
        latency_ms = 1.5_f64,
        "request done"
    );
}

/// A `log` record at info with one formatted argument, handed to `logger`
/// directly (nothing is installed globally).
#[inline(always)]
pub fn log_info_fmt_arg(logger: &dyn log::Log, i: u64) {
    logger.log(
        &log::Record::builder()
            .args(format_args!("request {i} done"))
            .level(log::Level::Info)
            .target("bench::caller")
            .module_path_static(Some(module_path!()))
            .file_static(Some(file!()))
            .line(Some(line!()))
            .build(),
    );
}
