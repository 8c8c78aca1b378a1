//! A hostile plugin: the payload's `mode` picks how it misbehaves.
//!
//! Modes: `loop` (spins forever), `memory` (allocates until refused), `stack` (unbounded
//! recursion), `output` (emits forever), `log` (writes to stderr forever), `trap` (panics),
//! `table` (grows its function table), `wait-forever` (blocks on a host clock for an hour),
//! `wait-then-compute` (`wait_ms` on the host clock, then `work` rounds of pure computation),
//! `ok` (returns at once).
#![allow(clippy::unwrap_used, clippy::panic, clippy::print_stderr)]

use delegate_sdk::bindings::wasi::clocks::monotonic_clock;
use delegate_sdk::{PluginError, emit};
use std::hint::black_box;

struct Hostile;

fn spin(rounds: u64) -> u64 {
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    for i in 0..rounds {
        x = black_box(x.rotate_left(5) ^ i).wrapping_mul(0x2545_f491_4f6c_dd1d);
    }
    x
}

/// Recursion whose frames live on the wasm stack (no address-taken locals, so nothing goes
/// to the shadow stack in linear memory) and that the compiler cannot turn into a loop.
#[inline(never)]
fn recurse(depth: u64, limit: u64, acc: u64) -> u64 {
    if depth >= limit {
        return acc;
    }
    let below = recurse(depth + 1, limit, acc ^ depth);
    below.rotate_left((depth & 63) as u32) ^ acc
}

impl delegate_sdk::Guest for Hostile {
    fn invoke(payload: String) -> Result<String, PluginError> {
        let v: serde_json::Value = serde_json::from_str(&payload).unwrap_or_default();
        let mode = v.get("mode").and_then(|m| m.as_str()).unwrap_or("ok");
        match mode {
            "loop" => loop {
                black_box(spin(1_000_000));
            },
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![7u8; 1 << 20]);
                    black_box(&hoard);
                }
            }
            "stack" => {
                let limit = v.get("depth").and_then(serde_json::Value::as_u64).unwrap_or(u64::MAX);
                Ok(recurse(0, limit, 1).to_string())
            }
            "output" => {
                let chunk = "x".repeat(64 * 1024);
                loop {
                    emit(&chunk);
                }
            }
            "log" => {
                let line = "y".repeat(1024);
                loop {
                    eprintln!("{line}");
                }
            }
            "trap" => panic!("hostile plugin trapped on purpose"),
            "table" => {
                let mut fns: Vec<Box<dyn Fn() -> u64>> = Vec::new();
                loop {
                    let n = fns.len() as u64;
                    fns.push(Box::new(move || n));
                    black_box(&fns);
                }
            }
            "wait-forever" => {
                monotonic_clock::subscribe_duration(3_600 * 1_000_000_000).block();
                Ok("woke up".into())
            }
            "wait-then-compute" => {
                let wait_ms = v.get("wait_ms").and_then(serde_json::Value::as_u64).unwrap_or(0);
                let work = v.get("work").and_then(serde_json::Value::as_u64).unwrap_or(0);
                monotonic_clock::subscribe_duration(wait_ms * 1_000_000).block();
                Ok(spin(work).to_string())
            }
            "ok" => Ok("ok".into()),
            other => Err(PluginError::new("bad_request", format!("unknown mode {other}"))),
        }
    }
}

delegate_sdk::export!(Hostile);
