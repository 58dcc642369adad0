//! `logcollect completions` and `logcollect man`: what an operator installs
//! once (no broker needed).

mod support;

use support::*;

#[test]
fn completions_and_man_pages() {
    let bash = run(logcollect(&["completions", "bash"]), "");
    assert!(bash.status.success(), "{}", bash.stderr);
    for want in [
        "_logcollect()",
        "--position-file",
        "--max-length",
        "--bad-lines",
    ] {
        assert!(
            bash.stdout.contains(want),
            "{want} missing from the bash script"
        );
    }
    let zsh = run(logcollect(&["completions", "zsh"]), "");
    assert!(zsh.status.success() && zsh.stdout.starts_with("#compdef logcollect"));
    let bad = run(logcollect(&["completions", "tcsh"]), "");
    assert_eq!(bad.status.code(), Some(2), "{}", bad.stderr);

    let page = run(logcollect(&["man"]), "");
    assert!(page.status.success(), "{}", page.stderr);
    assert!(
        page.stdout.starts_with(".ie"),
        "roff: {}",
        &page.stdout[..40]
    );
    assert!(page.stdout.contains(".TH logcollect 1"), "{}", page.stdout);
    for sub in ["send", "tail", "doctor", "setup"] {
        assert!(page.stdout.contains(sub), "{sub} missing from the page");
    }
    let send = run(logcollect(&["man", "send"]), "");
    assert!(send.status.success(), "{}", send.stderr);
    assert!(
        send.stdout.contains(".TH logcollect-send 1"),
        "{}",
        send.stdout
    );
    assert!(send.stdout.contains("position\\-file"), "{}", send.stdout);
    let none = run(logcollect(&["man", "nope"]), "");
    assert_eq!(none.status.code(), Some(2), "{}", none.stderr);
    assert!(
        none.stderr.contains("expected one of send, tail"),
        "{}",
        none.stderr
    );
}
