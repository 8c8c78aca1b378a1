//! A disk cache of compiled plugins, so a deploy, a rollback to an evicted version or a
//! restart does not pay for Cranelift again.
//!
//! An entry is keyed by the sha256 of the component's wasm bytes *and* a hash of everything
//! in the engine that affects compiled code (`Engine::precompile_compatibility_hash`: wasmtime
//! version, target, compiler flags, tunables). Another engine configuration, or another
//! wasmtime, simply misses.
//!
//! Loading compiled code is `unsafe` in wasmtime: the bytes are trusted to be what wasmtime
//! wrote. The cache keeps that promise by construction:
//! - only this process writes entries, atomically (temporary file + rename), mode 0600, in a
//!   directory that must not be group- or world-writable (checked when the cache is opened);
//! - each entry starts with the sha256 of the rest, checked before deserializing, so a torn
//!   or corrupted file is a miss (and is replaced), never loaded.
//!
//! Anyone who can write the cache directory as delegate's user can run native code in
//! delegate — exactly as anyone who can replace delegate's binary. Point `engine.cache_dir`
//! at a directory owned by delegate's user.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The compiled-plugin cache could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("plugin cache {}: {message}", path.display())]
pub struct CacheError {
    path: PathBuf,
    message: String,
}

/// A directory of compiled components for one engine configuration.
#[derive(Debug, Clone)]
pub(crate) struct ArtifactCache {
    dir: PathBuf,
    /// Hex of the engine's compatibility hash: part of every file name.
    engine_key: String,
}

/// `std::hash::Hasher` over sha256, so wasmtime's `impl Hash` compatibility value becomes a
/// stable, collision-resistant file-name component (std's `DefaultHasher` is not guaranteed
/// to be stable across Rust releases).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        // Unused: the full digest is taken with `finalize` instead.
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl ArtifactCache {
    /// Opens (creating if needed) the cache directory for `engine`.
    pub(crate) fn open(dir: &Path, engine: &Engine) -> Result<Self, CacheError> {
        let fail = |message: String| CacheError { path: dir.to_owned(), message };
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(dir).map_err(|e| fail(format!("cannot create it: {e}")))?;
        check_private(dir).map_err(fail)?;
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = hex::encode(&hasher.0.finalize()[..8]);
        Ok(Self { dir: dir.to_owned(), engine_key })
    }

    fn path_for(&self, wasm_sha256_hex: &str) -> PathBuf {
        self.dir.join(format!("{wasm_sha256_hex}-{}.cwasm", self.engine_key))
    }

    /// The cached compilation of the wasm whose sha256 is `wasm_sha256_hex`, if there is a
    /// valid one. Any problem (missing, unreadable, corrupt, incompatible) is a miss.
    pub(crate) fn load(&self, engine: &Engine, wasm_sha256_hex: &str) -> Option<Component> {
        let path = self.path_for(wasm_sha256_hex);
        let bytes = std::fs::read(&path).ok()?;
        if bytes.len() < 32 {
            tracing::warn!(path = %path.display(), "ignoring a truncated plugin cache entry");
            return None;
        }
        let (sum, artifact) = bytes.split_at(32);
        if Sha256::digest(artifact).as_slice() != sum {
            tracing::warn!(path = %path.display(), "ignoring a corrupted plugin cache entry");
            return None;
        }
        // SAFETY: `artifact` is exactly what `Component::serialize` produced in `store` below
        // (its sha256 matched the one written with it), in a directory only delegate's user
        // can write (checked in `open`); wasmtime itself checks that it was compiled by this
        // wasmtime with compatible settings and fails otherwise.
        #[allow(unsafe_code)]
        let loaded = unsafe { Component::deserialize(engine, artifact) };
        match loaded {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring an unusable plugin cache entry");
                None
            }
        }
    }

    /// Writes the compilation of `component` (atomically; failures are logged, not fatal:
    /// the cache is an optimisation).
    pub(crate) fn store(&self, wasm_sha256_hex: &str, component: &Component) {
        let path = self.path_for(wasm_sha256_hex);
        let result = component.serialize().map_err(|e| e.to_string()).and_then(|artifact| {
            let mut bytes = Vec::with_capacity(artifact.len() + 32);
            bytes.extend_from_slice(&Sha256::digest(&artifact));
            bytes.extend_from_slice(&artifact);
            write_atomically(&path, &bytes).map_err(|e| e.to_string())
        });
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the plugin cache entry");
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}

/// Refuses a cache directory that other users could write to.
fn check_private(dir: &Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(dir).map_err(|e| format!("cannot read it: {e}"))?;
        if !meta.is_dir() {
            return Err("is not a directory".into());
        }
        let mode = meta.permissions().mode();
        if mode & 0o022 != 0 {
            return Err(format!(
                "is writable by other users (mode {:o}); compiled code loaded from it runs natively, \
                 so it must be writable only by delegate's user (chmod 700)",
                mode & 0o777
            ));
        }
    }
    Ok(())
}
