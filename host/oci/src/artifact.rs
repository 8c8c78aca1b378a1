//! The plugin artifact layout: an OCI image manifest whose config and first layer follow the
//! CNCF wasm OCI artifact convention (as wkg / wasm-pkg-tools write it), plus the delegate
//! plugin manifest (`plugin.toml`) as a second layer.
//!
//! ```text
//! manifest  application/vnd.oci.image.manifest.v1+json
//!   config  application/vnd.wasm.config.v0+json                 {"architecture":"wasm","os":"wasip2",...}
//!   layer   application/wasm                                    the component
//!   layer   application/vnd.delegate.plugin.manifest.v1+toml    plugin.toml (its `digest` pins the component)
//! ```

use crate::{Digest, OciError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Media type of the manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of the config blob (CNCF wasm OCI artifact).
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// Media type of the component layer (CNCF wasm OCI artifact).
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";
/// Media type of the delegate plugin manifest layer.
pub const PLUGIN_MANIFEST_MEDIA_TYPE: &str = "application/vnd.delegate.plugin.manifest.v1+toml";
/// The annotation ORAS and other tools use as a layer's file name.
const TITLE: &str = "org.opencontainers.image.title";

/// An OCI content descriptor.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The content's media type.
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Annotations (e.g. the file name).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An OCI image manifest (the fields delegate reads or writes; others are ignored).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// Always 2.
    pub schema_version: u32,
    /// [`MANIFEST_MEDIA_TYPE`] (optional in the spec, written by delegate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// The layers.
    pub layers: Vec<Descriptor>,
}

/// The config blob delegate writes (the wasm OCI artifact's `application/vnd.wasm.config.v0+json`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WasmConfig<'a> {
    created: String,
    architecture: &'a str,
    os: &'a str,
    layer_digests: Vec<&'a str>,
}

/// The blobs of a plugin artifact, ready to push: (descriptor, bytes) for the config and the
/// two layers, and the manifest bytes.
pub(crate) struct Built {
    pub blobs: Vec<(Descriptor, Vec<u8>)>,
    pub manifest: Vec<u8>,
}

fn descriptor(media_type: &str, bytes: &[u8], title: Option<&str>) -> Descriptor {
    Descriptor {
        media_type: media_type.to_owned(),
        digest: Digest::of(bytes).to_string(),
        size: bytes.len() as u64,
        annotations: title.map(|t| BTreeMap::from([(TITLE.to_owned(), t.to_owned())])).unwrap_or_default(),
    }
}

/// Lays out `component` and `plugin_toml` as a plugin artifact.
pub(crate) fn build(component: &[u8], plugin_toml: &str, created: std::time::SystemTime) -> Built {
    let wasm = descriptor(WASM_LAYER_MEDIA_TYPE, component, Some("plugin.wasm"));
    let toml = descriptor(PLUGIN_MANIFEST_MEDIA_TYPE, plugin_toml.as_bytes(), Some("plugin.toml"));
    let config = WasmConfig {
        created: rfc3339(created),
        architecture: "wasm",
        os: "wasip2",
        layer_digests: vec![&wasm.digest, &toml.digest],
    };
    let config_bytes = serde_json::to_vec(&config).unwrap_or_default();
    let config_desc = descriptor(WASM_CONFIG_MEDIA_TYPE, &config_bytes, None);
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(MANIFEST_MEDIA_TYPE.to_owned()),
        config: config_desc.clone(),
        layers: vec![wasm.clone(), toml.clone()],
    };
    let manifest = serde_json::to_vec(&manifest).unwrap_or_default();
    Built {
        blobs: vec![
            (config_desc, config_bytes),
            (wasm, component.to_vec()),
            (toml, plugin_toml.as_bytes().to_vec()),
        ],
        manifest,
    }
}

/// The descriptors a pull fetches, checked against the layout.
#[derive(Debug)]
pub(crate) struct Layout {
    pub config: (Digest, u64),
    pub component: (Digest, u64),
    pub plugin_manifest: (Digest, u64),
}

fn checked(d: &Descriptor, what: &str) -> Result<(Digest, u64), OciError> {
    let digest = Digest::parse(&d.digest).map_err(|m| OciError::InvalidArtifact(format!("{what}: {m}")))?;
    Ok((digest, d.size))
}

/// Parses manifest bytes (already verified against the pinned digest) and checks the layout:
/// the wasm config, exactly one component layer and exactly one plugin manifest layer, and
/// nothing else (an unknown layer could be something delegate would silently ignore).
pub(crate) fn layout(manifest: &[u8]) -> Result<Layout, OciError> {
    let bad = |m: String| OciError::InvalidArtifact(m);
    let m: ImageManifest = serde_json::from_slice(manifest)
        .map_err(|e| bad(format!("the manifest is not an OCI image manifest: {e}")))?;
    if m.schema_version != 2 {
        return Err(bad(format!("schemaVersion {} (expected 2)", m.schema_version)));
    }
    if let Some(t) = m.media_type.as_deref().filter(|t| *t != MANIFEST_MEDIA_TYPE) {
        return Err(bad(format!("manifest media type {t:?} (expected {MANIFEST_MEDIA_TYPE})")));
    }
    if m.config.media_type != WASM_CONFIG_MEDIA_TYPE {
        return Err(bad(format!(
            "config media type {:?} (expected {WASM_CONFIG_MEDIA_TYPE})",
            m.config.media_type
        )));
    }
    let pick = |media_type: &str| -> Result<&Descriptor, OciError> {
        let mut found = m.layers.iter().filter(|l| l.media_type == media_type);
        match (found.next(), found.next()) {
            (Some(l), None) => Ok(l),
            (None, _) => Err(bad(format!("no {media_type} layer"))),
            (Some(_), Some(_)) => Err(bad(format!("more than one {media_type} layer"))),
        }
    };
    let component = pick(WASM_LAYER_MEDIA_TYPE)?;
    let plugin_manifest = pick(PLUGIN_MANIFEST_MEDIA_TYPE)?;
    if let Some(other) = m
        .layers
        .iter()
        .find(|l| l.media_type != WASM_LAYER_MEDIA_TYPE && l.media_type != PLUGIN_MANIFEST_MEDIA_TYPE)
    {
        return Err(bad(format!("unexpected layer media type {:?}", other.media_type)));
    }
    Ok(Layout {
        config: checked(&m.config, "config")?,
        component: checked(component, "component layer")?,
        plugin_manifest: checked(plugin_manifest, "plugin manifest layer")?,
    })
}

/// `YYYY-MM-DDTHH:MM:SSZ` (UTC) for the config's `created`.
fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn created_is_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(1_796_428_799)), "2026-12-04T23:59:59Z");
    }

    #[test]
    fn a_built_artifact_has_the_wasm_layout_and_parses_back() {
        let built = build(b"\0asm component", "name = \"x\"\n", UNIX_EPOCH);
        let layout = layout(&built.manifest).unwrap();
        assert_eq!(layout.component.0, Digest::of(b"\0asm component"));
        assert_eq!(layout.plugin_manifest.0, Digest::of(b"name = \"x\"\n"));
        let v: serde_json::Value = serde_json::from_slice(&built.manifest).unwrap();
        assert_eq!(v["config"]["mediaType"], WASM_CONFIG_MEDIA_TYPE);
        assert_eq!(v["layers"][0]["mediaType"], WASM_LAYER_MEDIA_TYPE);
        assert_eq!(v["layers"][0]["annotations"][TITLE], "plugin.wasm");
        assert_eq!(v["layers"][1]["mediaType"], PLUGIN_MANIFEST_MEDIA_TYPE);
        let config: serde_json::Value = serde_json::from_slice(&built.blobs[0].1).unwrap();
        assert_eq!((config["architecture"].as_str(), config["os"].as_str()), (Some("wasm"), Some("wasip2")));
        assert_eq!(config["layerDigests"][0], layout.component.0.as_str());
        for (d, bytes) in &built.blobs {
            assert_eq!(d.digest, Digest::of(bytes).as_str());
            assert_eq!(d.size, bytes.len() as u64);
        }
    }

    #[test]
    fn the_same_inputs_and_time_build_the_same_manifest() {
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let (a, b) = (build(b"c", "t", at), build(b"c", "t", at));
        assert_eq!(a.manifest, b.manifest);
        assert_ne!(a.manifest, build(b"c", "t", at + Duration::from_secs(1)).manifest);
        assert_ne!(a.manifest, build(b"c", "u", at).manifest);
    }

    #[test]
    fn other_layouts_are_refused() {
        let good: serde_json::Value = serde_json::from_slice(&build(b"c", "t", UNIX_EPOCH).manifest).unwrap();
        let refuse = |edit: &dyn Fn(&mut serde_json::Value), needle: &str| {
            let mut m = good.clone();
            edit(&mut m);
            let e = layout(&serde_json::to_vec(&m).unwrap()).unwrap_err().to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        };
        refuse(&|m| m["schemaVersion"] = 1.into(), "schemaVersion");
        refuse(&|m| m["mediaType"] = "application/vnd.oci.image.index.v1+json".into(), "manifest media type");
        refuse(
            &|m| m["config"]["mediaType"] = "application/vnd.oci.image.config.v1+json".into(),
            "config media type",
        );
        refuse(&|m| m["layers"][1]["mediaType"] = WASM_LAYER_MEDIA_TYPE.into(), "more than one");
        refuse(
            &|m| {
                m["layers"].as_array_mut().unwrap().pop();
            },
            "no application/vnd.delegate",
        );
        refuse(
            &|m| {
                let first = m["layers"][0].clone();
                m["layers"].as_array_mut().unwrap().push(first);
            },
            "more than one",
        );
        refuse(
            &|m| {
                let mut extra = m["layers"][0].clone();
                extra["mediaType"] = "application/x-script".into();
                m["layers"].as_array_mut().unwrap().push(extra);
            },
            "unexpected layer",
        );
        refuse(&|m| m["layers"][0]["digest"] = "sha256:zz".into(), "component layer");
        assert!(layout(b"not json").is_err());
    }
}
