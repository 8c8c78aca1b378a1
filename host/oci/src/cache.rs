//! Pulled blobs (manifests included) on disk, by digest, so a replica whose registry is down
//! keeps serving the digests it has pulled, also across a restart.
//!
//! Content-addressed and immutable: a file is named by the sha256 of its bytes and re-hashed
//! on every read, so a corrupted or edited file is a miss (it is removed and pulled again),
//! never used. Files are written atomically (temporary file + rename) with mode 0600, in a
//! directory that must not be group- or world-writable.

use crate::{Digest, OciError};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A directory of verified blobs.
#[derive(Debug, Clone)]
pub struct BlobCache {
    dir: PathBuf,
}

impl BlobCache {
    /// Opens `dir`, which is created (mode 0700) with the first blob stored: a host that never
    /// pulls leaves no trace in `engine.cache_dir`. An existing `dir` that is group- or
    /// world-writable is refused.
    pub fn open(dir: &Path) -> Result<Self, OciError> {
        let cache = Self { dir: dir.to_owned() };
        if dir.exists() {
            cache.check_private()?;
        }
        Ok(cache)
    }

    fn check_private(&self) -> Result<(), OciError> {
        let fail = |m: String| OciError::Cache(format!("{}: {m}", self.dir.display()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&self.dir).map_err(|e| fail(e.to_string()))?.permissions().mode();
            if mode & 0o022 != 0 {
                return Err(fail(format!(
                    "is group- or world-writable (mode {:o}); it must be writable by delegate's user only",
                    mode & 0o777
                )));
            }
        }
        Ok(())
    }

    fn create(&self) -> std::io::Result<()> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(&self.dir)?;
        self.check_private().map_err(|e| std::io::Error::other(e.to_string()))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_for(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
    }

    /// The cached bytes of `digest`, if present and intact. A file whose bytes do not hash to
    /// its name is removed and reported as a miss.
    pub fn get(&self, digest: &Digest) -> Option<Vec<u8>> {
        let path = self.path_for(digest);
        let bytes = std::fs::read(&path).ok()?;
        if digest.matches(&bytes) {
            return Some(bytes);
        }
        tracing::warn!(path = %path.display(), %digest, "removing a corrupted OCI cache entry");
        let _ = std::fs::remove_file(&path);
        None
    }

    /// Stores `bytes`, which the caller has verified to hash to `digest`. Failures are logged,
    /// not fatal: the cache only saves a pull.
    pub fn put(&self, digest: &Digest, bytes: &[u8]) {
        if let Err(e) = self.write(digest, bytes) {
            tracing::warn!(dir = %self.dir.display(), %digest, error = %e, "cannot write an OCI cache entry");
        }
    }

    fn write(&self, digest: &Digest, bytes: &[u8]) -> std::io::Result<()> {
        static N: AtomicU64 = AtomicU64::new(0);
        self.create()?;
        let path = self.path_for(digest);
        let tmp = self.dir.join(format!(
            ".{}.tmp-{}-{}",
            digest.hex(),
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let result = (|| {
            let mut file = options.open(&tmp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("delegate-oci-cache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn blobs_round_trip_private_and_a_tampered_file_is_a_miss() {
        let cache = BlobCache::open(&scratch("rt")).unwrap();
        let d = Digest::of(b"component bytes");
        assert_eq!(cache.get(&d), None);
        assert!(!cache.dir().exists(), "created with the first blob only");
        cache.put(&d, b"component bytes");
        assert_eq!(cache.get(&d).as_deref(), Some(&b"component bytes"[..]));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(cache.dir().join(d.hex())).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let mode = std::fs::metadata(cache.dir()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(cache.dir()).unwrap().count(), 1);
        std::fs::write(cache.dir().join(d.hex()), b"component bytez").unwrap();
        assert_eq!(cache.get(&d), None);
        assert!(!cache.dir().join(d.hex()).exists(), "the corrupted entry is removed");
    }

    #[cfg(unix)]
    #[test]
    fn a_world_writable_directory_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("ww");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = BlobCache::open(&dir).unwrap_err();
        assert!(e.to_string().contains("world-writable"), "{e}");
    }
}
