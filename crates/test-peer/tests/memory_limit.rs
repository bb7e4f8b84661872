//! The memory check made before shared memory is reserved, in a real cgroup: a peer process
//! moved into a fresh cgroup whose memory limit is 64 MiB is told that 16 MiB more fit and that
//! 128 MiB do not, by a `NoSpace` naming that cgroup's limit file (past the limit, reserving the
//! pages would end in the OOM killer). Linux, as root: the cgroup is made where this process's
//! memory controller is mounted (cgroup v2, or v1 on machines that keep it there, as this
//! project's VM) and removed at the end.

#![cfg(target_os = "linux")]

mod common;

use common::peer::PEER;
use std::path::{Path, PathBuf};
use std::process::Command;

const LIMIT: u64 = 64 << 20;

/// A cgroup made for this test, removed on drop.
struct TestCgroup {
    dir: PathBuf,
    /// The file that sets its memory limit.
    limit_file: PathBuf,
}

impl TestCgroup {
    /// A fresh cgroup with a memory limit of `limit` bytes, or why none can be made here.
    fn new(limit: u64) -> Result<Self, String> {
        let membership = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
        let mountinfo =
            std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
        let name = format!("shmpipe-test-{}", std::process::id());
        // cgroup v1 with the memory controller: a child of this process's own memory cgroup.
        let v1 = membership.lines().find_map(|line| {
            let mut f = line.splitn(3, ':');
            let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
            controllers
                .split(',')
                .any(|c| c == "memory")
                .then_some(path)
        });
        let (parent, limit_name) = if let Some(path) = v1 {
            let (root, point) = mount(&mountinfo, |fstype, opts| {
                fstype == "cgroup" && opts.split(',').any(|o| o == "memory")
            })
            .ok_or("the memory controller's cgroup v1 mount is not in /proc/self/mountinfo")?;
            let inside = Path::new(path)
                .strip_prefix(&root)
                .map_err(|_| format!("this process's memory cgroup {path} is outside {root:?}"))?;
            (point.join(inside), "memory.limit_in_bytes")
        } else {
            // cgroup v2: a child of the hierarchy's root, which may enable the controller for
            // its children while holding processes.
            let (_, point) = mount(&mountinfo, |fstype, _| fstype == "cgroup2")
                .ok_or("no cgroup v2 nor v1 memory hierarchy is mounted")?;
            let controllers = std::fs::read_to_string(point.join("cgroup.controllers"))
                .map_err(|e| format!("read {point:?}/cgroup.controllers: {e}"))?;
            if !controllers.split_whitespace().any(|c| c == "memory") {
                return Err(format!(
                    "no memory controller in {point:?} (cgroup v2) nor in v1"
                ));
            }
            std::fs::write(point.join("cgroup.subtree_control"), "+memory")
                .map_err(|e| format!("enable +memory in {point:?}/cgroup.subtree_control: {e}"))?;
            (point, "memory.max")
        };
        let dir = parent.join(name);
        std::fs::create_dir(&dir).map_err(|e| format!("mkdir {dir:?}: {e}"))?;
        let cgroup = Self {
            limit_file: dir.join(limit_name),
            dir,
        };
        std::fs::write(&cgroup.limit_file, limit.to_string())
            .map_err(|e| format!("write {:?}: {e}", cgroup.limit_file))?;
        Ok(cgroup)
    }

    /// Runs `shmpipe-peer ARGS` inside this cgroup to its end; returns its stdout.
    fn run_peer(&self, args: &[&str]) -> String {
        let procs = self.dir.join("cgroup.procs");
        let out = Command::new("sh")
            .arg("-c")
            .arg(r#"echo $$ > "$0" && exec "$@""#)
            .arg(&procs)
            .arg(PEER)
            .args(args)
            .output()
            .expect("run sh");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // The peer has exited; the kernel may take a moment to let go of the empty cgroup.
        for _ in 0..100 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        eprintln!("could not remove the test cgroup {:?}", self.dir);
    }
}

/// The root inside the hierarchy and the mount point of the first mount `wanted` accepts (by
/// filesystem type and super options).
fn mount(mountinfo: &str, wanted: impl Fn(&str, &str) -> bool) -> Option<(PathBuf, PathBuf)> {
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        let mut before = before.split(' ');
        let (root, point) = (before.nth(3)?, before.next()?);
        let mut after = after.split(' ');
        let (fstype, opts) = (after.next()?, after.nth(1)?);
        wanted(fstype, opts).then(|| (PathBuf::from(root), PathBuf::from(point)))
    })
}

#[test]
fn a_cgroup_memory_limit_is_named_before_anything_is_reserved() {
    if !common::skip::is_root() {
        return common::skip::cannot_run("needs root to make a cgroup");
    }
    let cgroup = match TestCgroup::new(LIMIT) {
        Ok(cgroup) => cgroup,
        Err(why) => return common::skip::cannot_run(&why),
    };
    let (fits, too_much) = ((16u64 << 20).to_string(), (128u64 << 20).to_string());
    let stdout = cgroup.run_peer(&["memory-headroom", &fits, &too_much]);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(lines[0], format!("ok {fits}"));
    let expected = format!(
        "no-space {too_much} not enough memory for {too_much} bytes (128.0 MiB) of shared \
         memory: the cgroup limit {} is {LIMIT} bytes (64.0 MiB), ",
        cgroup.limit_file.display()
    );
    assert!(
        lines[1].starts_with(&expected),
        "{:?}\nexpected it to start with\n{expected:?}",
        lines[1]
    );
}
