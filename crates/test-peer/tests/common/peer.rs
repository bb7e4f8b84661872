//! A child process of the integration tests (`shmpipe-peer`, or another program such as
//! `shmpipe-array-peer`): started with extra environment or through a wrapper command, its lines
//! read one by one, signalled, and always killed and reaped when the test ends however it ends.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The peer binary.
pub const PEER: &str = env!("CARGO_BIN_EXE_shmpipe-peer");

/// Runs `shmpipe-peer ROLE` to its end in a private mount namespace (`unshare -m`, root) with a
/// tmpfs of `size` (`16m`, `64m`) on `/dev/shm`; asserts that it succeeded, returns its stdout.
#[cfg(target_os = "linux")]
pub fn run_in_private_shm(size: &str, role: &str) -> String {
    let script = format!("mount -t tmpfs -o size={size} tmpfs /dev/shm && exec {PEER} {role}");
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output()
        .expect("run unshare (util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A running child.
pub struct Peer {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Peer {
    /// Runs `shmpipe-peer ARGS` with the extra environment `env`.
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(PEER);
        cmd.args(args).envs(env.iter().copied());
        Self::start(cmd)
    }

    /// Runs `shmpipe-peer ARGS`.
    pub fn run(args: &[&str]) -> Self {
        Self::spawn(args, &[])
    }

    /// Runs `program ARGS` (another helper binary).
    pub fn run_program(program: &str, args: &[&str]) -> Self {
        let mut cmd = Command::new(program);
        cmd.args(args);
        Self::start(cmd)
    }

    /// Runs `cmd` (whose stdout the peer's lines come from).
    pub fn start(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let out = BufReader::new(child.stdout.take().unwrap());
        Self { child, out }
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line the peer prints (empty once it has exited).
    pub fn line(&mut self) -> String {
        let mut s = String::new();
        self.out.read_line(&mut s).unwrap();
        s.trim_end().to_owned()
    }

    /// Sends `signal` to the child.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory-safety preconditions; the child is not reaped yet, so its
        // pid is still its own.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as libc::pid_t, signal) },
            0
        );
    }

    /// Waits for the child to exit, at most `limit`; `None` if it is still running then.
    pub fn exit_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the child to exit and returns the signal that killed it, if one did.
    pub fn killed_by(&mut self, limit: Duration) -> Option<i32> {
        let status = self
            .exit_within(limit)
            .unwrap_or_else(|| panic!("the peer still runs after {limit:?}"));
        status.signal()
    }

    /// Waits for the child to exit and asserts that it succeeded.
    pub fn wait_success(&mut self) {
        let status = self.child.wait().unwrap();
        assert!(status.success(), "peer failed: {status}");
    }

    /// Kills the child with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether `/dev/shm` has an entry `name`.
pub fn shm_exists(name: &str) -> bool {
    std::path::Path::new("/dev/shm").join(name).exists()
}

/// Removes `/dev/shm/name` when dropped (for segments a test leaves on purpose).
pub struct RemoveOnDrop(pub String);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(std::path::Path::new("/dev/shm").join(&self.0));
    }
}
