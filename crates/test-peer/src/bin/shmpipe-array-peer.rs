//! Test peer for shared arrays: plays one process in the cross-process array tests
//! (`crates/test-peer/tests/array_processes.rs`). Not part of the library's API.
//!
//! Roles (all take the array name first):
//! - `increment NAME COUNT`: prints `ready`, waits until element 1 is non-zero (the start
//!   signal), then COUNT times takes the lock, reads element 0 (a u64), writes it back plus one,
//!   and unlocks; prints `done RECOVERED` (how many of its locks were recoveries from a holder
//!   that went away).
//! - `hold NAME`: takes the lock, writes `u64::MAX` to element 1 (a half-done update), prints
//!   `held`, and sleeps until killed.
//! - `describe NAME`: prints `DTYPE D0xD1x…`.
//! - `write NAME INDEX VALUE`: writes the f64 VALUE at INDEX of a float64 array, prints `ok`.
//! - `read NAME INDEX`: prints the f64 at INDEX of a float64 array.
//! - `create-sealed NAME LEN`: creates a float64 array of LEN elements in sealed memory
//!   (`Backing::Memfd`), prints `created`, waits until element 0 is non-zero, and exits
//!   normally (dropping its handle).
//! - `write-and-hold NAME INDEX VALUE`: writes as `write` does, prints `ok`, waits until
//!   element 1 is non-zero, and exits normally.

use shmpipe_core::{Backing, Dtype, SharedArray, WaitOptions};

use shmpipe_test_peer::peer_io::{arg, say};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let role = args.first().map(String::as_str).unwrap_or("");
    if role == "create-sealed" {
        let len: u64 = arg(&args, 2);
        let array =
            SharedArray::create_in(&args[1], Dtype::Float64, &[len], Backing::Memfd).unwrap();
        assert_eq!(array.backing(), Backing::Memfd);
        say("created");
        wait_nonzero(&array, 0);
        return;
    }
    let array = SharedArray::open(&args[1]).unwrap();
    match role {
        "increment" => {
            assert_eq!(array.dtype(), Dtype::BigUint64);
            let count: u64 = arg(&args, 2);
            let cell = array.as_ptr() as *mut u64;
            say("ready");
            // SAFETY: element 1 exists (the tests make arrays of at least 2 u64s); it is only
            // read here, as an atomic, since the parent writes it while we wait.
            let go = unsafe { &*(cell.add(1) as *const std::sync::atomic::AtomicU64) };
            while go.load(std::sync::atomic::Ordering::Acquire) == 0 {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            let mut recovered = 0;
            for _ in 0..count {
                if array.lock(&WaitOptions::forever()).unwrap().recovered {
                    recovered += 1;
                }
                // SAFETY: element 0 is an aligned u64 inside the array; every writer holds the
                // lock, whose Acquire/Release orders these accesses between processes.
                unsafe {
                    let v = cell.read_volatile();
                    std::hint::spin_loop();
                    cell.write_volatile(v + 1);
                }
                array.unlock().unwrap();
            }
            say(&format!("done {recovered}"));
        }
        "hold" => {
            array.lock(&WaitOptions::forever()).unwrap();
            // SAFETY: element 1 exists (the tests make arrays of at least 2 u64s); we hold the lock.
            unsafe { (array.as_ptr() as *mut u64).add(1).write_volatile(u64::MAX) };
            say("held");
            loop {
                std::thread::sleep(std::time::Duration::from_secs(60));
            }
        }
        "describe" => {
            let shape: Vec<String> = array.shape().iter().map(u64::to_string).collect();
            say(&format!("{} {}", array.dtype().name(), shape.join("x")));
        }
        "write" => {
            assert_eq!(array.dtype(), Dtype::Float64);
            let (index, value): (u64, f64) = (arg(&args, 2), arg(&args, 3));
            assert!(index < array.len());
            // SAFETY: `index` is inside the array (checked above); the test reads it only after
            // this process has exited.
            unsafe {
                (array.as_ptr() as *mut f64)
                    .add(index as usize)
                    .write(value)
            };
            say("ok");
        }
        "read" => {
            let index: u64 = arg(&args, 2);
            assert!(array.dtype() == Dtype::Float64 && index < array.len());
            // SAFETY: `index` is inside the float64 array (checked above); the test has its
            // writer report `ok` before it starts this reader.
            let value = unsafe { (array.as_ptr() as *const f64).add(index as usize).read() };
            say(&format!("{value}"));
        }
        "write-and-hold" => {
            let (index, value): (u64, f64) = (arg(&args, 2), arg(&args, 3));
            assert!(array.dtype() == Dtype::Float64 && index < array.len() && array.len() >= 2);
            // SAFETY: as for `write`.
            unsafe {
                (array.as_ptr() as *mut f64)
                    .add(index as usize)
                    .write(value)
            };
            say("ok");
            wait_nonzero(&array, 1);
        }
        other => panic!("unknown role {other:?}"),
    }
}

/// Waits until the f64 at `index` (inside the float64 `array`) is non-zero: the test's signal.
fn wait_nonzero(array: &SharedArray, index: usize) {
    assert!(array.dtype() == Dtype::Float64 && (index as u64) < array.len());
    // SAFETY: `index` is inside the array of f64s (checked above); read as an atomic u64 (the
    // same 8 aligned bytes), since another process writes it while we wait.
    let cell = unsafe { &*((array.as_ptr() as *const std::sync::atomic::AtomicU64).add(index)) };
    while cell.load(std::sync::atomic::Ordering::Acquire) == 0 {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}
