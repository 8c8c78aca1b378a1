//! `delegate plugin check` and `delegate config check`.

use crate::Failure;
use delegate_config::Config;
use delegate_runtime::{Runtime, RuntimeOptions};
use std::path::Path;
use std::time::Duration;

#[allow(clippy::print_stdout)]
pub(crate) fn plugin(file: &Path) -> Result<(), Failure> {
    let bytes =
        std::fs::read(file).map_err(|e| Failure::usage(format!("cannot read {}: {e}", file.display())))?;
    let runtime = Runtime::new(&RuntimeOptions {
        epoch_tick: Duration::from_millis(10),
        pool_instances: 1,
        max_memory_bytes: 64 << 20,
        max_table_elements: 20_000,
        guest_debug: false,
        cache_dir: None,
        perf_map: false,
    })
    .map_err(Failure::failed)?;
    let report = runtime.inspect(&bytes).map_err(|e| Failure::failed(format!("{}: {e}", file.display())))?;
    // Written, not `println!`ed: a closed pipe (`delegate plugin check x.wasm | head`) ends the
    // output quietly instead of panicking.
    let mut out = String::new();
    out.push_str(&format!("{}: ok, fits delegate:agent@0.1.0\n", file.display()));
    out.push_str(&format!("digest:  {}\nsize:    {} bytes\nimports:\n", report.digest, report.size));
    for i in &report.imports {
        out.push_str(&format!("  {i}\n"));
    }
    out.push_str("exports:\n");
    for e in &report.exports {
        out.push_str(&format!("  {e}\n"));
    }
    use std::io::Write as _;
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    Ok(())
}

#[allow(clippy::print_stdout)]
pub(crate) fn config(file: &Path) -> Result<(), Failure> {
    let config = Config::load(file).map_err(|e| Failure::usage(format!("config error: {e}")))?;
    println!("{}: ok", file.display());
    println!("{config:#?}");
    Ok(())
}
