//! Test peer that plays another user, or a same-user process that truncates (run as another
//! uid through `setpriv` by the tests). Not part of the library's API.
//!
//! Roles:
//! - `squat queue MODE`: creates a queue, sets its mode to MODE (octal), prints `name NAME` and
//!   sleeps until killed.
//! - `squat array NAME MODE`: the same with a shared array named NAME (prints the array's
//!   segment name).
//! - `squat blob MODE`: the same with a blob segment of 4096 bytes, filled, in the state a
//!   producer leaves a sent blob in, and published ready.
//! - `truncate NAME`: prints `uid N`, then tries to truncate `/dev/shm/NAME` to 0 bytes and
//!   prints `truncate ok` or `truncate error KIND`.
//! - `truncate-memfd PID NAME` (Linux): finds the sealed memory of the pipe NAME among process
//!   PID's descriptors (`/proc/PID/fd/N` linking to `/memfd:shmpipe:NAME (deleted)`), opens it
//!   read-write (or prints `no memfd`), prints `found LEN`, tries `ftruncate` to 0, LEN - 4096 and
//!   LEN + 4096, printing `ftruncate LEN ok|EPERM|errno N` for each, then `seals LIST` (of
//!   shrink, grow, seal, write, as `F_GET_SEALS` says) and `size LEN` (its size afterwards).
//! - `map NAME`: maps the queue NAME, prints `mapped`, waits (up to 10 s) until the file in
//!   `/dev/shm` is shorter than the mapping, then reads every byte of the segment's body and
//!   prints `read N` (a truncated segment kills it with SIGBUS first).

#[cfg(unix)]
fn main() {
    use shmpipe_core::{Dtype, Queue, QueueOptions, Segment, SegmentKind, SharedArray};
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    use shmpipe_test_peer::peer_io::say;
    fn chmod(name: &str, mode: &str) {
        let mode = u32::from_str_radix(mode, 8).expect("octal mode");
        let path = std::path::Path::new("/dev/shm").join(name);
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    fn sleep_forever() -> ! {
        loop {
            std::thread::sleep(Duration::from_secs(60));
        }
    }

    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> &str {
        args.get(i)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("argument {i} missing: {args:?}"))
    };
    match (arg(0), args.get(1).map(String::as_str)) {
        ("squat", Some("queue")) => {
            let q = Queue::create(&QueueOptions {
                capacity: 4,
                bytes: 4096,
                max_producers: 2,
            })
            .unwrap();
            chmod(q.name(), arg(2));
            say(&format!("name {}", q.name()));
            sleep_forever();
        }
        ("squat", Some("array")) => {
            let a = SharedArray::create(arg(2), Dtype::Float64, &[4]).unwrap();
            let seg = format!("{}{}", shmpipe_core::ARRAY_NAME_PREFIX, arg(2));
            chmod(&seg, arg(3));
            say(&format!("name {seg}"));
            let _keep = a;
            sleep_forever();
        }
        ("squat", Some("blob")) => {
            let seg = Segment::create(SegmentKind::Blob, 4096).unwrap();
            // SAFETY: the body is 4096 bytes, mapped while `seg` lives.
            unsafe { std::ptr::write_bytes(seg.body_ptr(), 0x5A, 4096) };
            // The blob state word (offset 48 of the header): SENT, as a producer leaves a blob
            // it sent. SAFETY: the header's 128 bytes are mapped and the word is 8-aligned.
            unsafe {
                let word = seg
                    .body_ptr()
                    .sub(shmpipe_core::SEGMENT_HEADER_SIZE)
                    .add(48);
                (*(word as *const std::sync::atomic::AtomicU64))
                    .store(1, std::sync::atomic::Ordering::Relaxed);
            }
            seg.publish_ready();
            chmod(seg.name(), arg(2));
            say(&format!("name {}", seg.name()));
            sleep_forever();
        }
        ("truncate", Some(name)) => {
            // SAFETY: geteuid has no preconditions.
            say(&format!("uid {}", unsafe { libc::geteuid() }));
            let path = std::path::Path::new("/dev/shm").join(name);
            match std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|f| f.set_len(0))
            {
                Ok(()) => say("truncate ok"),
                Err(e) => say(&format!("truncate error {:?}", e.kind())),
            }
        }
        ("map", Some(name)) => {
            let seg = Segment::open(name, SegmentKind::Queue, Duration::from_secs(2)).unwrap();
            say("mapped");
            let path = std::path::Path::new("/dev/shm").join(name);
            let mapped = (shmpipe_core::SEGMENT_HEADER_SIZE + seg.body_len()) as u64;
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::fs::metadata(&path).map_or(0, |m| m.len()) >= mapped
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(2));
            }
            // SAFETY: the body is `body_len` bytes, mapped while `seg` lives (a peer may have
            // truncated the file under it: that is what this role is for, and it dies of it).
            let body = unsafe { std::slice::from_raw_parts(seg.body_ptr(), seg.body_len()) };
            let sum: u64 = body.iter().map(|&b| b as u64).sum();
            std::hint::black_box(sum);
            say(&format!("read {}", body.len()));
        }
        #[cfg(target_os = "linux")]
        ("truncate-memfd", Some(pid)) => truncate_memfd(pid, arg(2)),
        _ => panic!("unknown role: {args:?}"),
    }
}

/// The `truncate-memfd` role (see the module docs).
#[cfg(target_os = "linux")]
fn truncate_memfd(pid: &str, name: &str) {
    use shmpipe_test_peer::peer_io::say;
    use std::os::fd::AsRawFd;
    let label = format!("/memfd:shmpipe:{name} (deleted)");
    let fds = std::path::Path::new("/proc").join(pid).join("fd");
    let found = std::fs::read_dir(&fds)
        .unwrap()
        .flatten()
        .find(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == label.as_str()));
    let Some(entry) = found else {
        say("no memfd");
        return;
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(entry.path())
        .unwrap();
    let fd = file.as_raw_fd();
    let len = file.metadata().unwrap().len() as i64;
    say(&format!("found {len}"));
    for new_len in [0, len - 4096, len + 4096] {
        // SAFETY: `fd` is open for writing; this is the attack the role plays (a refused
        // ftruncate changes nothing; an allowed one is what the test looks for).
        let rc = unsafe { libc::ftruncate(fd, new_len) };
        let err = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        match (rc, err) {
            (0, _) => say(&format!("ftruncate {new_len} ok")),
            (_, libc::EPERM) => say(&format!("ftruncate {new_len} EPERM")),
            (_, code) => say(&format!("ftruncate {new_len} errno {code}")),
        }
    }
    // SAFETY: `fd` is open; F_GET_SEALS takes no argument and only reads.
    let seals = unsafe { libc::fcntl(fd, libc::F_GET_SEALS) };
    let mut names = Vec::new();
    for (bit, what) in [
        (libc::F_SEAL_SHRINK, "shrink"),
        (libc::F_SEAL_GROW, "grow"),
        (libc::F_SEAL_SEAL, "seal"),
        (libc::F_SEAL_WRITE, "write"),
    ] {
        if seals >= 0 && seals & bit != 0 {
            names.push(what);
        }
    }
    say(&format!("seals {}", names.join(",")));
    say(&format!("size {}", file.metadata().unwrap().len()));
}

#[cfg(not(unix))]
fn main() {
    panic!("shmpipe-foreign-peer runs on Unix only");
}
