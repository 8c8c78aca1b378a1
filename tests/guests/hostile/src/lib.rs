//! A hostile plugin: the payload's `mode` picks how it misbehaves.
//!
//! Modes: `loop` (spins forever), `memory` (allocates until refused), `stack` (unbounded
//! recursion), `output` (emits forever), `log` (writes to stderr forever), `trap` (panics),
//! `table` (grows its function table), `wait-forever` (blocks on a host clock for an hour),
//! `wait-then-compute` (`wait_ms` on the host clock, then `work` rounds of pure computation),
//! `mark` (spreads a secret over `mib` MiB of its memory and a static), `scan` (grows its
//! memory to `mib` MiB and reports whether that secret is anywhere in it), `mark-and-scan`
//! (both in one instance: the control that proves the scan finds what is there), `ok`
//! (returns at once).
//!
//! Outbound HTTP (`url` is an allowed loopback URL the test controls):
//! - `flood`: up to `count` (default 5000) GETs of `url`, one after the other. By default it
//!   stops at the first failure and fails with `egress_refused` ("after N requests: ...");
//!   with `keep_going` it tries them all and returns `{"ok": N, "failed": M, "first_error"}`.
//! - `big-request`: POSTs a body of `kib` KiB in 4 KiB writes, then reports (as
//!   `egress_refused`) how much it could write and the error the response future gave.
//! - `big-response`: GETs `url` and reads the body; a cut body fails with `egress_refused`
//!   ("response cut after N bytes: <error code>"); a whole one returns its length.
//! - `slowloris`: POSTs, writes `kib` KiB (default 1) of the body, never finishes it and
//!   waits for the response (which cannot come before the body ends).
//! - `hold-body`: GETs `url`, takes the body stream without reading it, waits `wait_ms` on the
//!   host clock, then reads what it can; with `again` (a URL) it then makes one more request.
//!   Returns `{"read": bytes, "read_error", "again_status", "again_error"}`.
//! - `trap-mid-request`: starts a POST, writes 1 KiB of its body and panics with the request
//!   in flight. `trap-mid-response`: GETs `url`, reads the first chunk of a body that is still
//!   streaming, and panics.
//!
//! Model (the host's `model` interface):
//! - `model-flood`: up to `count` (default 1000) tiny model calls (`stream`: through
//!   `converse-stream`); the first error ends the invocation with the error's kind as its code
//!   (`budget_exceeded`, ...) and "call N: ..." as its message.
//! - `squeeze-then-model`: grows linear memory to `fill_mib` MiB (raw `memory.grow`, nothing
//!   allocated), then makes one model call whose (large) answer the host has to copy into the
//!   guest through `cabi_realloc`: the guest runs out of memory inside the host call's return
//!   path. (A guest cannot run, so cannot trap, *during* a host call in the synchronous
//!   component ABI: the host's allocation callback into the guest is the one place.)
//!
//! Giant values across the WIT boundary (`mib`, default 64):
//! - `emit-giant`: one `output.emit` of a `mib` MiB string.
//! - `result-giant`: returns a `mib` MiB string as the result.
//! - `error-giant`: fails with a `mib` MiB plugin-error message.
//! - `emit-invalid-utf8`: calls the raw core import behind `output.emit` with bytes that are
//!   not UTF-8 (a Rust `&str` cannot hold them; this is the lowest layer a guest can reach).
//!
//! The secret arrives XOR-ed with 0x5a (`secret_obf`, hex) and is only ever un-XOR-ed into
//! memory by `mark`: a scanning instance compares byte by byte in registers, so its own
//! payload never puts the plain secret in its memory.
#![allow(clippy::unwrap_used, clippy::panic, clippy::print_stderr)]
// Reading every byte of its own linear memory needs raw pointers; this is test code that
// plays an attacker, not plugin code anyone should copy.
#![allow(unsafe_code)]

mod boundary;
mod egress;

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

fn obfuscated_secret(v: &serde_json::Value) -> Vec<u8> {
    let hex = v.get("secret_obf").and_then(|s| s.as_str()).unwrap_or("");
    (0..hex.len() / 2).filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()).collect()
}

fn mib(v: &serde_json::Value) -> usize {
    usize::try_from(v.get("mib").and_then(serde_json::Value::as_u64).unwrap_or(4)).unwrap_or(4)
}

static MARKED: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

/// Writes the secret over `mib` MiB of heap (kept alive until the instance ends) and into a
/// static.
fn mark(obf: &[u8], mib: usize) -> usize {
    let secret: Vec<u8> = obf.iter().map(|b| b ^ 0x5a).collect();
    let mut heap = Vec::with_capacity(mib << 20);
    while heap.len() + secret.len() <= mib << 20 {
        heap.extend_from_slice(&secret);
    }
    *MARKED.lock().unwrap() = secret;
    let n = heap.len();
    // Leaked on purpose: the bytes stay in linear memory until the instance is gone.
    std::mem::forget(black_box(heap));
    n
}

/// Grows linear memory to at least `mib` MiB, then looks for the secret in every byte of it.
fn scan(obf: &[u8], mib: usize) -> (bool, usize) {
    use core::arch::wasm32::{memory_grow, memory_size};
    let want_pages = (mib << 20) / 65_536;
    let have = memory_size(0);
    if have < want_pages {
        memory_grow(0, want_pages - have);
    }
    let len = memory_size(0) * 65_536;
    let byte = |i: usize| -> u8 {
        // SAFETY: 1 <= i < len, inside this instance's linear memory (wasm has no unmapped
        // pages below memory_size); a volatile read so nothing is optimised away.
        unsafe { core::ptr::with_exposed_provenance::<u8>(i).read_volatile() }
    };
    if obf.is_empty() {
        return (false, len);
    }
    let found = (1..len.saturating_sub(obf.len()))
        .any(|i| obf.iter().enumerate().all(|(j, o)| byte(i + j) == o ^ 0x5a));
    (found, len)
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
            "mark" => Ok(mark(&obfuscated_secret(&v), mib(&v)).to_string()),
            "scan" => {
                let (found, scanned) = scan(&obfuscated_secret(&v), mib(&v));
                Ok(serde_json::json!({ "found": found, "scanned": scanned }).to_string())
            }
            "mark-and-scan" => {
                let obf = obfuscated_secret(&v);
                mark(&obf, mib(&v));
                let (found, scanned) = scan(&obf, mib(&v));
                Ok(serde_json::json!({ "found": found, "scanned": scanned }).to_string())
            }
            "flood" => egress::flood(&v),
            "big-request" => egress::big_request(&v),
            "big-response" => egress::big_response(&v),
            "slowloris" => egress::slowloris(&v),
            "hold-body" => egress::hold_body(&v),
            "trap-mid-request" => egress::trap_mid_request(&v),
            "trap-mid-response" => egress::trap_mid_response(&v),
            "model-flood" => boundary::model_flood(&v),
            "squeeze-then-model" => boundary::squeeze_then_model(&v),
            "emit-giant" => boundary::emit_giant(&v),
            "result-giant" => boundary::result_giant(&v),
            "error-giant" => boundary::error_giant(&v),
            "emit-invalid-utf8" => boundary::emit_invalid_utf8(),
            "ok" => Ok("ok".into()),
            other => Err(PluginError::new("bad_request", format!("unknown mode {other}"))),
        }
    }
}

delegate_sdk::export!(Hostile);
