//! Which version of each plugin serves new invocations, swapped atomically.
//!
//! The registry is mechanism only: it does not decide whether a version may be deployed (the
//! operator's grants do that, before a [`Plugin`] exists). It holds, per plugin name from
//! the operator's config, the active [`Deployment`] and the previous one, in one immutable
//! map behind an [`ArcSwap`]. Readers (every invocation) take a snapshot without a lock;
//! writers (deploy, rollback, remove — rare, admin-only) are serialised by a mutex and
//! publish a new map. An invocation holds its own `Plugin` (an `Arc` of the compiled
//! component), so a swap never changes or drops the version an in-flight invocation started
//! with; the old version is freed when its last invocation ends.

use crate::Plugin;
use arc_swap::ArcSwap;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

/// How a deployed version's code was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompileInfo {
    /// Whether the compiled code came from the artifact cache (no Cranelift run).
    pub from_cache: bool,
    /// Time to compile or load it, and type-check it against the world.
    pub took: Duration,
}

/// One deployed version of a plugin.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// The loaded plugin (name, version, digest, limits, settings, model and egress access).
    pub plugin: Plugin,
    /// When it was deployed.
    pub deployed_at: SystemTime,
    /// How its code was obtained.
    pub compile: CompileInfo,
    /// The `oci://registry/repository@sha256:…` reference it was pulled from, when it was
    /// deployed by reference (config `source` or an admin deploy); `None` for an upload or a
    /// local file. Shown by the admin API so an operator can tell where a version came from.
    pub source: Option<String>,
}

/// The versions known for one plugin name.
#[derive(Debug, Clone, Default)]
pub struct Slot {
    /// The version new invocations get; `None` for an empty slot.
    pub active: Option<Deployment>,
    /// The version a rollback returns to.
    pub previous: Option<Deployment>,
}

/// A registry operation that cannot be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The operator's config has no plugin of that name.
    #[error("no plugin named `{0}` is configured")]
    UnknownPlugin(String),
    /// Rollback needs a previous version.
    #[error("plugin `{0}` has no previous version to roll back to")]
    NoPreviousVersion(String),
    /// The slot has no version deployed.
    #[error("plugin `{0}` has no version deployed")]
    NotDeployed(String),
    /// The default plugin serves requests that name none; it cannot be emptied.
    #[error("plugin `{0}` is the default plugin and cannot be removed")]
    DefaultPlugin(String),
}

/// The active and previous version of every configured plugin.
pub struct PluginRegistry {
    slots: ArcSwap<BTreeMap<String, Slot>>,
    default: String,
    writer: Mutex<()>,
}

impl std::fmt::Debug for PluginRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRegistry").field("default", &self.default).finish_non_exhaustive()
    }
}

/// What a rollback did.
#[derive(Debug, Clone)]
pub struct Rollback {
    /// The version that was active and is now the previous one.
    pub from: Deployment,
    /// The version that is active now.
    pub to: Deployment,
}

impl PluginRegistry {
    /// A registry with one empty slot per name; `default` must be one of them.
    pub fn new(names: impl IntoIterator<Item = String>, default: &str) -> Result<Self, RegistryError> {
        let slots: BTreeMap<String, Slot> = names.into_iter().map(|n| (n, Slot::default())).collect();
        if !slots.contains_key(default) {
            return Err(RegistryError::UnknownPlugin(default.to_owned()));
        }
        Ok(Self { slots: ArcSwap::from_pointee(slots), default: default.to_owned(), writer: Mutex::new(()) })
    }

    /// Name of the plugin used when a request names none.
    pub fn default_name(&self) -> &str {
        &self.default
    }

    /// The active version of `name`, if the plugin exists and has one. Lock-free.
    pub fn active(&self, name: &str) -> Option<Plugin> {
        self.slots.load().get(name).and_then(|s| s.active.as_ref()).map(|d| d.plugin.clone())
    }

    /// The active version of the default plugin.
    pub fn default_plugin(&self) -> Option<Plugin> {
        self.active(&self.default)
    }

    /// Whether the operator configured a plugin called `name`.
    pub fn is_configured(&self, name: &str) -> bool {
        self.slots.load().contains_key(name)
    }

    /// Every slot, by name.
    pub fn snapshot(&self) -> Arc<BTreeMap<String, Slot>> {
        self.slots.load_full()
    }

    fn update<T>(
        &self,
        name: &str,
        change: impl FnOnce(&mut Slot) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut slots = BTreeMap::clone(&self.slots.load());
        let slot = slots.get_mut(name).ok_or_else(|| RegistryError::UnknownPlugin(name.to_owned()))?;
        let out = change(slot)?;
        self.slots.store(Arc::new(slots));
        Ok(out)
    }

    /// Makes `deployment` the active version of its plugin; the active one becomes the
    /// previous one. Returns the version it replaced.
    pub fn activate(&self, deployment: Deployment) -> Result<Option<Deployment>, RegistryError> {
        let name = deployment.plugin.name().to_owned();
        self.update(&name, |slot| {
            let replaced = slot.active.replace(deployment);
            if replaced.is_some() {
                slot.previous.clone_from(&replaced);
            }
            Ok(replaced)
        })
    }

    /// Swaps the active and the previous version (so a second rollback undoes the first).
    pub fn rollback(&self, name: &str) -> Result<Rollback, RegistryError> {
        self.update(name, |slot| {
            let (Some(active), Some(previous)) = (slot.active.take(), slot.previous.take()) else {
                // Nothing changed: `update` publishes the map only on success.
                return Err(RegistryError::NoPreviousVersion(name.to_owned()));
            };
            slot.active = Some(previous.clone());
            slot.previous = Some(active.clone());
            Ok(Rollback { from: active, to: previous })
        })
    }

    /// Empties the slot of a non-default plugin: requests naming it are refused until a new
    /// version is deployed. In-flight invocations finish. Returns the removed active version.
    pub fn remove(&self, name: &str) -> Result<Deployment, RegistryError> {
        if name == self.default {
            if self.is_configured(name) {
                return Err(RegistryError::DefaultPlugin(name.to_owned()));
            }
            return Err(RegistryError::UnknownPlugin(name.to_owned()));
        }
        self.update(name, |slot| {
            let active = slot.active.take().ok_or_else(|| RegistryError::NotDeployed(name.to_owned()))?;
            slot.previous = None;
            Ok(active)
        })
    }
}

impl PluginRegistry {
    /// A registry whose only plugin, also the default, is `plugin` (tests, single-plugin
    /// embeddings).
    pub fn single(plugin: Plugin) -> Arc<Self> {
        let name = plugin.name().to_owned();
        let registry = Self {
            slots: ArcSwap::from_pointee(BTreeMap::from([(
                name.clone(),
                Slot {
                    active: Some(Deployment {
                        plugin,
                        deployed_at: SystemTime::now(),
                        compile: CompileInfo { from_cache: false, took: Duration::ZERO },
                        source: None,
                    }),
                    previous: None,
                },
            )])),
            default: name,
            writer: Mutex::new(()),
        };
        Arc::new(registry)
    }
}
