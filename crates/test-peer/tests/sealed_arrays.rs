//! Shared arrays in sealed memory (`Backing::Memfd`, Linux), across real processes
//! (`shmpipe-array-peer`): reachable by name while any process holds them, freed (memory and
//! name) with their last holder, and after a SIGKILL of every holder the memory is freed and the
//! record left is removed by `clean`, by the next sweep, or by a new array of the same name.
#![cfg(target_os = "linux")]

use shmpipe_core::inventory::{self, CleanOptions};
use shmpipe_core::{Backing, Dtype, Error, SharedArray, ARRAY_NAME_PREFIX};
use std::time::{Duration, Instant};

mod common;
use common::memory::shmem_kib;

use common::peer::{shm_exists, Peer};

fn array_peer(args: &[&str]) -> Peer {
    Peer::run_program(env!("CARGO_BIN_EXE_shmpipe-array-peer"), args)
}

fn fresh_name(tag: &str) -> String {
    format!("{tag}{:08x}", rand::random::<u32>())
}

/// Waits up to 10 s for `Shmem:` to come back within `slack_kib` of `baseline`; returns the
/// last reading. (The machine is shared: other processes' segments come and go meanwhile.)
fn shmem_back_to(baseline: u64, slack_kib: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = shmem_kib();
        if now <= baseline + slack_kib || Instant::now() >= deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sets element `index` of the float64 array `name` to 1 through a short-lived peer: the signal
/// the `create-sealed` (0) and `write-and-hold` (1) roles wait for.
fn signal(name: &str, index: u32) {
    let mut w = array_peer(&["write", name, &index.to_string(), "1"]);
    assert_eq!(w.line(), "ok");
    w.wait_success();
}

const MIB: u64 = 1024;

/// Held by each test: a sealed creation sweeps every record nobody holds, so the tests of this
/// file, which leave such records on purpose, run one at a time.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn a_sealed_array_outlives_its_creator_while_held_and_goes_with_its_last_holder() {
    let _serial = one_at_a_time();
    const LEN: u64 = 32 << 20; // 256 MiB of f64s
    let name = fresh_name("seal");
    let segment = format!("{ARRAY_NAME_PREFIX}{name}");
    let baseline = shmem_kib();
    let mut creator = array_peer(&["create-sealed", &name, &LEN.to_string()]);
    assert_eq!(creator.line(), "created");
    let reserved = shmem_kib().saturating_sub(baseline);
    assert!(
        reserved >= 200 * MIB,
        "the 256 MiB array's pages are reserved at creation (Shmem +{reserved} KiB)"
    );
    let mut writer = array_peer(&["write-and-hold", &name, "30000000", "7.5"]);
    assert_eq!(writer.line(), "ok");
    signal(&name, 0); // the creator exits normally
    creator.wait_success();
    assert!(
        shm_exists(&segment),
        "the name stays while the writer holds it"
    );
    let mut reader = array_peer(&["read", &name, "30000000"]);
    assert_eq!(reader.line(), "7.5", "attached after its creator exited");
    reader.wait_success();
    signal(&name, 1); // the last holder exits normally
    writer.wait_success();
    assert!(!shm_exists(&segment), "the name goes with the last holder");
    assert!(matches!(
        SharedArray::open(&name),
        Err(Error::NotFound { .. })
    ));
    let after = shmem_back_to(baseline, 32 * MIB);
    assert!(
        after <= baseline + 32 * MIB,
        "the memory is freed: Shmem {baseline} KiB before, {after} KiB after"
    );
}

#[test]
fn sigkill_of_every_holder_frees_the_memory_and_clean_removes_the_record() {
    let _serial = one_at_a_time();
    const LEN: u64 = 8 << 20; // 64 MiB
    let name = fresh_name("sealk");
    let segment = format!("{ARRAY_NAME_PREFIX}{name}");
    let baseline = shmem_kib();
    let mut creator = array_peer(&["create-sealed", &name, &LEN.to_string()]);
    assert_eq!(creator.line(), "created");
    let mut writer = array_peer(&["write-and-hold", &name, "5", "2.5"]);
    assert_eq!(writer.line(), "ok");
    assert!(shmem_kib() >= baseline + 48 * MIB, "the memory is reserved");
    creator.kill();
    writer.kill();
    let after = shmem_back_to(baseline, 16 * MIB);
    assert!(
        after <= baseline + 16 * MIB,
        "SIGKILL of every holder frees the memory: Shmem {baseline} KiB before, {after} after"
    );
    assert!(
        shm_exists(&segment),
        "a killed last holder leaves its record"
    );
    assert!(matches!(
        SharedArray::open(&name),
        Err(Error::NotFound { .. })
    ));
    let report = inventory::clean(&CleanOptions {
        only: Some(vec![segment.clone()]),
        ..CleanOptions::default()
    })
    .unwrap();
    assert_eq!(
        report
            .removed
            .iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>(),
        [segment.as_str()]
    );
    assert!(!shm_exists(&segment), "clean removed the record");
}

#[test]
fn the_next_sealed_array_creation_sweeps_records_left_by_killed_holders() {
    let _serial = one_at_a_time();
    let left = fresh_name("sealw");
    let left_segment = format!("{ARRAY_NAME_PREFIX}{left}");
    let mut creator = array_peer(&["create-sealed", &left, "2"]);
    assert_eq!(creator.line(), "created");
    creator.kill();
    assert!(
        shm_exists(&left_segment),
        "a killed last holder leaves its record"
    );
    // Another process's first sealed array creation sweeps it.
    let other = fresh_name("sealo");
    let mut sweeper = array_peer(&["create-sealed", &other, "2"]);
    assert_eq!(sweeper.line(), "created");
    assert!(!shm_exists(&left_segment), "swept by the next creation");
    signal(&other, 0);
    sweeper.wait_success();
    assert!(!shm_exists(&format!("{ARRAY_NAME_PREFIX}{other}")));
}

#[test]
fn a_record_left_by_killed_holders_does_not_keep_its_name_from_a_new_sealed_array() {
    let _serial = one_at_a_time();
    let name = fresh_name("sealn");
    let segment = format!("{ARRAY_NAME_PREFIX}{name}");
    let mut creator = array_peer(&["create-sealed", &name, "2"]);
    assert_eq!(creator.line(), "created");
    // A sealed creation here first, so that this process's sweep has just run (it runs at most
    // once a second) and the record below is left to the creation of its own name.
    let throwaway =
        SharedArray::create_in(&fresh_name("sealt"), Dtype::Uint8, &[1], Backing::Memfd).unwrap();
    drop(throwaway);
    creator.kill();
    assert!(shm_exists(&segment));
    let again = SharedArray::create_in(&name, Dtype::Float64, &[2], Backing::Memfd).unwrap();
    assert_eq!(again.backing(), Backing::Memfd);
    // A held array of the name is never replaced, whatever the backing asked.
    assert!(matches!(
        SharedArray::create_in(&name, Dtype::Float64, &[2], Backing::Memfd),
        Err(Error::AlreadyExists { .. })
    ));
    assert!(matches!(
        SharedArray::create(&name, Dtype::Float64, &[2]),
        Err(Error::AlreadyExists { .. })
    ));
    drop(again);
    assert!(!shm_exists(&segment), "the name goes with its only holder");
}
