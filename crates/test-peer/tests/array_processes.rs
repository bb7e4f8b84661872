//! Cross-process tests of shared arrays and their lock: every peer is a real child process
//! (`shmpipe-array-peer`) mapping the same shared memory as this test process.

use shmpipe_core::{Backing, Dtype, Error, SharedArray, WaitOptions};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod common;

use common::peer::Peer;

/// Runs `shmpipe-array-peer ARGS`.
fn array_peer(args: &[&str]) -> Peer {
    Peer::run_program(env!("CARGO_BIN_EXE_shmpipe-array-peer"), args)
}

/// A shared array made for one test, removed when the test ends.
struct TestArray {
    name: String,
    array: SharedArray,
}

impl TestArray {
    fn new(tag: &str, dtype: Dtype, shape: &[u64]) -> Self {
        Self::new_in(tag, dtype, shape, Backing::Shm)
    }

    fn new_in(tag: &str, dtype: Dtype, shape: &[u64], backing: Backing) -> Self {
        let name = format!("{tag}{:08x}", rand::random::<u32>());
        let array = SharedArray::create_in(&name, dtype, shape, backing).unwrap();
        assert_eq!(array.backing(), backing);
        Self { name, array }
    }

    fn u64_at(&self, i: usize) -> u64 {
        assert!((i as u64) < self.array.len());
        // SAFETY: `i` is inside the array of u64s; read after the writers are done (or under
        // the lock).
        unsafe { (self.array.as_ptr() as *const u64).add(i).read_volatile() }
    }

    fn set_u64(&self, i: usize, v: u64) {
        assert!((i as u64) < self.array.len());
        // SAFETY: `i` is inside the array of u64s; the peers read this element atomically.
        let cell = unsafe { &*((self.array.as_ptr() as *const AtomicU64).add(i)) };
        cell.store(v, Ordering::Release);
    }
}

impl Drop for TestArray {
    fn drop(&mut self) {
        let _ = SharedArray::remove(&self.name);
    }
}

#[test]
fn eight_processes_incrementing_under_the_lock_lose_no_update() {
    const PROCS: u64 = 8;
    const EACH: u64 = 20_000;
    let t = TestArray::new("inc", Dtype::BigUint64, &[2]);
    let mut peers: Vec<Peer> = (0..PROCS)
        .map(|_| array_peer(&["increment", &t.name, &EACH.to_string()]))
        .collect();
    for p in &mut peers {
        assert_eq!(p.line(), "ready");
    }
    // All eight start together, so they really contend for the lock.
    let start = Instant::now();
    t.set_u64(1, 1);
    for p in &mut peers {
        assert_eq!(p.line(), "done 0", "no lock was recovered");
        p.wait_success();
    }
    let took = start.elapsed();
    assert_eq!(t.u64_at(0), PROCS * EACH);
    assert_eq!(t.array.lock_recoveries(), 0);
    assert_eq!(t.array.lock_holder_pid(), 0, "the lock is free");
    eprintln!(
        "{} locked increments in {took:?} ({:.0} ns each)",
        PROCS * EACH,
        took.as_secs_f64() * 1e9 / (PROCS * EACH) as f64
    );
}

#[test]
fn a_holder_killed_while_holding_is_recovered_and_the_next_holder_is_told() {
    holder_killed_while_holding(Backing::Shm);
}

#[cfg(target_os = "linux")]
#[test]
fn a_sealed_array_recovers_a_holder_killed_while_holding() {
    holder_killed_while_holding(Backing::Memfd);
}

fn holder_killed_while_holding(backing: Backing) {
    let t = TestArray::new_in("kill", Dtype::BigUint64, &[2], backing);
    let mut holder = array_peer(&["hold", &t.name]);
    assert_eq!(holder.line(), "held");
    assert_eq!(t.array.lock_holder_pid(), holder.pid());
    // A live holder is never taken over.
    assert!(matches!(
        t.array
            .lock(&WaitOptions::timeout(Duration::from_millis(300))),
        Err(Error::Timeout)
    ));
    assert_eq!(t.array.try_lock().unwrap(), None);
    // SIGKILL, not reaped yet: a zombie counts as dead.
    holder.signal(libc::SIGKILL);
    let start = Instant::now();
    let got = t
        .array
        .lock(&WaitOptions::timeout(Duration::from_secs(5)))
        .unwrap();
    let took = start.elapsed();
    assert!(got.recovered);
    assert_eq!(got.previous_owner_pid, Some(holder.pid()));
    assert!(
        took < Duration::from_millis(1500),
        "recovered after {took:?}"
    );
    assert_eq!(
        t.u64_at(1),
        u64::MAX,
        "the dead holder's half-done write is visible"
    );
    t.array.unlock().unwrap();
    let again = t.array.try_lock().unwrap().unwrap();
    assert!(!again.recovered, "a recovery is reported once");
    t.array.unlock().unwrap();
}

#[test]
fn waiters_in_other_processes_recover_a_killed_holder_exactly_once() {
    const EACH: u64 = 200;
    let t = TestArray::new("wait", Dtype::BigUint64, &[2]);
    let mut holder = array_peer(&["hold", &t.name]);
    assert_eq!(holder.line(), "held");
    let mut waiters: Vec<Peer> = (0..3)
        .map(|_| array_peer(&["increment", &t.name, &EACH.to_string()]))
        .collect();
    for w in &mut waiters {
        assert_eq!(w.line(), "ready"); // element 1 is set (by the holder): they go at once
    }
    std::thread::sleep(Duration::from_millis(300)); // all three are waiting by now
    assert_eq!(t.u64_at(0), 0);
    holder.kill(); // and reaped
    let mut recovered = 0;
    for w in &mut waiters {
        let line = w.line();
        recovered += line.strip_prefix("done ").unwrap().parse::<u32>().unwrap();
        w.wait_success();
    }
    assert_eq!(recovered, 1, "exactly one waiter took the lock over");
    assert_eq!(t.u64_at(0), 3 * EACH);
    assert_eq!(t.array.lock_recoveries(), 1);
}

#[test]
fn a_child_attaches_by_name_learns_dtype_and_shape_and_writes_in_place() {
    let t = TestArray::new("io", Dtype::Float64, &[10_000, 100]);
    let mut d = array_peer(&["describe", &t.name]);
    assert_eq!(d.line(), "float64 10000x100");
    d.wait_success();
    let mut w = array_peer(&["write", &t.name, "999999", "-1.25"]);
    assert_eq!(w.line(), "ok");
    w.wait_success();
    // SAFETY: the last of 1,000,000 f64s; the writer has exited.
    let v = unsafe { (t.array.as_ptr() as *const f64).add(999_999).read() };
    assert_eq!(v, -1.25);
    let other = TestArray::new("io", Dtype::Int16, &[2, 3, 4]);
    let mut d = array_peer(&["describe", &other.name]);
    assert_eq!(d.line(), "int16 2x3x4");
    d.wait_success();
}
