//! A process that panics, for `panic_hook.rs`: `panicker <exchange> thread`
//! panics on a named thread and goes on; `panicker <exchange> main` panics on
//! the main thread. Both boot with the default configuration, so the panic
//! hook is on (unless `LOGCOLLECT_PANIC_HOOK=false`, read as an override).

fn main() {
    let mut args = std::env::args().skip(1);
    let exchange = args.next().expect("usage: panicker <exchange> thread|main");
    let mode = args.next().expect("usage: panicker <exchange> thread|main");
    let config = logcollect_tests::config(&exchange)
        .env_overrides()
        .and_then(|b| b.build())
        .expect("a valid configuration");
    let _guard = logcollect::boot::default_config(config).expect("boot");
    match mode.as_str() {
        "thread" => {
            let worker = std::thread::Builder::new()
                .name("worker-7".to_owned())
                .spawn(|| panic!("boom in a thread"))
                .expect("spawn");
            assert!(worker.join().is_err(), "the thread panicked");
            log::info!(target: "app", "after the thread's panic");
        }
        "main" => panic!("boom in main"),
        other => panic!("unknown mode {other}"),
    }
}
