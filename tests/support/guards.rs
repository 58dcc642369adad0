//! Changes to the shared broker and the machine that a scenario needs, each
//! undone when its guard drops (also when the test panics): a user without
//! write permission, a small `max_message_size`, a tiny tmpfs. Only for
//! tests that hold [`crate::faults::serial`].

use std::path::{Path, PathBuf};
use std::process::Command;

fn rabbitmqctl(args: &[&str]) -> std::process::Output {
    Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl")
}

fn must(args: &[&str]) -> String {
    let out = rabbitmqctl(args);
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A broker user on vhost `/` that may configure and read everything but
/// write nothing: it connects and declares, every publish is refused (403).
/// Deleted on drop.
pub struct ReadOnlyUser {
    pub name: String,
    pub password: String,
}

impl ReadOnlyUser {
    pub fn create(name: &str) -> ReadOnlyUser {
        let password = format!("pw-{name}");
        must(&["-q", "add_user", name, &password]);
        let user = ReadOnlyUser {
            name: name.to_owned(),
            password,
        };
        must(&["-q", "set_permissions", "-p", "/", name, ".*", "", ".*"]);
        user
    }

    /// The user's URI for the broker at `host_port`.
    pub fn uri(&self, host_port: &str) -> String {
        format!("amqp://{}:{}@{host_port}//", self.name, self.password)
    }
}

impl Drop for ReadOnlyUser {
    fn drop(&mut self) {
        let _ = rabbitmqctl(&["-q", "delete_user", &self.name]);
    }
}

/// Whether a user of that name exists on the broker.
pub fn user_exists(name: &str) -> bool {
    must(&["-q", "list_users", "--no-table-headers"])
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

/// The broker's `max_message_size` set to `bytes` (channels opened from now
/// on refuse larger messages with 406); the previous setting is put back
/// on drop, or earlier with [`restore`](Self::restore).
pub struct MaxMessageSize {
    previous: Option<String>,
}

/// The broker's current `max_message_size` setting as Erlang prints it:
/// `{ok,134217728}`, or `undefined` when unset.
pub fn max_message_size_setting() -> String {
    must(&["eval", "application:get_env(rabbit, max_message_size)."])
}

impl MaxMessageSize {
    pub fn set(bytes: usize) -> MaxMessageSize {
        let previous = max_message_size_setting();
        must(&[
            "eval",
            &format!("application:set_env(rabbit, max_message_size, {bytes})."),
        ]);
        MaxMessageSize {
            previous: Some(previous),
        }
    }

    pub fn restore(&mut self) {
        let Some(previous) = self.previous.take() else {
            return;
        };
        let expr = match previous
            .strip_prefix("{ok,")
            .and_then(|v| v.strip_suffix('}'))
        {
            Some(v) => format!("application:set_env(rabbit, max_message_size, {v})."),
            None => "application:unset_env(rabbit, max_message_size).".to_owned(),
        };
        let _ = rabbitmqctl(&["eval", &expr]);
    }
}

impl Drop for MaxMessageSize {
    fn drop(&mut self) {
        self.restore();
    }
}

/// The broker's memory high watermark as `rabbitmqctl` reports it.
pub fn memory_watermark() -> String {
    must(&["eval", "vm_memory_monitor:get_vm_memory_high_watermark()."])
}

/// A tmpfs of `size` (such as `2m`) mounted on a new directory; unmounted
/// and removed on drop.
pub struct Tmpfs {
    pub dir: PathBuf,
}

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "mount a tmpfs on {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            dir: dir.to_owned(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
